"""Benchmark picklewarden against the floor and installed peers, in one run, as ratios.

    python benchmarks/make_files.py /tmp/pw-bench
    python benchmarks/run.py /tmp/pw-bench [--repeat 5] [--peers /opt/peers] [--markdown docs/benchmarks.md]

Four tables, all measured in the same run:

1. Per file: whole-process wall time and peak RSS (median of --repeat runs) of the floor (benchmarks/floor.py:
   start Python, read the pickle members, walk them with pickletools.genops), ``picklewarden scan``, and
   every peer found (picklescan, modelscan, fickling, modelaudit: in --peers/<name>/bin/ or on PATH). For
   directories also picklewarden's parallel scan (benchmarks/pw_parallel.py, every CPU). Ratios: picklewarden
   / floor (target <= 1.5) and picklewarden / the fastest peer (target < 1).
2. Pickle ladder, in process: analysis of the data.pkl stream (layout pass + machine + rules) against a bare
   ``pickletools.genops`` walk of the same bytes (target <= 2).
3. Start-up: ``picklewarden --version`` and a scan of a tiny pickle against
   ``python -c "import zipfile, pickletools"`` (target <= 2).
4. Bytes read per checkpoint (benchmarks/bytes_read.py; --bytes to include it, it is slow).

Peers that exit with their error status, or print a traceback or "failed to parse", are marked ``!``
(they did not analyse the file; their time is not a comparison). A run longer than --timeout seconds is
cut and shown as ``>T``.
"""

from __future__ import annotations

import argparse
import os
import pickletools
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
_ERROR_STATUS = {"picklescan": {2}, "modelscan": {2, 3, 4}, "fickling": {2}, "modelaudit": {2}}
"""Exit statuses meaning "could not scan" (1 usually means "found something")."""
_FAILURE_TEXT = ("Traceback (most recent call last)", "failed to parse")
"""Output that shows a tool did not analyse the file (fickling reads neither ZIP checkpoints nor directories)."""
_OUTPUT_PEEK = 64 * 1024
_QUIET_ENV = {"PROMPTFOO_DISABLE_TELEMETRY": "1", "NO_ANALYTICS": "1"}
"""modelaudit otherwise spends seconds retrying to upload telemetry from an offline machine."""


@dataclass(frozen=True)
class Run:
    wall: float
    rss_mib: float
    failed: bool
    timed_out: bool

    def cell(self, timeout: float) -> str:
        if self.timed_out:
            return f">{timeout:.0f} / -"
        return f"{self.wall:.3f}{' !' if self.failed else ''} / {self.rss_mib:.0f}"


def measure(cmd: list[str], repeat: int, timeout: float, errors: set[int] = frozenset()) -> Run:  # type: ignore[assignment]
    """Median wall seconds and median peak RSS (MiB) of a command run ``repeat`` times."""
    walls, rss = [], []
    failed = False
    env = {**os.environ, **_QUIET_ENV}
    for attempt in range(repeat):
        # The first run's output is kept to recognise a tool that did not analyse the file.
        output = tempfile.TemporaryFile() if attempt == 0 else None
        sink = output if output is not None else subprocess.DEVNULL
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=sink, stderr=sink, env=env)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                return Run(timeout, 0.0, True, True)
            time.sleep(0.002)
        walls.append(time.perf_counter() - started)
        rss.append(usage.ru_maxrss / 1024)
        failed = failed or os.waitstatus_to_exitcode(status) in errors
        if output is not None:
            # Only the ends: a peer may print hundreds of megabytes, and this process's peak RSS is
            # inherited by the next child it starts (Linux keeps ru_maxrss across fork and exec).
            size = output.seek(0, os.SEEK_END)
            output.seek(0)
            text = output.read(_OUTPUT_PEEK).decode("utf-8", "replace")
            output.seek(max(0, size - _OUTPUT_PEEK))
            text += output.read(_OUTPUT_PEEK).decode("utf-8", "replace")
            output.close()
            failed = failed or any(marker in text for marker in _FAILURE_TEXT)
    return Run(statistics.median(walls), statistics.median(rss), failed, False)


def tools(peers: Path) -> dict[str, list[str]]:
    def find(name: str) -> str | None:
        local = peers / name / "bin" / name
        return str(local) if local.exists() else shutil.which(name)

    found: dict[str, list[str]] = {
        "floor": [sys.executable, str(HERE / "floor.py")],
        "picklewarden": [sys.executable, "-m", "picklewarden", "scan", "--format", "json", "-o", os.devnull],
    }
    peer_args = {"picklescan": ["-p"], "modelscan": ["-p"], "fickling": ["--check-safety"], "modelaudit": ["scan"]}
    for name, args in peer_args.items():
        exe = find(name)
        if exe:
            found[name] = [exe, *args]
    return found


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def file_table(files: list[Path], commands: dict[str, list[str]], repeat: int, timeout: float) -> list[str]:
    names = list(commands)
    peers = [n for n in names if n not in ("floor", "picklewarden")]
    lines = [
        "| file | MiB | "
        + " | ".join(f"{n} s / MiB" for n in names)
        + " | parallel s | pw ÷ floor | pw ÷ fastest peer |",
        "|---|---|" + "---|" * len(names) + "---|---|---|",
    ]
    for path in files:
        runs = {
            name: measure([*commands[name], str(path)], repeat, timeout, _ERROR_STATUS.get(name, set()))
            for name in names
        }
        parallel = "-"
        if path.is_dir():
            run = measure([sys.executable, str(HERE / "pw_parallel.py"), str(path)], repeat, timeout)
            parallel = f"{run.wall:.3f}"
            best_pw = min(run.wall, runs["picklewarden"].wall)
        else:
            best_pw = runs["picklewarden"].wall
        valid = [runs[p].wall for p in peers if not runs[p].failed]
        versus_peer = f"{best_pw / min(valid):.2f}" if valid else "-"
        cells = " | ".join(runs[n].cell(timeout) for n in names)
        lines.append(
            f"| {path.name} | {_size(path) / 2**20:.1f} | {cells} | {parallel} | "
            f"{best_pw / runs['floor'].wall:.2f} | {versus_peer} |"
        )
        print(lines[-1], flush=True)
    return lines


