"""The byte containers every reader accepts: whole files are mmaps, members are bytes."""

from __future__ import annotations

import mmap

Buffer = bytes | bytearray | memoryview | mmap.mmap
