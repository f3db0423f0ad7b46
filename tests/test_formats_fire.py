"""Non-pickle formats: every malicious sample runs its canary under the real loader (in a fresh interpreter),
every benign twin loads cleanly, and the scan gives each the verdict and rules it is named for."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import picklewarden
from tests.format_samples import CASES, FormatCase
from tests.loader_run import run_loader

TIMEOUT = 120.0

LOADER = r"""
import os, sys
path, loader = sys.argv[1], sys.argv[2]
if loader == "yaml":
    import yaml
    with open(path) as f:
        yaml.unsafe_load(f)
elif loader in ("hydra", "nemo"):
    import functools, tarfile, tempfile
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    if loader == "nemo":  # what NeMo's restore does: unpack, instantiate the config, torch.load the weights
        import torch
        folder = tempfile.mkdtemp()
        with tarfile.open(path) as tar:
            tar.extractall(folder, filter="data")
        instantiate(OmegaConf.load(os.path.join(folder, "model_config.yaml")))
        torch.load(os.path.join(folder, "model_weights.ckpt"), weights_only=False)
    else:
        for value in OmegaConf.load(path).values():
            made = instantiate(value)
            if isinstance(made, functools.partial):
                made()  # the training code calls what a _partial_ config hands it
elif loader == "jinja":  # llama-cpp-python before the fix for CVE-2024-34359
    import jinja2
    from gguf import GGUFReader
    field = GGUFReader(path).fields["tokenizer.chat_template"]
    source = bytes(field.parts[field.data[0]]).decode()
    env = jinja2.Environment(loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True)
    env.from_string(source).render(messages=[{"role": "user", "content": "hi"}], add_generation_prompt=True)
elif loader == "keras":
    os.environ["KERAS_BACKEND"] = "torch"
    import keras, numpy
    model = keras.models.load_model(path, safe_mode=False)
    model(numpy.zeros((1, 2), "float32"))
elif loader == "safetensors":
    from safetensors import safe_open
    with safe_open(path, "np") as f:
        for key in f.keys():
            f.get_tensor(key)
elif loader == "onnx":
    import onnx
    onnx.load(path)
elif loader == "exec":
    import subprocess
    subprocess.run([path], check=True)
elif loader == "none":
    import json
    with open(path) as f:
        json.load(f)
"""


@dataclass(frozen=True)
class Outcome:
    returncode: int | None
    fired: bool
    stderr: str
    path: Path


def _run(case: FormatCase, workdir: Path) -> Outcome:
    path = workdir / case.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    canary = workdir / "canary"
    case.make(path, canary)
    assert not canary.exists(), f"{case.id}: building the sample fired its canary"
    returncode, stderr = run_loader(LOADER, path, case.loader, workdir, TIMEOUT)
    return Outcome(returncode, canary.exists(), stderr, path)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    base = tmp_path_factory.mktemp("formats")
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {case.id: pool.submit(_run, case, base / case.id) for case in CASES}
        return {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_sample_behaves_as_claimed_under_its_real_loader(case: FormatCase, outcomes: dict[str, Outcome]) -> None:
    out = outcomes[case.id]
    if case.expect == "malicious" and case.fires:
        assert out.fired, f"{case.id}: canary not created (rc={out.returncode})\n{out.stderr}"
    elif case.expect == "safe" or case.loader == "none":
        # "none": a config.json is data until a user opts in with trust_remote_code; it must parse as JSON.
        assert out.returncode == 0 and not out.fired, f"{case.id}: benign sample failed to load\n{out.stderr}"
    else:
        assert out.returncode != 0 and not out.fired, f"{case.id}: the loader was expected to refuse it"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_scan_verdict(case: FormatCase, outcomes: dict[str, Outcome]) -> None:
    report = picklewarden.scan_path(str(outcomes[case.id].path))
    rules = {f.rule for f in report.findings}
    detail = f"{case.id}: {report.verdict.label} {report.format} {sorted(rules)} {report.errors}"
    assert report.verdict.label == case.expect, detail
    assert set(case.rules) <= rules, detail
    assert not report.errors, detail
