"""Judging one cached file with the library's own scanner (nothing is re-implemented here).

The verdict comes from :func:`picklewarden.scan` with ``skip_non_models``: files that no loader
deserializes (JSON, text, safetensors) are skipped by content sniffing, not by name, so a pickle renamed
``config.json`` is still scanned. The evidence (the decompiled program with flagged lines) is rendered the
way ``picklewarden show`` renders it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from picklewarden.cache import code_fingerprint, policy_fingerprint
from picklewarden.containers.hints import extension
from picklewarden.limits import Limits
from picklewarden.model import FileReport
from picklewarden.policy.config import Policy

SKIPPED = "skipped"
"""The verdict label of a file that is not a model or pickle format (served; nothing to deserialize)."""

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_PROGRAM_STATEMENTS = 4000
"""Most statements of a pickle listed whole; a state dict with 500k tensors has over a million."""
_CONTEXT = 3
_CONFIG_MAX = 4 << 20
"""Largest ``config.json`` read for ``auto_map`` (real ones are a few KB)."""


@dataclass(frozen=True)
class Judgement:
    report: FileReport
    program: str

    @property
    def verdict(self) -> str:
        return SKIPPED if self.report.skipped else self.report.verdict.label


def judge_key(name: str, policy: Policy, limits: Limits) -> str:
    """Everything besides the bytes that can change a judgement: the picklewarden build, the policy, the
    limits and the extension (a disguised extension is a finding)."""
    material = {
        "code": code_fingerprint(),
        "policy": policy_fingerprint(policy),
        "limits": limits._asdict(),
        "extension": extension(name),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def judge_file(blob: Path, name: str, policy: Policy, limits: Limits) -> Judgement:
    """Scan ``blob`` as if it were called ``name``. Never raises for bad bytes (the scanner's promise)."""
    from picklewarden.filescan import scan_file
    from picklewarden.report.program import program_excerpt

    with tempfile.TemporaryDirectory(prefix="pw-judge-") as work:
        # The scanner reads the extension from the path, so the blob is linked under its real file name.
        link = Path(work) / (_SAFE_NAME.sub("_", PurePosixPath(name).name) or "file")
        try:
            os.link(blob, link)
        except OSError:
            shutil.copyfile(blob, link)
        # As a directory walk would: a file no loader deserializes is skipped (and served), not an error.
        report, analysis = scan_file(str(link), limits, explicit=False, policy=policy)
        program = ""
        if analysis is not None:
            with contextlib.suppress(Exception):  # evidence only: the verdict above stands without it
                program = program_excerpt(analysis, policy, limit=_PROGRAM_STATEMENTS, context=_CONTEXT)
    return Judgement(report._replace(path=name), program.replace(str(link), name))


def brings_code(path: str, blob: Path) -> str:
    """Why a ``trust_remote_code`` load of this repository would import code because of this file, or ''."""
    if path.endswith(".py"):
        return "Python source: trust_remote_code imports the repository's .py files"
    if PurePosixPath(path).name not in ("config.json", "tokenizer_config.json", "processor_config.json"):
        return ""
    try:
        if blob.stat().st_size > _CONFIG_MAX:
            return ""
        config = json.loads(blob.read_bytes())
    except (OSError, ValueError):
        return ""
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not isinstance(auto_map, dict) or not auto_map:
        return ""
    entries = [f"{key} -> {value}" for key, value in auto_map.items()]
    return "auto_map: " + "; ".join(entries)[:1000]