def _pickle_of(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))


def _median(repeat: int, func: object) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def ladder_table(files: list[Path], repeat: int) -> list[str]:
    """In process: the analysis of each state dict's pickle against a bare genops walk of it."""
    from picklewarden.limits import DEFAULT_LIMITS
    from picklewarden.pickle.layout import scan_layout
    from picklewarden.pickle.machine import run_pickle
    from picklewarden.rules import ProgramJudge
    from picklewarden.scanner import _plain_result, analyse_path

    def genops(data: bytes) -> None:
        for _ in pickletools.genops(data):
            pass

    def analyse(data: bytes) -> None:
        program, _ = run_pickle(data, 0, DEFAULT_LIMITS, plain=_plain_result, file_like=False)
        list(ProgramJudge(program, DEFAULT_LIMITS).findings())

    lines = [
        "| file | pickle MiB | opcodes | genops s | layout pass s | analysis s | analysis ÷ genops | whole file s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in files:
        data = _pickle_of(path)
        layout = scan_layout(data, 0, DEFAULT_LIMITS)
        walk = _median(repeat, lambda d=data: genops(d))
        lay = _median(repeat, lambda d=data: scan_layout(d, 0, DEFAULT_LIMITS))
        whole = _median(repeat, lambda d=data: analyse(d))
        full = _median(max(1, repeat // 2), lambda p=path: analyse_path(str(p)))
        lines.append(
            f"| {path.name} | {len(data) / 2**20:.1f} | {layout.opcodes} | {walk:.3f} | {lay:.3f} | {whole:.3f} | "
            f"{whole / walk:.2f} | {full:.3f} |"
        )
        print(lines[-1], flush=True)
    return lines


def startup_table(tiny: Path, repeat: int, timeout: float) -> list[str]:
    base = measure([sys.executable, "-c", "import zipfile, pickletools"], repeat, timeout)
    version = measure([sys.executable, "-m", "picklewarden", "--version"], repeat, timeout)
    scan = measure([sys.executable, "-m", "picklewarden", "scan", str(tiny)], repeat, timeout)
    return [
        "| command | s | ÷ baseline |",
        "|---|---|---|",
        f'| `python -c "import zipfile, pickletools"` | {base.wall:.3f} | 1.00 |',
        f"| `picklewarden --version` | {version.wall:.3f} | {version.wall / base.wall:.2f} |",
        f"| `picklewarden scan {tiny.name}` | {scan.wall:.3f} | {scan.wall / base.wall:.2f} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before one run is cut")
    parser.add_argument("--peers", type=Path, default=Path(os.environ.get("PICKLEWARDEN_PEERS", "/opt/peers")))
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--only", default="", help="comma-separated substrings of file names to run")
    parser.add_argument("--bytes", action="store_true", help="also measure bytes read per checkpoint (slow)")
    args = parser.parse_args()
    commands = tools(args.peers)
    files = sorted(p for p in args.directory.iterdir() if p.is_file() or p.name == "small-models")
    if args.only:
        files = [f for f in files if any(o in f.name for o in args.only.split(","))]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; median of {args.repeat} runs; load average at start {load:.1f}.",
        "",
        "### Per file (whole process)",
        "",
        *file_table(files, commands, args.repeat, args.timeout),
        "",
        "### Pickle ladder (in process)",
        "",
        *ladder_table([f for f in files if f.name.startswith("tensors-")], args.repeat),
    ]
    tiny = next((f for f in files if f.name == "tiny.pkl"), None)
    if tiny is not None:
        lines += ["", "### Start-up", "", *startup_table(tiny, args.repeat, args.timeout)]
    if args.bytes:
        from bytes_read import measure as bytes_measure

        lines += ["", "### Bytes read", "", "| file | budget KiB | sliced KiB | disk KiB | disk, no read-ahead KiB |"]
        lines.append("|---|---|---|---|---|")
        for path in files:
            if path.suffix == ".pt":
                m = bytes_measure(str(path))
                lines.append(
                    f"| {path.name} | {m.budget >> 10} | {m.sliced >> 10} | {(m.disk or 0) >> 10} | "
                    f"{(m.random or 0) >> 10} |"
                )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
