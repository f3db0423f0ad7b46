"""Benchmark picklewarden against the floor and installed peers, in one run, as ratios.

    python benchmarks/make_files.py /tmp/pw-bench
    python benchmarks/run.py /tmp/pw-bench [--repeat 5] [--peers /opt/peers] [--markdown docs/benchmarks.md]

Five tables, all measured in the same run:

1. Per file: whole-process wall time and peak RSS (median of --repeat rounds) of the floor (benchmarks/floor.py:
   start Python, read the pickle members, walk them with pickletools.genops), ``picklewarden scan``, and
   every peer found (picklescan, modelscan, fickling, modelaudit: in --peers/<name>/bin/ or on PATH). Each
   round runs every tool once, in turn, so that machine load falls on all of them alike. For directories
   picklewarden runs with its default workers (every CPU) and also with ``--jobs 1``. Ratios: picklewarden
   / floor (target <= 1.5) and picklewarden / the fastest peer (target <= 1).
2. Pickle ladder, in process: analysis of the data.pkl stream (layout pass + machine + rules) against a bare
   ``pickletools.genops`` walk of the same bytes.
3. Start-up: ``picklewarden --version`` and scans of a tiny pickle and a tiny checkpoint against
   ``python -c "import zipfile, pickletools"`` (target <= 1.5).
4. The gateway's cost per file in a warm process: ``server.judge.judge_file`` (the scan and the evidence
   listing the gateway stores), after one warm-up call, median of --repeat calls.
5. Bytes read per checkpoint (benchmarks/bytes_read.py; --bytes to include it, it is slow).

Peers that exit with their error status, or print a traceback or "failed to parse", are marked ``!``
(they did not analyse the file; their time is not a comparison). A run longer than --timeout seconds is
cut and shown as ``>T``. With --markdown FILE the tables replace the text between the ``<!-- run:begin -->``
and ``<!-- run:end -->`` markers of FILE (the whole file when it has none), with the date of the run.
"""

from __future__ import annotations

import argparse
import datetime
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
_ERROR_STATUS = {"picklescan": {2}, "modelscan": {2, 3, 4}, "fickling": {2}, "modelaudit": {2}}
"""Exit statuses meaning "could not scan" (1 usually means "found something")."""
_FAILURE_TEXT = ("Traceback (most recent call last)", "failed to parse")
"""Output that shows a tool did not analyse the file (fickling reads neither ZIP checkpoints nor directories)."""
_OUTPUT_PEEK = 64 * 1024
_QUIET_ENV = {"PROMPTFOO_DISABLE_TELEMETRY": "1", "NO_ANALYTICS": "1"}
_SCRATCH = tempfile.mkdtemp(prefix="pw-bench-cwd-")
"""Where the tools run: some write result files into their working directory (fickling's safety_results.json)."""
"""modelaudit otherwise spends seconds retrying to upload telemetry from an offline machine.
(PYTHONDONTWRITEBYTECODE is also dropped: an installed tool has its bytecode, and without it every run
would compile the tool from source.)"""


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


def run_once(cmd: list[str], timeout: float, errors: frozenset[int] = frozenset(), peek: bool = False) -> Run:
    """Wall seconds and peak RSS (MiB) of one run of ``cmd``; ``peek`` keeps its output to recognise a tool
    that did not analyse the file."""
    env = {k: v for k, v in {**os.environ, **_QUIET_ENV}.items() if k != "PYTHONDONTWRITEBYTECODE"}
    output = tempfile.TemporaryFile() if peek else None
    sink = output if output is not None else subprocess.DEVNULL
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=sink, stderr=sink, env=env, cwd=_SCRATCH)
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
    wall = time.perf_counter() - started
    failed = os.waitstatus_to_exitcode(status) in errors
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
    return Run(wall, usage.ru_maxrss / 1024, failed, False)


def paired(commands: dict[str, list[str]], repeat: int, timeout: float) -> dict[str, Run]:
    """Median of ``repeat`` rounds, each running every command once in turn (the order rotates by round),
    so that load from other work on the machine falls on every tool alike. A tool cut by the timeout is
    not run again."""
    names = list(commands)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    for round_ in range(repeat):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            if runs[name] and runs[name][0].timed_out:
                continue
            errors = frozenset(_ERROR_STATUS.get(name, ()))
            runs[name].append(run_once(commands[name], timeout, errors, peek=not runs[name]))
    out = {}
    for name, done in runs.items():
        if done[0].timed_out:
            out[name] = done[0]
        else:
            walls = statistics.median(r.wall for r in done)
            rss = statistics.median(r.rss_mib for r in done)
            out[name] = Run(walls, rss, any(r.failed for r in done), False)
    return out


def _pw_script() -> str:
    """The installed console script, as users run it (``python -m`` pays the runpy set-up on top)."""
    script = Path(sys.executable).with_name("picklewarden")
    return str(script) if script.exists() else shutil.which("picklewarden") or "picklewarden"


