"""picklewarden's parallel scan as one command, for the benchmark (until the CLI has ``--jobs``).

python benchmarks/pw_parallel.py PATH... [--jobs N]
Writes one JSON line per file to stdout; exit status 1 when a file is suspicious or malicious.
"""

from __future__ import annotations

import argparse
import sys

from picklewarden.model import Report
from picklewarden.parallel import render_jsonl, scan_parallel


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--jobs", type=int, default=None)
    args = parser.parse_args()
    reports = []
    for report in scan_parallel(args.paths, jobs=args.jobs):
        sys.stdout.write(render_jsonl(report) + "\n")
        reports.append(report)
    return Report(tuple(reports)).exit_code()


if __name__ == "__main__":
    sys.exit(main())
