"""Write the seed corpus (test samples: hostile and benign pickles, torch archives) to fuzz/corpus/."""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.corpus import ALL, write  # noqa: E402


def main() -> None:
    out = ROOT / "fuzz" / "corpus"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for sample in ALL:
            try:
                data = write(sample, Path(tmp), Path(tmp) / "canary").read_bytes()
            except ImportError:
                continue
            (out / hashlib.sha1(data).hexdigest()).write_bytes(data)
    print(f"seeds in {out}")


if __name__ == "__main__":
    main()
