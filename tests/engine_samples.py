"""Samples for the engine and code views of issue 12: each built with the real library, each hostile one
proven to run under the loader a victim uses (``tests/test_engine_views.py`` runs them), each with a benign
twin that loads and scans safe.

- the pure-Python unpickler (joblib.load): streams the C unpickler rejects before the payload;
- numpy's dtype state below version 3 (object flag recomputed) inside a joblib file;
- TorchScript code found ignoring case, and operations reached through parenthesised callees;
- torch.fx GraphModule source;
- a legacy ``torch.save`` of a whole module (persistent ids that return a class).
"""

from __future__ import annotations

import io
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any

from tests.asm import Asm
from tests.container_samples import Case, _joblib, _script_save, torchscript_setstate_writes_file, touch

# -- the pure-Python unpickler -------------------------------------------------------------------------


def _system(asm: Asm, canary: Path) -> Asm:
    return asm.global_("posix", "system").text(touch(canary)).tuple1().reduce()


def float_underscore_then_payload(c: Path) -> bytes:
    """FLOAT '1_0': float() accepts it, the C unpickler's PyOS_string_to_double does not."""
    return _system(Asm(2).op("FLOAT", b"1_0\n").pop(), c).stop().bytes()


def reduce_with_list_args(c: Path) -> bytes:
    """REDUCE on a list: pickle._Unpickler calls func(*args); the C one wants a tuple."""
    asm = Asm(2).global_("posix", "system").empty_list().text(touch(c)).append()
    return asm.reduce().stop().bytes()


def huge_memo_index_then_payload(c: Path) -> bytes:
    """LONG_BINPUT 0xfffffff0: a dict entry for the Python unpickler, a 64 GiB memo table for the C one."""
    return _system(Asm(2).none().long_binput(0xFFFFFFF0).pop(), c).stop().bytes()


def float_underscore_benign(_c: Path) -> bytes:
    return Asm(2).op("FLOAT", b"1_0\n").stop().bytes()


def _inner_span(data: bytes) -> tuple[int, int]:
    """(start, end) of the first object-array pickle joblib wrote after the outer stream's opcodes."""
    start = None
    for opcode, _arg, pos in pickletools.genops(io.BytesIO(data)):
        if opcode.name == "PROTO" and pos > 0 and start is None:
            start = pos
    # genops stops at the first STOP it meets, which is the inner pickle's when start is set.
    assert start is not None
    end = start + len(_first_pickle(data[start:]))
    return start, end


def _first_pickle(data: bytes) -> bytes:
    stream = io.BytesIO(data)
    for _ in pickletools.genops(stream):
        pass
    return data[: stream.tell()]


def _object_array_with_inner(inner: bytes) -> bytes:
    import numpy as np

    data = _joblib({"o": np.array([1, "x"], dtype=object)})
    start, end = _inner_span(data)
    return data[:start] + inner + data[end:]


def joblib_object_array_float_underscore(c: Path) -> bytes:
    """The object array's own pickle: a literal the C unpickler rejects, then the payload."""
    return _object_array_with_inner(_system(Asm(2).op("FLOAT", b"1_0\n").pop(), c).stop().bytes())


def joblib_object_array_float_underscore_benign(_c: Path) -> bytes:
    """The same literal in front of the object array's real pickle: joblib reads the array as usual."""
    import numpy as np

    data = _joblib({"o": np.array([1, "x"], dtype=object)})
    start, end = _inner_span(data)
    assert data[start] == pickle.PROTO[0]
    inner = data[start : start + 2] + b"F1_0\n0" + data[start + 2 : end]  # after PROTO, before any FRAME
    return data[:start] + inner + data[end:]


# -- numpy's dtype state inside joblib -----------------------------------------------------------------

_STATE_V3 = b"K\x03\x8c\x01<\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94"
_STATE_V2_FLAGGED = b"K\x02\x8c\x01<\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x01t\x94"
_STATE_V2_PLAIN = b"K\x02\x8c\x01<\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94"


def _float_array_file() -> tuple[bytes, int]:
    """A joblib file of one 2-element float64 array, and the offset of the byte after the wrapper's BUILD."""
    import numpy as np

    data = _joblib({"a": np.zeros(2)})
    assert data.count(_STATE_V3) == 1, "joblib/numpy wrote the dtype state differently"
    builds = []
    try:
        for opcode, _arg, pos in pickletools.genops(io.BytesIO(data)):
            if opcode.name == "BUILD":
                builds.append(pos)
    except ValueError:
        pass  # genops runs into the raw array bytes after the wrapper's BUILD
    return data, builds[1] + 1


