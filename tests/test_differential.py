"""Differential tests against CPython's own unpickler on mutated real pickles.

For random byte mutations of real model pickles, a minimal tracing unpickler (CPython's C unpickler whose
``find_class`` records the name and returns an inert recorder) runs in a memory-capped subprocess. Whatever
import or call it reaches before failing, the scanner must report too. This checks everything picklewarden
adds around the C machine: the layout pass, the cut it makes, the stand-ins and the recorder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import random
import subprocess
import sys
import textwrap
from collections import OrderedDict

import pytest

from picklewarden import DEFAULT_LIMITS
from picklewarden.pickle.program import Global
from picklewarden.scanner import analyse_bytes

_TRACER = textwrap.dedent(
    """
    import io, json, pickle, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    class Inert:
        def __init__(self, log, tag):
            self.log, self.tag = log, tag
        def __call__(self, *args, **kwargs):
            self.log.append(["call", self.tag])
            return Inert(self.log, "result")
        def __setstate__(self, state):
            self.log.append(["build", self.tag])

    class Tracer(pickle.Unpickler):
        def __init__(self, f, log):
            super().__init__(f, encoding="latin1")
            self.log = log
        def find_class(self, module, name):
            self.log.append(["import", module, name])
            return Inert(self.log, module + "." + name)
        def persistent_load(self, pid):
            return Inert(self.log, "pid")

    out = []
    for blob in json.load(sys.stdin):
        log = []
        try:
            Tracer(io.BufferedReader(io.BytesIO(bytes.fromhex(blob))), log).load()
        except BaseException as exc:  # noqa: BLE001 - record how far it got, whatever it raised
            log.append(["error", type(exc).__name__])
        out.append(log)
    json.dump(out, sys.stdout)
    """
)


def _seeds() -> list[bytes]:
    seeds = [pickle.dumps(OrderedDict(w=[1.0, 2.0], b={"x": (1, 2)}), protocol=p) for p in range(6)] + [
        b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00idq\x00\x85R}b.",
        b"\x80\x04\x95\x1e\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x8c\x02id\x85R.",
        b"(S'id'\nios\nsystem\np0\n0g0\n.",
    ]
    if importlib.util.find_spec("torch") is not None:
        import io
        import zipfile

        import torch

        buffer = io.BytesIO()
        torch.save({"w": torch.ones(2), "opt": {"lr": 0.1, "betas": (0.9, 0.99)}}, buffer)
        with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
            seeds.append(archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl"))))
    return seeds


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        pos = rng.randrange(len(out)) if out else 0
        if kind < 0.5 and out:
            out[pos] = rng.randrange(256)
        elif kind < 0.7:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif kind < 0.9 and out:
            del out[pos : pos + rng.randint(1, 4)]
        else:
            del out[pos:]
    return bytes(out)


def _trace(blobs: list[bytes]) -> list[list[list[str]]]:
    done = subprocess.run(
        [sys.executable, "-c", _TRACER],
        input=json.dumps([b.hex() for b in blobs]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: list[list[list[str]]] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("seed", range(int(os.environ.get("PICKLEWARDEN_DIFF_SEEDS", "3"))))
def test_scanner_sees_every_import_and_call_cpython_reaches(seed: int) -> None:
    rng = random.Random(seed)
    blobs = [_mutate(rng, rng.choice(_seeds())) for _ in range(250)]
    compared = 0
    for blob, log in zip(blobs, _trace(blobs), strict=True):
        analysis = analyse_bytes(blob, limits=DEFAULT_LIMITS.replace(max_memo_index=1 << 20))
        if any(f.rule == "PW301" for f in analysis.findings) or not analysis.programs:
            # Over a limit: the scanner stopped early on purpose and says so (never safe);
            # no program: a stream the scanner rejected as not a pickle at all (an error verdict).
            assert analysis.report().verdict.label != "safe"
            continue
        first = analysis.programs[0]
        ours_imports = [[g.module, g.name] for g in first.statements if isinstance(g, Global)]
        ours_calls = len(first.calls)  # elided calls of known-safe reconstructors included
        theirs_imports = [e[1:] for e in log if e[0] == "import"]
        theirs_calls = sum(e[0] == "call" for e in log)
        assert ours_imports[: len(theirs_imports)] == theirs_imports, blob
        assert ours_calls >= theirs_calls, blob
        compared += bool(theirs_imports or theirs_calls)
    assert compared >= 50, "too few mutations reached an import or call to compare anything"
