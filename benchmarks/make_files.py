"""Generate the benchmark inputs (needs torch and numpy; run on demand, never in CI).

python benchmarks/make_files.py DIR [--sizes 10M,100M,1G,4G] [--tensors 1000,10000,100000,500000]
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
from pathlib import Path

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _size(text: str) -> int:
    return int(float(text[:-1]) * _UNITS[text[-1].upper()]) if text[-1].upper() in _UNITS else int(text)


def size_ladder(out: Path, sizes: list[str]) -> None:
    import torch

    for label in sizes:
        n = _size(label) // 4
        chunk = 1 << 26
        tensors = {f"block{i}": torch.zeros(min(chunk, n - i * chunk)) for i in range((n + chunk - 1) // chunk)}
        torch.save(tensors, out / f"size-{label}-zip.pt")
        torch.save(tensors, out / f"size-{label}-legacy.pt", _use_new_zipfile_serialization=False)


def pickle_ladder(out: Path, counts: list[int]) -> None:
    import torch

    for count in counts:
        state = {f"layer{i}.weight": torch.zeros(2) for i in range(count)}
        torch.save(state, out / f"tensors-{count}.pt")


def plain_pickle(out: Path, megabytes: int = 50) -> None:
    rng = random.Random(0)
    data: list[object] = []
    size = 0
    while size < megabytes << 20:
        item = {
            "id": rng.randrange(1 << 30),
            "name": f"item{rng.random()}",
            "tags": [rng.random() for _ in range(8)],
            "nested": {"a": (1, 2.5, None), "b": [str(rng.random())] * 3},
        }
        data.append(item)
        size += 200
    (out / f"plain-{megabytes}MB.pkl").write_bytes(pickle.dumps(data, protocol=4))


def tiny_pickle(out: Path) -> None:
    """A tiny benign pickle: the start-up row of the benchmark."""
    (out / "tiny.pkl").write_bytes(pickle.dumps({"a": [1, 2.5, "x"], "b": (None, True)}, protocol=4))


def tiny_checkpoint(out: Path) -> None:
    """A tiny torch checkpoint: the start-up row for the format users scan most."""
    import torch

    torch.save({"w": torch.zeros(2)}, out / "tiny.pt")


def small_models(out: Path, count: int = 1000) -> None:
    import torch

    directory = out / "small-models"
    directory.mkdir(exist_ok=True)
    for i in range(count):
        torch.save({"w": torch.zeros(12_000), "step": i}, directory / f"model-{i:04d}.pt")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("--sizes", default="10M,100M,1G,4G")
    parser.add_argument("--tensors", default="1000,10000,100000,500000")
    parser.add_argument("--small", type=int, default=1000)
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    size_ladder(args.directory, [s for s in args.sizes.split(",") if s])
    pickle_ladder(args.directory, [int(c) for c in args.tensors.split(",") if c])
    plain_pickle(args.directory)
    tiny_pickle(args.directory)
    tiny_checkpoint(args.directory)
    small_models(args.directory, args.small)
    total = sum(f.stat().st_size for f in args.directory.rglob("*") if f.is_file())
    print(f"benchmark files in {args.directory} ({total >> 20} MiB)")
    os.sync()


if __name__ == "__main__":
    main()
