#!/usr/bin/env python3
"""Generate ``src/picklewarden/knowledge/data/generated.json``: reviewed knowledge about globals.

Run by hand at development time, never by the scanner::

    python scripts/gen_knowledge.py                      # writes src/picklewarden/knowledge/data/
    python scripts/gen_knowledge.py --output-dir /tmp/kb  # generated.json and generated_sinks.json

It imports every module of the standard library, numpy and torch (``pkgutil`` walk, ``__main__`` modules
judged from their source first) in a sandboxed child process (``knowledge_gen/sandbox.py``), and introspects
them *statically*:
module dictionaries, class ``__dict__``s along the MRO, closure cells and bytecode. No function that is
inspected is ever called (the only calls are constructors of sample objects chosen here, which are pickled
so that the globals their pickles reference can be listed). Three sections come out:

``springboards``
    For every stdlib/numpy/torch module, each attribute whose value is a module (``shutil.os``), keyed by
    the module's real ``__name__`` and mapped to the target's ``__name__``. The scanner uses these to
    canonicalise dotted names such as ``("torch", "serialization.os.system")`` without importing.
``safe``
    Globals that everyday checkpoints reference, found by pickling sample objects made here (with
    ``pickletools.genops`` over our own pickles) plus torch's ``weights_only`` allowlist, torch layer,
    optimizer and scheduler classes, and torch dtype-like constants.
``sinks``
    Functions, classes and methods that reach a process, code, import, deserialization, network, file or
    tampering sink, found by a fixed point over the whole call graph of bytecode references (no depth limit),
    plus the native sinks of the reviewed table ``knowledge_gen/native.py`` under every name that reaches
    them, and a few indirection primitives. Each reason names the root sink and the call path.
``closed``, ``import_failures``, ``import_effects``
    The closed world: the top-level names whose every module was imported and walked (a callable there
    that is no sink reaches none), the modules that failed to import (they stay unknown) and the modules
    whose import itself runs a program.

The output is deterministic for a given interpreter and package set: everything is sorted, and path
choices are tie-broken by name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compact_knowledge
from knowledge_gen import sandbox
from knowledge_gen.generate import render

DATA = Path(__file__).resolve().parent.parent / "src" / "picklewarden" / "knowledge" / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--output-dir", "-o", type=Path, default=DATA, help="where generated.json and generated_sinks.json go"
    )
    args = parser.parse_args(argv)
    text, sinks = render(sandbox.run("generate", timeout=7200))
    (args.output_dir / "generated.json").write_text(text, encoding="utf-8")
    (args.output_dir / "generated_sinks.json").write_text(sinks, encoding="utf-8")
    compact_knowledge.write(args.output_dir)  # the parts the scanner reads, derived from generated.json
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
