"""Run a piece of the generator in a child process: a fresh temporary working directory and home, no input.

Importing every module of the stdlib, numpy and torch runs their import-time code; doing so in a child keeps
the developer's (or CI's) files and terminal out of reach and lets a crash or hang be a recorded failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent.parent


def run(module: str, *args: str, timeout: float = 1800) -> Any:
    """Run ``python -m knowledge_gen.<module> args`` sandboxed; its standard output is JSON."""
    with tempfile.TemporaryDirectory(prefix="pw-gen-") as home:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "TMPDIR": home,
            "PYTHONPATH": str(SCRIPTS),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
        }
        done = subprocess.run(
            [sys.executable, "-m", f"knowledge_gen.{module}", *args],
            cwd=home,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    sys.stderr.write(done.stderr.decode("utf-8", "replace")[-4000:])
    if done.returncode != 0:
        raise RuntimeError(f"knowledge_gen.{module} failed with exit code {done.returncode}")
    return json.loads(done.stdout)
