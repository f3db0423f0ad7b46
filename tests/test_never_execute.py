"""Proof that scanning never executes or imports anything a file names.

A subprocess warms picklewarden up (so its own lazy imports are done), then installs three checks and
scans the whole malicious corpus, in-process and through the CLI's worker processes:
- an audit hook that fails on any process start, code compilation or execution, import, socket
  connection or file opened for writing;
- guards on the ways a name is resolved for real even when its module is already loaded (and so raises no
  import event): ``builtins.__import__`` called other than by an import statement of picklewarden's own code
  (this is how the C unpickler's ``find_class`` imports), ``importlib.import_module`` and
  ``pickle._Unpickler.find_class``;
- no module the scan did not already have may appear in ``sys.modules``.
Each check has a negative control: a real load, and scanners patched to resolve names for real.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import container_samples
from tests.corpus import MALICIOUS, write

_HARNESS = textwrap.dedent(
    """
    import ast, builtins, dis, importlib, io, json, os, pickle, sys, types

    mode, patch, warm, log_path, *paths = sys.argv[1:]
    # Opened before any hook: workers forked later inherit the descriptor and append to it, and os.write
    # raises no audit event of its own.
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def violation(kind, detail):
        os.write(log_fd, (json.dumps([os.getpid(), kind, str(detail)[:200]]) + "\\n").encode())

    import picklewarden
    from picklewarden.cli import main
    from picklewarden.pickle import machine
    from picklewarden.policy.config import DEFAULT_POLICY
    from picklewarden.filescan import scan
    import picklewarden.pickle.decompile  # imported on first use, by a finding's evidence: benign files need none

    PACKAGE = os.path.dirname(picklewarden.__file__)
    POOL = os.path.dirname(os.path.dirname(importlib.__file__)) + os.sep + "multiprocessing" + os.sep

    # Negative controls: scanners patched to resolve names for real (the result is dropped, never called).
    # The patch is compiled as part of machine.py, as a patched scanner's own code would be.
    PATCHES = {
        "c-find-class": "real = lambda module, name: pickle.Unpickler(io.BytesIO(b'')).find_class(module, name)",
        "py-find-class": (
            "def real(module, name):\\n"
            "    unpickler = pickle._Unpickler(io.BytesIO(b''))\\n"
            "    unpickler.proto = 4\\n"
            "    return unpickler.find_class(module, name)"
        ),
        "import-module": "real = lambda module, name: importlib.import_module(module)",
    }
    if patch in PATCHES:
        source = PATCHES[patch] + (
            "\\noriginal = _Recorder.find_class\\n"
            "def patched(self, module, name):\\n"
            "    try:\\n"
            "        real(module, name)\\n"
            "    except Exception:\\n"
            "        pass\\n"
            "    return original(self, module, name)\\n"
            "_Recorder.find_class = patched\\n"
        )
        namespace = {"pickle": pickle, "io": io, "importlib": importlib, "_Recorder": machine.Recorder}
        exec(compile(source, sys.modules[machine.Recorder.__module__].__file__, "exec"), namespace)

    def run(targets, warming=False):
        if mode == "cli":  # the CLI's worker processes
            return main(["scan", "--jobs", "2", "--format", "jsonl", "--no-policy", *targets])
        report = scan(targets)
        if not warming:
            print("VERDICTS", json.dumps([f.verdict.label for f in report.files]))
        return 0

    if mode != "control":
        # Import everything picklewarden itself needs (its readers import some stdlib modules on first
        # use), from benign files of every container kind, through the same path, before the hooks go in.
        scan([warm], policy=DEFAULT_POLICY)  # in this process too: the CLI's workers are forked from it
        run([warm], warming=True)

    # 1. Audit events: processes, code, imports of modules not yet loaded, sockets, files opened to write.
    BLOCKED = ("os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.forkpty", "subprocess.Popen",
               "pty.spawn", "socket.connect", "socket.getaddrinfo", "ctypes.dlopen", "exec", "compile", "import",
               "builtins.input", "webbrowser.open", "shutil.rmtree", "os.remove", "os.rename")

    def from_pool():
        frame = sys._getframe(2)
        while frame is not None:
            if "multiprocessing" in frame.f_code.co_filename or "concurrent" in frame.f_code.co_filename:
                return True
            frame = frame.f_back
        return False

    def only_parsed():
        # ast.parse compiles to a syntax tree only (the npy header, TorchScript and FX code reviews): no code
        # object exists, nothing can run. Any other compile is a violation.
        frame = sys._getframe(2)
        return frame.f_code.co_filename == ast.__file__ and frame.f_code.co_name == "parse"

    def hook(event, args):
        if event == "compile" and only_parsed():
            return
        if event in BLOCKED or (event == "open" and _writes(args)) or (event == "os.fork" and not from_pool()):
            violation(event, repr(args))

    def _writes(args):
        mode, flags = (args[1] or "r"), (args[2] or 0)
        return any(c in str(mode) for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)

    # 2. Name resolution of modules already loaded raises no audit event: the C unpickler's find_class,
    # pickle._Unpickler.find_class and importlib all end in builtins.__import__ or import_module. picklewarden's
    # own code may import only with an import statement (IMPORT_NAME), never by a computed name.
    IMPORT_NAME = dis.opmap["IMPORT_NAME"]
    real_import, real_import_module = builtins.__import__, importlib.import_module
    real_py_find_class = pickle._Unpickler.find_class

    def under_package(depth):
        frame = sys._getframe(depth + 1)
        while frame is not None:
            if frame.f_code.co_filename.startswith(PACKAGE):
                return True
            frame = frame.f_back
        return False

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        caller = sys._getframe(1)
        # An import statement, or importlib completing one ("from package import submodule").
        statement = caller.f_code.co_code[caller.f_lasti] == IMPORT_NAME
        statement = statement or caller.f_code.co_filename == "<frozen importlib._bootstrap>"
        # The process pool unpickling its own tasks and results (picklewarden's, never the scanned file's).
        statement = statement or caller.f_code.co_filename.startswith(POOL)
        if not statement and under_package(1):
            where = f"{caller.f_code.co_filename}:{caller.f_code.co_name}"
            violation("import-by-name", f"{name} from {where} ({dis.opname[caller.f_code.co_code[caller.f_lasti]]})")
        return real_import(name, globals, locals, fromlist, level)

    def guarded_import_module(name, package=None):
        if under_package(1):
            violation("importlib.import_module", name)
        return real_import_module(name, package)

    def guarded_py_find_class(self, module, name):
        violation("pickle._Unpickler.find_class", f"{module}.{name}")
        return real_py_find_class(self, module, name)

    before = set(sys.modules)
    sys.addaudithook(hook)
    builtins.__import__ = guarded_import
    importlib.import_module = guarded_import_module
    pickle._Unpickler.find_class = guarded_py_find_class

    if mode == "control":  # prove the hooks see a real load
        try:
            pickle.load(open(paths[0], "rb"))
        except Exception:
            pass
        code = 0
    else:
        print("BEGIN")
        code = run(paths)
    # 3. Whatever the route, a module a scanned file names must not have been loaded by the scan.
    for name in sorted(set(sys.modules) - before):
        violation("new-module", name)
    print("PID", os.getpid())
    print("EXIT", code)
    """
)


def _harness(mode: str, patch: str, warm: Path, log: Path, paths: list[Path], cwd: Path) -> tuple[str, list[list[str]]]:
    done = subprocess.run(
        [sys.executable, "-c", _HARNESS, mode, patch, str(warm), str(log), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    violations = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done.stdout, violations


@dataclass
class _Corpus:
    root: Path
    warm: Path
    paths: list[Path]
    canary: Path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> _Corpus:
    tmp_path = tmp_path_factory.mktemp("never-execute")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    canary = tmp_path / "canary"
    paths = [write(s, corpus, canary) for s in MALICIOUS]
    containers = corpus / "containers"
    containers.mkdir()
    paths += [container_samples.write(c, containers, canary) for c in container_samples.MALICIOUS]
    warm = tmp_path / "warm"
    warm.mkdir()
    (warm / "a.pkl").write_bytes(b"\x80\x04K\x01.")
    (warm / "b.pt").write_bytes(paths[0].read_bytes())
    for p in paths:  # a torch archive too
        if p.read_bytes()[:2] == b"PK":
            (warm / "c.pt").write_bytes(p.read_bytes())
            break
    for case in container_samples.BENIGN:  # and one benign file of every other container kind
        container_samples.write(case, warm, canary)
    return _Corpus(tmp_path, warm, paths, canary)


def test_scanning_the_malicious_corpus_executes_and_imports_nothing(corpus: _Corpus, tmp_path: Path) -> None:
    assert len(corpus.paths) >= 10
    stdout, violations = _harness("scan", "none", corpus.warm, tmp_path / "log", corpus.paths, tmp_path)
    assert violations == []
    verdicts = json.loads(stdout.split("BEGIN\nVERDICTS", 1)[1].split("\n", 1)[0])
    assert "safe" not in verdicts and len(verdicts) == len(corpus.paths)
    assert not corpus.canary.exists()
    assert sorted(p.name for p in corpus.root.iterdir()) == ["corpus", "warm"]


def test_the_cli_worker_processes_execute_and_import_nothing(corpus: _Corpus, tmp_path: Path) -> None:
    stdout, violations = _harness("cli", "none", corpus.warm, tmp_path / "log", corpus.paths, tmp_path)
    assert violations == []
    assert "EXIT 1" in stdout
    after = stdout.split("BEGIN\n", 1)[1]
    lines = [json.loads(line) for line in after.splitlines() if line.startswith("{")]
    assert len(lines) == len(corpus.paths) and all(line["verdict"] != "safe" for line in lines)
    assert not corpus.canary.exists()


def test_the_hooks_do_catch_a_real_load(tmp_path: Path) -> None:
    """Negative control: the same hooks flag pickle.load of a sample, so the tests above can fail."""
    sample = next(s for s in MALICIOUS if s.loader == "pickle" and not s.needs_torch)
    path = write(sample, tmp_path, tmp_path / "canary")
    _, violations = _harness("control", "none", tmp_path, tmp_path / "log", [path], tmp_path)
    assert violations


@pytest.mark.parametrize("patch", ["c-find-class", "py-find-class", "import-module"])
@pytest.mark.parametrize("mode", ["scan", "cli"])
def test_a_scanner_that_resolves_names_for_real_is_caught(
    corpus: _Corpus, tmp_path: Path, mode: str, patch: str
) -> None:
    """Negative controls: a scanner that looks names up with the real machinery, even for modules already
    loaded and without calling what it finds, fails the proof, in-process and in the CLI's workers."""
    stdout, violations = _harness(mode, patch, corpus.warm, tmp_path / "log", corpus.paths, tmp_path)
    kinds = {kind for _, kind, _ in violations}
    assert kinds & {"import-by-name", "importlib.import_module", "pickle._Unpickler.find_class"}, violations
    if mode == "cli":  # caught inside the forked workers, not only in the parent
        parent = int(stdout.split("PID ", 1)[1].split()[0])
        assert {pid for pid, _, _ in violations} - {parent}
