"""The compiled core against the pure-Python reference, in one process (paired, alternating runs).

python benchmarks/cores.py FILE.pt [--repeat 7]

For a PyTorch ZIP checkpoint: the layout pass over its data.pkl and the directory pass (open_torch_zip),
each timed with the C core and with the reference in alternation, so that machine load hits both alike.
Prints the median of each and their ratio. Exact comparisons: run under ``valgrind --tool=callgrind``.
"""

from __future__ import annotations

import argparse
import mmap
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from picklewarden import DEFAULT_LIMITS, _native
from picklewarden.containers.torchzip import open_torch_zip, read_entry
from picklewarden.pickle.layout import scan_layout


def paired(work: Callable[[], object], repeat: int) -> tuple[float, float]:
    compiled = _native.speedups
    if compiled is None:
        raise SystemExit("the C core is not built (pip install -e .) or PICKLEWARDEN_PURE_PYTHON is set")
    times: dict[bool, list[float]] = {True: [], False: []}
    try:
        for _ in range(repeat):
            for use_c in (True, False):
                _native.speedups = compiled if use_c else None
                began = time.perf_counter()
                work()
                times[use_c].append(time.perf_counter() - began)
    finally:
        _native.speedups = compiled
    return statistics.median(times[True]), statistics.median(times[False])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with args.file.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        archive = open_torch_zip(data, DEFAULT_LIMITS)
        entry = archive.record("data.pkl")
        assert entry is not None, "not a torch.save checkpoint"
        pickle_bytes, _ = read_entry(data, entry, DEFAULT_LIMITS)
        rows = {
            "layout pass": paired(lambda: scan_layout(pickle_bytes, 0, DEFAULT_LIMITS), args.repeat),
            "directory (open_torch_zip)": paired(lambda: open_torch_zip(data, DEFAULT_LIMITS), args.repeat),
        }
    print(f"| {args.file.name} | C s | Python s | Python / C |")
    print("|---|---|---|---|")
    for name, (c_time, py_time) in rows.items():
        print(f"| {name} | {c_time:.3f} | {py_time:.3f} | {py_time / c_time:.1f} |")


if __name__ == "__main__":
    main()
