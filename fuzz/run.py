"""Coverage-guided fuzzing with atheris: ``python fuzz/run.py TARGET [atheris/libFuzzer flags]``.

TARGET is one of fuzz/targets.py's TARGETS. The seed corpus is written to fuzz/corpus/ by
``python fuzz/seeds.py``. Any exception other than ScanError (or any exception at all from ``scan``) is
a crash that libFuzzer reports with the input that caused it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import atheris

with atheris.instrument_imports():
    from targets import TARGETS

    from picklewarden import ScanError


def main() -> None:
    name = sys.argv.pop(1) if len(sys.argv) > 1 else "scan"
    target = TARGETS[name]

    def one_input(data: bytes) -> None:
        try:
            target(data)
        except ScanError:
            if name == "scan":
                raise

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
