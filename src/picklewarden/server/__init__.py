"""The scanning gateway (``picklewarden serve``): a Hugging Face pull-through proxy that scans every file
before serving its first byte, a REST API, and evidence pages.

Layers, each importing only the ones before it: :mod:`.config` (what the operator chose), :mod:`.storage`
(results behind one small interface, SQLite or PostgreSQL), :mod:`.blobs` (the content-addressed file
cache), :mod:`.judge` (the library's scanner, run on a cached file), :mod:`.upstream` (the hub, over httpx),
:mod:`.gateway` (fetch once, verify, judge once, decide), and the web layer on top (:mod:`.proxy`,
:mod:`.api`, :mod:`.pages`, assembled by :mod:`.app`). Needs the ``server`` extra.
"""

from __future__ import annotations