def tools(peers: Path) -> dict[str, list[str]]:
    def find(name: str) -> str | None:
        local = peers / name / "bin" / name
        return str(local) if local.exists() else shutil.which(name)

    found: dict[str, list[str]] = {
        "floor": [sys.executable, str(HERE / "floor.py")],
        "picklewarden": [_pw_script(), "scan", "--format", "json", "-o", os.devnull],
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
        + " | pw --jobs 1 s | pw ÷ floor | pw ÷ fastest peer |",
        "|---|---|" + "---|" * len(names) + "---|---|---|",
    ]
    for path in files:
        round_commands = {name: [*commands[name], str(path)] for name in names}
        if path.is_dir():
            round_commands["sequential"] = [*commands["picklewarden"], "--jobs", "1", str(path)]
        runs = paired(round_commands, repeat, timeout)
        sequential = runs.pop("sequential", None)
        best_pw = runs["picklewarden"].wall if sequential is None else min(sequential.wall, runs["picklewarden"].wall)
        valid = [runs[p].wall for p in peers if not runs[p].failed]
        versus_peer = f"{best_pw / min(valid):.2f}" if valid else "-"
        cells = " | ".join(runs[n].cell(timeout) for n in names)
        seq = "-" if sequential is None else f"{sequential.wall:.3f}"
        lines.append(
            f"| {path.name} | {_size(path) / 2**20:.1f} | {cells} | {seq} | "
            f"{best_pw / runs['floor'].wall:.2f} | {versus_peer} |"
        )
        print(lines[-1], flush=True)
    return lines


def _pickle_of(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))


def _median(repeat: int, func: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
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


def startup_table(tiny: list[Path], repeat: int, timeout: float) -> list[str]:
    pw = _pw_script()
    commands = {
        "base": [sys.executable, "-c", "import zipfile, pickletools"],
        "version": [pw, "--version"],
        **{f"scan {path.name}": [pw, "scan", "--format", "json", "-o", os.devnull, str(path)] for path in tiny},
    }
    runs = paired(commands, repeat, timeout)
    base = runs["base"].wall
    shown = {"base": 'python -c "import zipfile, pickletools"', "version": "picklewarden --version"}
    lines = ["| command | s | ÷ baseline |", "|---|---|---|"]
    for name, run in runs.items():
        lines.append(
            f"| `{shown.get(name, f'picklewarden {name} --format json')}` | {run.wall:.3f} | {run.wall / base:.2f} |"
        )
    return lines


def gateway_table(files: list[Path], repeat: int) -> list[str]:
    """What the gateway pays per new file once its process is warm: scan plus the evidence listing."""
    from picklewarden.limits import DEFAULT_LIMITS
    from picklewarden.policy.config import Policy
    from picklewarden.server.judge import judge_file

    policy = Policy()
    lines = ["| file | MiB | verdict | s per file |", "|---|---|---|---|"]
    for path in files:
        judgement = judge_file(path, path.name, policy, DEFAULT_LIMITS)  # warm-up (imports, tables)
        seconds = _median(repeat, lambda p=path: judge_file(p, p.name, policy, DEFAULT_LIMITS))
        lines.append(f"| {path.name} | {_size(path) / 2**20:.1f} | {judgement.verdict} | {seconds:.3f} |")
        print(lines[-1], flush=True)
    return lines


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
    files = sorted(p for p in args.directory.resolve().iterdir() if p.is_file() or p.name == "small-models")
    if args.only:
        files = [f for f in files if any(o in f.name for o in args.only.split(","))]
    smallest = min((f for f in files if f.is_file()), key=_size, default=None)
    for command in commands.values():  # one unmeasured run each: bytecode written, caches warm
        if smallest is not None:
            run_once([*command, str(smallest)], args.timeout)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    from picklewarden._native import core_name

    lines = [
        f"Run of {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()} {platform.release()}; "
        f"picklewarden with the {core_name()}; median of {args.repeat} paired rounds; "
        f"load average at start {load:.1f}.",
        "",
        "### Per file (whole process)",
        "",
        *file_table(files, commands, args.repeat, args.timeout),
        "",
        "### Pickle ladder (in process)",
        "",
        *ladder_table([f for f in files if f.name.startswith("tensors-")], args.repeat),
    ]
    tiny = [f for f in files if f.name.startswith("tiny.")]
    if tiny:
        lines += ["", "### Start-up (whole process)", "", *startup_table(tiny, args.repeat, args.timeout)]
    lines += [
        "",
        "### Gateway, per new file in a warm process",
        "",
        *gateway_table([f for f in files if f.is_file()], args.repeat),
    ]
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
        args.markdown.write_text(splice(args.markdown.read_text() if args.markdown.exists() else "", text))


BEGIN, END = "<!-- run:begin -->", "<!-- run:end -->"


def splice(document: str, run: str) -> str:
    """``document`` with the text between its run markers replaced by ``run`` (all of it without markers)."""
    if BEGIN not in document or END not in document:
        return run
    head, rest = document.split(BEGIN, 1)
    return f"{head}{BEGIN}\n{run}{END}{rest.split(END, 1)[1]}"


if __name__ == "__main__":
    main()
