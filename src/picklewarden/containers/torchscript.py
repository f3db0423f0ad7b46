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

import io
import re
import tokenize
from dataclasses import dataclass

from picklewarden.containers.base import Anomaly
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
_NETWORK_NAMESPACES = frozenset("c10d _c10d_functional _c10d_functional_autograd symm_mem _dtensor".split())
_OPS = re.compile(r"\bops\.([A-Za-z_]\w*)\.([A-Za-z_]\w*)")
_FILE_CALL = re.compile(r"\b(?:torch\.)?(?:ops\.aten\.)?(?:torch\.)?(save|from_file)\s*\(")
_MAX_LISTED = 20


@dataclass(frozen=True)
class Call:
    name: str
    line: int
    method: str
    """The enclosing ``def`` ('' at class or module level)."""


def _calls(source: str) -> list[Call]:
    """Every call with a dotted callee name (``torch.save(``, ``ops.ns.op(``), with the ``def`` it sits in.

    Read with ``tokenize``, not ``ast``: parsing attacker text into an AST is a ``compile`` call, and the
    scanner promises an audit hook none. Raises tokenize.TokenError/IndentationError on broken source.
    """
    found: list[Call] = []
    defs: list[tuple[int, str]] = []
    chain: list[str] = []
    last = ""
    line_start = True
    pending_def = False
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        kind, text = token.type, token.string
        if kind in (tokenize.NEWLINE, tokenize.NL):
            line_start, chain, last = kind == tokenize.NEWLINE or line_start, [], ""
            continue
        if kind in (tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT, tokenize.ENDMARKER):
            continue
        if line_start:
            line_start = False
            column = token.start[1]
            while defs and defs[-1][0] >= column:
                defs.pop()
            if kind == tokenize.NAME and text == "def":
                pending_def = True
                defs.append((column, ""))
                continue
        if pending_def and kind == tokenize.NAME:
            defs[-1] = (defs[-1][0], text)
            pending_def = False
            continue
        if kind == tokenize.NAME:
            chain = [*chain, text] if chain and last == "." else [text]
            last = "name"
        elif kind == tokenize.OP and text == "." and last == "name":
            last = "."
        elif kind == tokenize.OP and text == "(" and last == "name":
            found.append(Call(".".join(chain), token.start[0], defs[-1][1] if defs else ""))
            chain, last = [], ""
        else:
            chain, last = [], ""
    return found


def _calls_by_pattern(source: str) -> list[Call]:
    """A fallback for code Python's parser rejects (or nests too deeply): the same calls by pattern."""
    found: list[Call] = []
    for number, line in enumerate(source.splitlines(), 1):
        for match in _FILE_CALL.finditer(line):
            found.append(Call(f"torch.{match.group(1)}", number, "?"))
        for match in _OPS.finditer(line):
            found.append(Call(f"ops.{match.group(1)}.{match.group(2)}", number, "?"))
    return found


def review_code(member: str, source: str) -> list[Anomaly]:
    """Findings for one ``code/`` source file."""
    try:
        calls = _calls(source)
    except (tokenize.TokenError, SyntaxError, ValueError):
        calls = _calls_by_pattern(source)
    found: list[Anomaly] = []
    seen: set[tuple[str, str]] = set()
    for call in calls:
        where = f"line {call.line}" + (f" in {call.method}" if call.method and call.method != "?" else "")
        at_load = " while torch.jit.load runs it" if call.method == "__setstate__" else ""
        what = _FILE_OPS.get(call.name)
        if what is not None:
            if (call.name, call.method) in seen:
                continue
            seen.add((call.name, call.method))
            found.append(Anomaly("PW312", member, None, f"TorchScript calls {call.name} ({where}): {what}{at_load}"))
            continue
        match = _OPS.fullmatch(call.name.removeprefix("torch."))
        if match is None:
            continue
        namespace = match.group(1)
        if namespace in _CORE_NAMESPACES or (call.name, call.method) in seen:
            continue
        seen.add((call.name, call.method))
        if namespace in _NETWORK_NAMESPACES:
            why = "a distributed operator: it exchanges data with other processes"
        else:
            why = f"operator namespace {namespace!r} is not part of torch: native code from a library loaded elsewhere"
        found.append(Anomaly("PW313", member, None, f"TorchScript calls {call.name} ({where}): {why}{at_load}"))
    return found


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
