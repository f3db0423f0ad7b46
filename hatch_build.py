"""Build hook: compile ``picklewarden._speedups`` from ``src/picklewarden/_speedups.c`` when possible.

The extension is optional. Without a C compiler or Python's headers (or with ``PICKLEWARDEN_NO_EXTENSION=1``)
the build prints why and installs the pure-Python package, which works the same, only slower. It calls the
compiler the interpreter was built with (``sysconfig``), so no build dependency beyond hatchling is needed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

_SOURCE = Path("src", "picklewarden", "_speedups.c")
_TARGET = "picklewarden/_speedups"


class SpeedupsBuildHook(BuildHookInterface):  # type: ignore[misc,unused-ignore]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("PICKLEWARDEN_NO_EXTENSION", "") not in ("", "0"):
            return
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        source = Path(self.root, _SOURCE)
        if version == "editable":
            # An editable install imports from src/, so the module is built next to its source.
            output = source.with_name("_speedups" + suffix)
        else:
            self._scratch = tempfile.mkdtemp(prefix="picklewarden-build-")
            output = Path(self._scratch, "_speedups" + suffix)
        problem = _compile(source, output)
        if problem is not None:
            sys.stderr.write(f"picklewarden: C extension not built ({problem}); installing the pure-Python core\n")
            return
        if version != "editable":
            build_data["force_include"][str(output)] = _TARGET + suffix
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _compile(source: Path, output: Path) -> str | None:
    """Compile and link ``source`` into ``output``; the reason on failure, else None."""
    linker = os.environ.get("LDSHARED") or sysconfig.get_config_var("LDSHARED")  # the usual override
    include = sysconfig.get_paths().get("include")
    if not linker or not include or not Path(include, "Python.h").exists():
        return "no C compiler or Python headers known to this interpreter"
    command = [
        *shlex.split(linker),
        *shlex.split(sysconfig.get_config_var("CCSHARED") or ""),
        "-O2",
        "-I",
        include,
        str(source),
        "-o",
        str(output),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{command[0]}: {exc}"
    if done.returncode != 0:
        output.unlink(missing_ok=True)
        return f"{command[0]} failed: {done.stderr.strip()[-500:]}"
    return None
