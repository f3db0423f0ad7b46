"""Run a loader script on a sample in a fresh interpreter, as a victim would: the one way every firing test
proves that a sample really runs (or really loads) under its real loader."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_loader(script: str, path: Path, loader: str, workdir: Path, timeout: float) -> tuple[int | None, str]:
    """``python -c script PATH LOADER`` in ``workdir``: the exit status (None on timeout) and stderr's tail."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script, str(path), loader],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        return None, str(exc.stderr or "")[-2000:]
    return proc.returncode, proc.stderr[-2000:]
