"""The pre-commit hook, for real: ``pre-commit try-repo`` installs this repository and runs the hook.

The hook repository is a temporary git copy of the package sources and ``.pre-commit-hooks.yaml`` (so the
test sees the working tree, committed or not); the target is a temporary git repository with model files.
``language: python`` makes pre-commit build a virtualenv and ``pip install`` the hook repository, with pip's
own configuration of this machine (its index, mirrors and constraints), as a user's pre-commit would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.asm import Asm

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    subprocess.run([sys.executable, "-m", "pre_commit", "--version"], capture_output=True).returncode != 0,
    reason="pre-commit is not installed",
)

EVIL = Asm(2).global_("os", "system").text("id").tuple1().reduce().stop().bytes()
OWN_CLASS = Asm(2).global_("acme_models.nn", "Block").empty_tuple().newobj().stop().bytes()
GOOD = Asm(2).empty_dict().text("w").binint1(1).setitem().stop().bytes()


def _git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("hook")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True
    )
    # Every file of the working tree (committed or not), so the hook installs exactly what is being tested.
    names = [n for n in listed.stdout.decode().split("\0") if n] if listed.returncode == 0 else []
    if not names:  # not a git checkout: the files the package build needs
        names = ["pyproject.toml", "README.md", ".pre-commit-hooks.yaml"]
        names += [
            str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*") if p.is_file() and "__pycache__" not in p.parts
        ]
    for name in names:
        source = ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "hook")
    return repo


def _try_repo(hook: Path, target: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRE_COMMIT")}
    env["PRE_COMMIT_HOME"] = str(home)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    command = [sys.executable, "-m", "pre_commit", "try-repo", str(hook), "picklewarden", "--all-files"]
    return subprocess.run(command, cwd=target, env=env, capture_output=True, text=True, timeout=900)


def _target(path: Path, files: dict[str, bytes | str]) -> Path:
    path.mkdir()
    for name, content in files.items():
        file = path / name
        file.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            file.write_bytes(content)
        else:
            file.write_text(content)
    _git(path, "init", "-q")
    _git(path, "add", "-A")
    return path


def test_hook_blocks_a_malicious_model_and_passes_clean_ones(hook_repo: Path, tmp_path: Path) -> None:
    bad = _target(
        tmp_path / "bad",
        {"models/evil.pt": EVIL, "models/weights.pkl": GOOD, "notes.bin": b"\x00not a model", "x.txt": "hi"},
    )
    done = _try_repo(hook_repo, bad, tmp_path / "home")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "models/evil.pt: MALICIOUS" in done.stdout and "PW100" in done.stdout
    assert "weights.pkl: SAFE" not in done.stdout  # the hook runs with --quiet
    assert "1 skipped" in done.stdout  # notes.bin matched the file pattern but is not a model

    good = _target(tmp_path / "good", {"models/weights.pkl": GOOD, "notes.bin": b"\x00not a model"})
    done = _try_repo(hook_repo, good, tmp_path / "home")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Passed" in done.stdout


def test_hook_uses_the_repository_policy(hook_repo: Path, tmp_path: Path) -> None:
    files: dict[str, bytes | str] = {"checkpoints/model.pt": OWN_CLASS}
    untrusted = _try_repo(hook_repo, _target(tmp_path / "untrusted", files), tmp_path / "home")
    assert untrusted.returncode == 1 and "SUSPICIOUS" in untrusted.stdout, untrusted.stdout + untrusted.stderr
    files["pyproject.toml"] = '[project]\nname = "acme"\n\n[tool.picklewarden]\ntrust = ["acme_models"]\n'
    trusted = _try_repo(hook_repo, _target(tmp_path / "trusted", files), tmp_path / "home")
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
