"""Write a harmless malicious pickle (it would run `echo picklewarden-sample` when loaded) for a demo scan.

The bytes are assembled by hand so nothing is executed or imported to make them.
"""

from __future__ import annotations

import sys


def sample() -> bytes:
    command = b"echo picklewarden-sample"
    return (
        b"\x80\x02"  # PROTO 2
        + b"cos\nsystem\n"  # GLOBAL os.system
        + b"X"
        + len(command).to_bytes(4, "little")
        + command  # BINUNICODE
        + b"\x85"  # TUPLE1
        + b"R"  # REDUCE: os.system(command)
        + b"."  # STOP
    )


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sample.pkl"
    with open(target, "wb") as handle:
        handle.write(sample())
    print(f"wrote {target}")
