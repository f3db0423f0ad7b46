"""The physical floor: start Python, read the pickle members (or the file), walk them with genops.

python benchmarks/floor.py FILE_OR_DIR
"""

from __future__ import annotations

import os
import pickletools
import sys
import zipfile


def walk(data: bytes, pickles: int = 1) -> None:
    """Walk up to ``pickles`` pickles back to back (legacy torch files hold five before raw data)."""
    pos = 0
    for _ in range(pickles):
        if pos >= len(data):
            return
        for opcode, _, at in pickletools.genops(data[pos:]):
            if opcode.name == "STOP":
                pos += at + 1
                break


def floor(path: str) -> None:
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic == b"PK\x03\x04":
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(".pkl"):
                    walk(archive.read(name))
    else:
        with open(path, "rb") as handle:
            head = handle.read(64 << 20)
        try:
            walk(head, pickles=5 if head[:2] == b"\x80\x02" and head[2:3] == b"\x8a" else 1)
        except Exception:  # noqa: BLE001 - the floor only measures the walk
            pass


if __name__ == "__main__":
    target = sys.argv[1]
    if os.path.isdir(target):
        for root, _, files in os.walk(target):
            for name in files:
                floor(os.path.join(root, name))
    else:
        floor(target)
