"""TorchScript archives (``torch.jit.save``): what their pickles may name and what their code may do.

A TorchScript archive is a torch ZIP with ``constants.pkl`` (``torch.load`` checks exactly that and hands
such archives to ``torch.jit.load``). Its pickles are read by torch's C++ unpickler, which resolves
``__torch__.*`` classes against the archive's own compiled ``code/`` and a few ``torch.jit._pickle`` list
builders natively, never importing Python: those names are vouched for here. Everything else in the
pickles is judged as usual.

The ``code/`` sources are TorchScript, compiled (not exec'd) at load; a scripted ``__setstate__`` runs
during ``torch.jit.load``. TorchScript cannot import modules, but some operators reach outside the model:
``aten::save`` (``torch.save``) writes a file at a path of the model's choosing and ``aten::from_file``
maps or creates one; custom operator namespaces run native code from whatever libraries the loading
process registered, and the distributed ones talk to other processes. Those calls are findings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from picklewarden import codereview
from picklewarden.containers.base import Anomaly
from picklewarden.containers.torchzip import TorchZip, ZipEntry, read_entry
from picklewarden.errors import ScanError
from picklewarden.limits import Limits
from picklewarden.model import Severity

VOUCHED: frozenset[str] = frozenset(
    {
        "__torch__.*",
        *(
            f"torch.jit._pickle.{name}(*)"
            for name in (
                "build_tensor_from_id",
                "restore_type_tag",
                "build_intlist",
                "build_tensorlist",
                "build_doublelist",
                "build_boollist",
                "build_complexlist",
            )
        ),
    }
)
"""What the C++ unpickler resolves itself inside a TorchScript archive (``Unpickler::readGlobal``): any
``__torch__`` class (compiled from the archive's code, never imported; instantiated without arguments) and
the exact list builders of ``torch.jit._pickle`` (``(*)``: called with arguments); any other name in that
module makes it throw."""

_FILE_OPS: dict[str, str] = {
    "torch.save": "writes a file (aten::save)",
    "torch.from_file": "maps, creates or reads a file (aten::from_file)",
    "ops.aten.save": "writes a file (aten::save)",
    "ops.aten.from_file": "maps, creates or reads a file (aten::from_file)",
    "torch.ops.aten.save": "writes a file (aten::save)",
    "torch.ops.aten.from_file": "maps, creates or reads a file (aten::from_file)",
}
_CORE_NAMESPACES = frozenset(
    "aten prim prims quantized _quantized mkldnn mkldnn_prepacked onednn sparse quantization mkl _native "
    "rngprims inductor_prims profiler static_runtime debugprims _test".split()
)
_OPS = re.compile(r"\bops\.([A-Za-z_]\w*)\.([A-Za-z_]\w*)")
_FILE_CALL = re.compile(r"\b(?:torch\.)?(?:ops\.aten\.)?(?:torch\.)?(save|from_file)\s*\(")
_MAX_LISTED = 20


@dataclass(frozen=True)
class Call:
    name: str
    line: int
    method: str
    """The enclosing ``def`` ('' at class or module level, '?' when unknown)."""
    kind: str = "file"
    why: str = ""
    text: str = ""


def _calls_by_pattern(source: str) -> list[Call]:
    """A fallback for code Python's parser rejects (torch's own parser may still accept it): the same
    operations by pattern. Nothing reviewed this way is ever called clean."""
    found: list[Call] = []
    for number, line in enumerate(source.splitlines(), 1):
        for match in _FILE_CALL.finditer(line):
            found.append(Call(f"torch.{match.group(1)}", number, "?", text=line.strip()[:160]))
        for match in _OPS.finditer(line):
            found.append(Call(f"ops.{match.group(1)}.{match.group(2)}", number, "?", "native", text=line.strip()[:160]))
    return found


def _operations(source: str) -> list[Call]:
    issues = codereview.dangerous(source)
    if issues is None:
        return _calls_by_pattern(source)
    return [Call(i.name, i.line, i.function, i.kind, i.why, i.text) for i in issues]


def review_code(member: str, source: str) -> list[Anomaly]:
    """Findings for one ``code/`` source file: every reference to an operation that touches files,
    processes, sockets, serialized data or code (PW312), or to a native or distributed operator (PW313)."""
    found: list[Anomaly] = []
    seen: set[tuple[str, str]] = set()
    for call in _operations(source):
        if (call.name, call.method) in seen:
            continue
        where = f"line {call.line}" + (f" in {call.method}" if call.method and call.method != "?" else "")
        at_load = " while torch.jit.load runs it" if call.method == "__setstate__" else ""
        line = f": {call.text}" if call.text else ""
        if call.kind in ("native", "distributed"):
            match = _OPS.search(call.name)
            namespace = match.group(1) if match else ""
            if namespace in _CORE_NAMESPACES and call.kind == "native":
                continue
            seen.add((call.name, call.method))
            why = call.why or f"operator namespace {namespace!r} is not part of torch: native code from a library"
            found.append(
                Anomaly("PW313", member, None, f"TorchScript calls {call.name} ({where}{line}): {why}{at_load}")
            )
            continue
        seen.add((call.name, call.method))
        what = call.why or _FILE_OPS.get(call.name, "touches files")
        found.append(Anomaly("PW312", member, None, f"TorchScript calls {call.name} ({where}{line}): {what}{at_load}"))
    return found


def code_members(archive: TorchZip) -> list[ZipEntry]:
    """Every entry torch.jit.load may compile as source: miniz looks records up ignoring ASCII case, so
    ``CODE/__torch__/M.PY`` is found for ``code/__torch__/m.py`` (every same-named duplicate is reviewed)."""
    folder = _fold(f"{archive.prefix}/code/")
    return [
        entry
        for entry in archive.all_entries
        if not entry.directory and _fold(entry.name).startswith(folder) and _fold(entry.name).endswith(b".py")
    ]


def _fold(name: str) -> bytes:
    raw = name.encode("utf-8", "surrogateescape")
    return raw.split(b"\x00", 1)[0].translate(_ASCII_FOLD)


_ASCII_FOLD = bytes.maketrans(bytes(range(65, 91)), bytes(range(97, 123)))


def review_archive(data: bytes, archive: TorchZip, limits: Limits) -> tuple[list[Anomaly], list[str]]:
    """(findings, errors) for an archive's TorchScript sources."""
    entries = code_members(archive)
    names = [entry.name[len(archive.prefix) + 1 :] for entry in entries]
    anomalies = [listing(list(dict.fromkeys(names)))]
    errors: list[str] = []
    for entry in entries:
        if entry.size > limits.max_code_bytes:
            errors.append(f"{entry.name}: {entry.size}-byte TorchScript source not reviewed (max_code_bytes)")
            continue
        try:
            raw, _ = read_entry(data, entry, limits)
        except ScanError as exc:
            errors.append(f"{entry.name}: {exc}")
            continue
        anomalies.extend(review_code(entry.name, raw.decode("utf-8", "replace")))
    return anomalies, errors


def listing(code_members: list[str]) -> Anomaly:
    """The info finding that lists an archive's TorchScript sources."""
    shown = ", ".join(code_members[:_MAX_LISTED])
    more = f" and {len(code_members) - _MAX_LISTED} more" if len(code_members) > _MAX_LISTED else ""
    return Anomaly(
        "PW311",
        None,
        None,
        f"TorchScript archive with {len(code_members)} code file(s): {shown}{more}",
        Severity.INFO,
    )
