"""Proof that scanning never executes or imports anything a file names.

A subprocess warms picklewarden up (so its own lazy imports are done), installs an audit hook that fails
on any process start, code compilation or execution, import, socket connection or file opened for
writing, then scans the whole malicious corpus. Any such event, or a canary file, fails the test.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

from tests import container_samples
from tests.corpus import MALICIOUS, write

_HARNESS = textwrap.dedent(
    """
    import os, sys
    import picklewarden
    from picklewarden.scanner import scan

    warm = sys.argv[1]
    if warm != "--control":
        # Import everything picklewarden itself needs (its readers import some stdlib modules on first
        # use), from benign files of every container kind, before the hook goes in.
        scan([warm])

    violations = []
    BLOCKED = ("os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty", "subprocess.Popen",
               "pty.spawn", "socket.connect", "socket.getaddrinfo", "ctypes.dlopen", "exec", "compile", "import",
               "builtins.input", "webbrowser.open", "shutil.rmtree", "os.remove", "os.rename")

    def hook(event, args):
        if event in BLOCKED or (event == "open" and _writes(args)):
            violations.append((event, repr(args)[:200]))

    def _writes(args):
        mode, flags = (args[1] or "r"), (args[2] or 0)
        return any(c in str(mode) for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)

    sys.addaudithook(hook)
    if warm == "--control":  # prove the hook sees a real load (negative control)
        import pickle
        try:
            pickle.load(open(sys.argv[2], "rb"))
        except Exception:
            pass
        print("VIOLATIONS", violations)
        sys.exit(1 if violations else 0)
    report = scan(sys.argv[2:])
    print("VERDICTS", [f.verdict.label for f in report.files])
    print("VIOLATIONS", violations)
    sys.exit(1 if violations else 0)
    """
)


def test_scanning_the_malicious_corpus_executes_and_imports_nothing(tmp_path: Path) -> None:
    have_torch = importlib.util.find_spec("torch") is not None
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    canary = tmp_path / "canary"
    paths = [write(s, corpus, canary) for s in MALICIOUS if have_torch or not s.needs_torch]
    assert len(paths) >= 10
    containers = corpus / "containers"
    containers.mkdir()
    usable = [c for c in container_samples.MALICIOUS if all(importlib.util.find_spec(m) for m in c.needs)]
    paths += [container_samples.write(c, containers, canary) for c in usable]
    warm = tmp_path / "warm"
    warm.mkdir()
    (warm / "a.pkl").write_bytes(b"\x80\x04K\x01.")
    (warm / "b.pt").write_bytes(paths[0].read_bytes())
    for p in paths:  # a torch archive too
        if p.read_bytes()[:2] == b"PK":
            (warm / "c.pt").write_bytes(p.read_bytes())
            break
    for case in container_samples.BENIGN:  # and one benign file of every other container kind
        if all(importlib.util.find_spec(m) for m in case.needs):
            container_samples.write(case, warm, canary)
    done = subprocess.run(
        [sys.executable, "-c", _HARNESS, str(warm), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VIOLATIONS []" in done.stdout
    verdicts = done.stdout.split("VERDICTS", 1)[1].split("\n", 1)[0]
    assert "'safe'" not in verdicts and verdicts.count("'") // 2 == len(paths)
    assert not canary.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "warm"]


def test_the_audit_hook_does_catch_a_real_load(tmp_path: Path) -> None:
    """Negative control: the same hook flags pickle.load of a sample, so the test above can fail."""
    sample = next(s for s in MALICIOUS if s.loader == "pickle" and not s.needs_torch)
    canary = tmp_path / "canary"
    path = write(sample, tmp_path, canary)
    done = subprocess.run(
        [sys.executable, "-c", _HARNESS, "--control", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "VIOLATIONS [" in done.stdout and "VIOLATIONS []" not in done.stdout