def joblib_dtype_v2_object_flag(c: Path) -> bytes:
    """A float64 dtype pickled with state version 2 and flag bits set: numpy recomputes the dtype as an object
    dtype, so joblib unpickles what follows the wrapper (here a payload) instead of reading 16 bytes."""
    data, after = _float_array_file()
    pad = data[after]
    payload = _system(Asm(2), c).stop().bytes()
    data = data[:after] + payload + data[after + 1 + pad + 16 :]
    return data.replace(_STATE_V3, _STATE_V2_FLAGGED)


def joblib_dtype_v2_plain(_c: Path) -> bytes:
    data, _ = _float_array_file()
    return data.replace(_STATE_V3, _STATE_V2_PLAIN)


# -- TorchScript ---------------------------------------------------------------------------------------


def _rewrite_zip(data: bytes, rename: Any = None, edit: Any = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            body = src.read(info)
            name = rename(info.filename) if rename else info.filename
            if edit is not None and name.lower().endswith(".py"):
                body = edit(body)
            dst.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), body)
    return out.getvalue()


def _upper_code(name: str) -> str:
    head, sep, rest = name.partition("/code/")
    if not sep:
        return name
    rest = rest[:-3] + ".PY" if rest.endswith(".py") else rest
    return f"{head}/CODE/{rest}"


def torchscript_upper_case_code(c: Path) -> bytes:
    """The code folder spelled CODE/ and the file .PY: miniz finds them for code/ and .py all the same."""
    return _rewrite_zip(torchscript_setstate_writes_file(c), rename=_upper_code)


def torchscript_upper_case_benign(_c: Path) -> bytes:
    import torch

    return _rewrite_zip(_script_save(torch.nn.Sequential(torch.nn.Linear(2, 2))), rename=_upper_code)


def torchscript_parenthesised_save(c: Path) -> bytes:
    """``(torch.save)(...)``: the same call to TorchScript's compiler, a different token sequence."""
    return _rewrite_zip(torchscript_setstate_writes_file(c), edit=lambda b: b.replace(b"torch.save(", b"(torch.save)("))


# -- torch.fx ------------------------------------------------------------------------------------------


def _traced() -> Any:
    import torch

    return torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU()))


class _EvilGraphModule:
    def __init__(self, canary: Path) -> None:
        self.reduce = _traced().__reduce__()
        self.canary = canary

    def __reduce__(self) -> tuple[Any, ...]:
        reducer, (body, import_block) = self.reduce
        return reducer, (body, f"{import_block}\nimport os\nos.system({touch(self.canary)!r})\n")


def fx_import_block_runs_os_system(c: Path) -> bytes:
    """reduce_graph_module execs the import block and code stored in the pickle: here one more import."""
    import torch

    buf = io.BytesIO()
    torch.save(_EvilGraphModule(c), buf)
    return buf.getvalue()


def fx_traced_benign(_c: Path) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(_traced(), buf)
    return buf.getvalue()


# -- legacy whole-module save ----------------------------------------------------------------------------


def legacy_sequential(_c: Path) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU()), buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


_JL = ("numpy", "joblib")
_T = ("torch",)

BENIGN: list[Case] = [
    Case("joblib-object-array-literal-benign", "objects.joblib", "joblib", "safe",
         joblib_object_array_float_underscore_benign, _JL),
    Case("joblib-dtype-v2-plain", "floats.joblib", "joblib", "safe", joblib_dtype_v2_plain, _JL),
    Case("torchscript-upper-case-benign", "scripted_upper.pt", "torch.jit", "safe", torchscript_upper_case_benign, _T),
    Case("fx-traced", "traced.pt", "torch", "safe", fx_traced_benign, _T),
    Case("legacy-whole-module", "legacy_module.pt", "torch", "safe", legacy_sequential, _T),
]  # fmt: skip

MALICIOUS: list[Case] = [
    Case("py-float-underscore", "float.pkl", "joblib", "malicious", float_underscore_then_payload, ("joblib",)),
    Case("py-reduce-list-args", "listargs.pkl", "joblib", "malicious", reduce_with_list_args, ("joblib",)),
    Case("py-huge-memo-index", "memo.pkl", "joblib", "malicious", huge_memo_index_then_payload, ("joblib",)),
    Case("joblib-object-array-literal", "evil_objects.joblib", "joblib", "malicious",
         joblib_object_array_float_underscore, _JL),
    Case("joblib-dtype-v2-object-flag", "evil_floats.joblib", "joblib", "malicious", joblib_dtype_v2_object_flag, _JL),
    Case("torchscript-upper-case-code", "evil_upper.pt", "torch.jit", "malicious", torchscript_upper_case_code, _T),
    Case("torchscript-parenthesised-save", "evil_paren.pt", "torch.jit", "malicious",
         torchscript_parenthesised_save, _T),
    Case("fx-import-block", "evil_fx.pt", "torch", "malicious", fx_import_block_runs_os_system, _T),
]  # fmt: skip

ALL: list[Case] = BENIGN + MALICIOUS
