"""The composite GitHub Action (``action.yml``): its scripts run here the way a runner runs them.

GitHub itself is not reachable from tests, so the ``uses:`` steps (setup-python, upload-sarif) are only
checked for shape; the ``run:`` steps are executed with ``bash -eo pipefail`` and the action's inputs as
environment variables, exactly as the runner would, against the installed ``picklewarden``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.asm import Asm

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
EVIL = Asm(2).global_("os", "system").text("id").tuple1().reduce().stop().bytes()
GOOD = Asm(2).empty_dict().stop().bytes()


@pytest.fixture(scope="module")
def action() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "action.yml").read_text())
    return loaded


def _step(action: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in action["runs"]["steps"] if s.get("id") == step_id or s.get("name") == step_id)


def _run(script: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, dict[str, str]]:
    output = cwd / "github_output"
    output.write_text("")
    bindir = str(Path(sys.executable).parent)
    full_env = {**os.environ, **env, "GITHUB_OUTPUT": str(output), "PATH": bindir + os.pathsep + os.environ["PATH"]}
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    return done.returncode, done.stdout + done.stderr, outputs


def _inputs(action: dict[str, Any], **given: str) -> dict[str, str]:
    values = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    values.update({k.replace("_", "-"): v for k, v in given.items()})
    scan = _step(action, "scan")
    env: dict[str, str] = {}
    for key, expression in scan["env"].items():
        name = expression.strip("${} ").removeprefix("inputs.")
        env[key] = values[name]
    return env


def test_shape(action: dict[str, Any]) -> None:
    assert action["runs"]["using"] == "composite"
    uses = [s["uses"] for s in action["runs"]["steps"] if "uses" in s]
    assert any(u.startswith("github/codeql-action/upload-sarif@") for u in uses)
    for step in action["runs"]["steps"]:
        # Inputs must reach scripts through env, never be pasted into them (script injection).
        assert "${{" not in step.get("run", ""), step.get("name")


def test_scan_step_writes_sarif_and_reports_the_exit_code(action: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "evil.pt").write_bytes(EVIL)
    (tmp_path / "models" / "ok.pkl").write_bytes(GOOD)
    code, log, outputs = _run(_step(action, "scan")["run"], tmp_path, _inputs(action, paths="models/"))
    assert code == 0, log  # the scan step itself never fails: the SARIF upload must still run
    assert outputs["exit-code"] == "1"
    assert "models/evil.pt: MALICIOUS" in log  # a readable report in the job log
    sarif = json.loads((tmp_path / "picklewarden.sarif").read_text())
    assert sarif["runs"][0]["results"][0]["ruleId"] == "PW100"

    fail = _step(action, "Fail on findings")
    code, log, _ = _run(fail["run"], tmp_path, {"PW_CODE": outputs["exit-code"]})
    assert code == 1 and "::error::" in log


def test_scan_step_inputs(action: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "a b").mkdir()
    (tmp_path / "own.pt").write_bytes(Asm(2).global_("acme", "Net").empty_tuple().newobj().stop().bytes())
    (tmp_path / "team.toml").write_text('trust = ["acme"]\n')
    env = _inputs(action, paths="own.pt", policy="team.toml", sarif_file="out/r.sarif")
    (tmp_path / "out").mkdir()
    code, log, outputs = _run(_step(action, "scan")["run"], tmp_path, env)
    assert code == 0 and outputs["exit-code"] == "0", log
    env = _inputs(action, paths="own.pt", fail_on="malicious")
    code, log, outputs = _run(_step(action, "scan")["run"], tmp_path, env)
    assert outputs["exit-code"] == "0", log
    env = _inputs(action, paths="own.pt")
    _, log, outputs = _run(_step(action, "scan")["run"], tmp_path, env)
    assert outputs["exit-code"] == "1", log
    env = _inputs(action, paths="own.pt", policy="missing.toml")
    code, log, outputs = _run(_step(action, "scan")["run"], tmp_path, env)
    assert outputs["exit-code"] == "2" and code == 2 and "no SARIF report" in log
