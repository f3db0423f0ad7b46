"""The benign ecosystem corpus (issue 13): objects of the mainstream ML packages and torch training
artifacts, made here from the real libraries, written the ways users write them, really loaded back, and
scanned. None may be malicious or an error, at least 95 % must be safe, and only this test's own classes
may stay unknown. Also: every class the ecosystem data allows still has an unpickling path that reaches no
sink, checked again by the generator's own bytecode walk against the installed packages.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest

from picklewarden import Verdict, scan
from picklewarden.knowledge.tables import ecosystem
from picklewarden.knowledge.values import HAND_SAFE
from picklewarden.scanner import analyse_path
from tests import ecosystem_samples

torch = pytest.importorskip("torch")

DATA = Path(__file__).resolve().parent.parent / "src" / "picklewarden" / "knowledge" / "data" / "ecosystem.json"
OWN_MODULE = ecosystem_samples.__name__
JOBLIB_PACKAGES = frozenset({"sklearn", "pandas", "scipy", "xgboost", "lightgbm"})


def _torch_load(path: Path) -> Any:
    return torch.load(path, weights_only=False)


def _pickle_load(path: Path) -> Any:
    with path.open("rb") as f:
        return pickle.load(f)


def _writers(sample: ecosystem_samples.Sample) -> Iterator[tuple[str, Callable[[Any, Path], None], Callable[..., Any]]]:
    """(suffix, write, load) for every way this kind of object is commonly saved."""
    for protocol in (2, 4, 5):
        yield (
            f"p{protocol}.pkl",
            lambda obj, path, p=protocol: path.write_bytes(pickle.dumps(obj, protocol=p)),
            _pickle_load,
        )
    if sample.torch_save:

        def save(obj: Any, path: Path) -> None:
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            path.write_bytes(buffer.getvalue())

        yield "pt", save, _torch_load
    if sample.package in JOBLIB_PACKAGES:
        yield "joblib", lambda obj, path: joblib.dump(obj, path), joblib.load


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ecosystem")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for sample in ecosystem_samples.samples():
            obj = sample.build()
            for suffix, write, load in _writers(sample):
                path = directory / f"{sample.name}.{suffix}"
                write(obj, path)
                load(path)  # every file really loads with its real loader
    return directory


def test_ecosystem_corpus_is_judged_benign(corpus: Path) -> None:
    report = scan(corpus)
    files = [f for f in report.files if not f.skipped]
    assert len(files) >= 300, len(files)
    bad = {f.path: [(x.rule, x.message) for x in f.findings if x.severity] for f in files if f.verdict >= Verdict.ERROR}
    assert not [f.path for f in files if f.verdict is Verdict.MALICIOUS], bad
    assert not [f.path for f in files if f.errors or f.verdict is Verdict.ERROR], bad
    safe = sum(f.verdict is Verdict.SAFE for f in files)
    assert safe / len(files) >= 0.95, (safe, len(files), bad)
    for f in files:
        for finding in f.findings:
            if finding.severity:
                assert finding.symbol.startswith(f"{OWN_MODULE}."), (f.path, finding.rule, finding.message)


def test_ecosystem_corpus_reports_alike_in_lean_and_full_recordings(corpus: Path) -> None:
    """The scan's lean recording (known-safe reconstructor calls only counted) changes no report: issue 16."""
    elided = 0
    for path in sorted(corpus.iterdir()):
        lean = analyse_path(str(path))
        assert lean.report() == analyse_path(str(path), full=True).report(), path.name
        elided += sum(len(p.elided) for p in lean.programs)
    assert elided >= 1000


def test_every_package_of_the_test_extra_is_sampled() -> None:
    names = {s.package for s in ecosystem_samples.samples()}
    assert {"sklearn", "pandas", "scipy", "xgboost", "lightgbm", "transformers", "tokenizers"} <= names
    assert {"accelerate", "peft", "torch"} <= names


# -- no loss of recall: what the data allows reaches no sink ------------------------------------------------
def _generator() -> Any:
    from scripts import gen_ecosystem

    return gen_ecosystem


def test_ecosystem_data_records_versions_and_reasons() -> None:
    raw = json.loads(DATA.read_text("utf-8"))
    assert raw["generated_by"] == "scripts/gen_ecosystem.py"
    assert {"sklearn", "pandas", "transformers", "torch"} <= set(raw["packages"])
    for entry in raw["safe"] + raw["sinks"]:
        assert entry["reason"] and entry["module"] and entry["qualname"] and entry["uses"], entry
    assert len(ecosystem().safe) == len(raw["safe"]) >= 100


def _installed(module: str) -> bool:
    return ecosystem_samples.available(module.partition(".")[0])


def test_each_allowlisted_ecosystem_global_reaches_no_sink() -> None:
    gen = _generator()
    walker = gen.Walker()
    raw = json.loads(DATA.read_text("utf-8"))
    checked = 0
    for entry in raw["safe"]:
        if not _installed(entry["module"]):
            continue
        walker.compiled.clear()
        outcome = gen.judge((entry["module"], entry["qualname"]), set(entry["uses"]), walker)
        assert outcome.ok, (entry["module"], entry["qualname"], outcome.detail)
        checked += 1
    assert checked >= 100


def test_hand_entries_reach_no_known_sink() -> None:
    """Hand entries the walk cannot clear on its own must at least never reach a sink the tables know."""
    gen = _generator()
    walker = gen.Walker()
    checked = 0
    for module, qualname in sorted(HAND_SAFE):
        if not _installed(module):
            continue
        try:
            gen.lookup((module, qualname))
        except Exception:  # noqa: BLE001 - names of other versions (numpy 1 paths, torch.cuda without CUDA)
            continue
        outcome = gen.judge((module, qualname), {"new", "build", "setitem", "append"}, walker)
        assert outcome.category is None, (module, qualname, outcome.detail)
        checked += 1
    assert checked >= 100


def test_the_walk_finds_a_sink_in_a_setstate() -> None:
    gen = _generator()
    outcome = gen.judge((__name__, "_Hostile"), {"new", "build"}, gen.Walker())
    assert not outcome.ok and outcome.category == "process", outcome


class _Hostile:
    def __setstate__(self, state: dict[str, Any]) -> None:
        import os

        os.system(state["cmd"])


NOT_INSTALLED_IN_CI = {
    "diffusers": "regenerating the data with it installed judges DDPMScheduler a file sink: the bytecode walk "
    "follows ConfigMixin.__getattr__ into a deprecation warning that reads source lines (linecache), a path "
    "BUILD's __setstate__ look-up does not take; its shipped entries are those of the reviewed run",
}
"""Sampled packages the test extra leaves out, and why (their entries are not re-checked in CI)."""


def test_the_test_extra_installs_every_sampled_package() -> None:
    import tomllib

    from tests.ecosystem_samples import PACKAGES

    extra = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ;]", req, maxsplit=1)[0].lower() for req in extra["optional-dependencies"]["test"]}
    distribution = {
        "sklearn": "scikit-learn",
        "xgboost": "xgboost-cpu",
        "sentence_transformers": "sentence-transformers",
    }
    missing = {p for p in PACKAGES if distribution.get(p, p) not in names and p not in NOT_INSTALLED_IN_CI}
    assert not missing
