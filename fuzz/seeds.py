"""Write the seed corpus (test samples: hostile and benign pickles, torch archives, and every other container
kind the tests build: npy/npz, joblib, tar, TorchScript, compressed streams, and the files several loaders
read differently: polyglots, odd headers, damaged ZIPs) to fuzz/corpus/."""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import container_samples, loader_view_samples  # noqa: E402
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
        for case in container_samples.ALL + loader_view_samples.ALL:
            try:
                data = container_samples.write(case, Path(tmp), Path(tmp) / "canary").read_bytes()
            except Exception:  # noqa: BLE001 - a sample whose library is not installed is skipped
                continue
            (out / hashlib.sha1(data).hexdigest()).write_bytes(data)
    print(f"seeds in {out}")


if __name__ == "__main__":
    main()
