"""``picklewarden.load``: ``torch.load`` for files you did not make.

1. The file is read **once**; those bytes are scanned and those same bytes are loaded, so nothing can
   change between the check and the use.
2. A malicious verdict, an incomplete analysis, or any suspicious finding other than unknown globals the
   policy trusts is refused with :class:`UnsafeModelError` (the scan report attached).
3. The bytes go to ``torch.load(..., weights_only=True)``: torch's own restricted unpickler, which accepts
   only its built-in allowlist plus the globals added with ``torch.serialization.safe_globals``. picklewarden
   adds exactly the globals *this file* names that the scan judged safe or the policy trusts, importing
   them by name only now that the scan has passed. So two independent gates hold: the scan's judgement of
   the whole program, and torch's structural checks on every opcode. There is no fallback to
   ``weights_only=False``: when torch's restricted unpickler cannot rebuild something (see below), the
   load fails with :class:`RestrictedLoadError`.

What torch's restricted unpickler cannot rebuild whatever it is allowed, and so neither can this function:
items set on a ``collections.defaultdict`` (and any mapping other than dict, OrderedDict and Counter),
opcodes beyond pickle protocol 2 (torch.save writes protocol 2), and objects whose BUILD target is not
of an allowed type. ``picklewarden.convert`` still extracts the tensors of such files.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import io
import os
import pickle
import warnings
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, Final

from picklewarden.extract.errors import RestrictedLoadError, TorchNotInstalledError, UnsafeModelError
from picklewarden.extract.trust import PolicyLike, Trust
from picklewarden.knowledge.resolve import Resolved, classify, resolve
from picklewarden.knowledge.tables import Category
from picklewarden.limits import DEFAULT_LIMITS, Limits
from picklewarden.model import FileReport, Verdict
from picklewarden.pickle.program import Global
from picklewarden.scanner import Analysis, analyse_bytes

_UNKNOWN_GLOBAL_RULES: Final[frozenset[str]] = frozenset({"PW200", "PW201"})
"""Findings that only say "this global is unknown": the one kind of doubt a policy can lift."""

_NUMPY_DTYPE: Final[tuple[str, str]] = ("numpy", "dtype")

SafeGlobal = tuple[Any, str]
"""``(object, "module.name")`` as ``torch.serialization.safe_globals`` takes it."""


def load(
    path_or_file: str | os.PathLike[str] | BinaryIO | bytes,
    map_location: Any = None,
    *,
    policy: PolicyLike = None,
    limits: Limits = DEFAULT_LIMITS,
    **torch_kwargs: Any,
) -> Any:
    """Scan, then load with torch's restricted unpickler; return what ``torch.load`` returns.

    ``path_or_file``: a path, a binary file object (read from its current position to the end) or the
    file's bytes. ``map_location`` and ``torch_kwargs`` are passed to ``torch.load``, except the ones
    that would undo the guarantees: ``weights_only`` may only be True, and ``pickle_module`` and ``mmap``
    are refused (``mmap`` needs a file name, but only the scanned bytes are ever loaded).

    ``policy`` names globals the caller trusts although picklewarden does not know them, typically the
    caller's own model classes: ``None``; an iterable of names, each a module (trusting it and its
    submodules, e.g. ``"mylab.models"``) or an exact ``module.qualname`` (``"mylab.models.ResNet"``); or any
    object with such a ``trust`` attribute (a ``picklewarden.Policy`` from a policy file works). Only
    ``trust`` is consulted: it never overrides a finding that a global is dangerous, and neither do a policy's
    severity overrides or ``allow_dangerous``, which change reports, not what this function will load.

    Raises :class:`UnsafeModelError` (with ``.report``) when the file is refused, :class:`RestrictedLoadError`
    when torch's restricted unpickler cannot rebuild it, :class:`TorchNotInstalledError` without torch, and
    whatever ``torch.load`` raises for a broken file.

    ``torch.serialization.safe_globals`` is process-wide: while this call runs, a ``weights_only`` load in
    another thread also accepts the globals added for this file (all of them judged safe or trusted).
    """
    torch = _import_torch()
    weights_only = torch_kwargs.pop("weights_only", None)
    if weights_only not in (None, True):
        raise ValueError("picklewarden.load always loads with weights_only=True; it cannot be switched off")
    for refused in ("pickle_module", "mmap"):
        if torch_kwargs.get(refused) not in (None, False):
            raise ValueError(f"picklewarden.load does not accept {refused}: it loads only the bytes it scanned")
        torch_kwargs.pop(refused, None)
    data, name = _read_once(path_or_file)
    analysis = analyse_bytes(data, name, limits)
    trust = Trust.of(policy)
    _check(analysis, trust)
    allowed = _safe_globals(analysis, trust)
    # Entries the caller had already registered must survive: safe_globals removes what it added on exit.
    already = set(torch.serialization.get_safe_globals())
    adding = [entry for entry in allowed if entry not in already]
    try:
        with torch.serialization.safe_globals(adding):
            return torch.load(io.BytesIO(data), map_location, weights_only=True, **torch_kwargs)
    except pickle.UnpicklingError as exc:
        raise RestrictedLoadError(_restricted_message(exc)) from exc


def _import_torch() -> Any:
    try:
        import torch  # type: ignore[import-not-found,unused-ignore]  # optional
    except ImportError as exc:
        raise TorchNotInstalledError(
            "picklewarden.load needs PyTorch: pip install 'picklewarden[torch]' "
            "(picklewarden.convert extracts the weights without it)"
        ) from exc
    if not hasattr(torch.serialization, "safe_globals"):
        raise TorchNotInstalledError("picklewarden.load needs torch 2.5 or newer (torch.serialization.safe_globals)")
    return torch


def _read_once(source: str | os.PathLike[str] | BinaryIO | bytes) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        with open(path, "rb") as handle:
            return handle.read(), path
    read: Callable[[], bytes] | None = getattr(source, "read", None)
    if read is None:
        raise TypeError(f"expected a path, a binary file or bytes, not {type(source).__name__}")
    data = read()
    if not isinstance(data, bytes):
        raise TypeError("the file object must be opened in binary mode")
    return data, str(getattr(source, "name", "<file>"))


def _check(analysis: Analysis, trust: Trust) -> None:
    """Refuse the file unless the scan cleared it, or all that kept it from clearing is trusted."""
    report = analysis.report()
    if report.verdict is Verdict.MALICIOUS:
        raise UnsafeModelError(report, _summary(report, Verdict.MALICIOUS))
    if report.errors:
        raise UnsafeModelError(report, "it could not be fully analysed: " + "; ".join(report.errors))
    blocking = [
        f
        for f in report.findings
        if Verdict.from_severity(f.severity) is not Verdict.SAFE and f.rule not in _UNKNOWN_GLOBAL_RULES
    ]
    if blocking:
        raise UnsafeModelError(report, "; ".join(f"{f.rule} {f.message}" for f in blocking[:5]))
    named = list(_globals(analysis))
    # The scan resolved names as CPython would; torch's unpickler maps Python-2 names at every protocol.
    # Judge what torch will look up, too, so a name the two read differently cannot slip between them.
    dangerous = sorted({g.symbol for g in named if _known(g) not in (None, Category.SAFE)})
    if dangerous:
        raise UnsafeModelError(report, f"torch would resolve globals to {', '.join(dangerous[:10])}")
    untrusted = sorted({g.symbol for g in named if _known(g) is None and not trust.trusts(g)})
    if untrusted:
        raise UnsafeModelError(
            report,
            f"it needs globals picklewarden does not know: {', '.join(untrusted[:10])}; "
            "pass policy=[...] naming them (or their package) if you trust that code",
        )


def _summary(report: FileReport, verdict: Verdict) -> str:
    worst = [f for f in report.findings if Verdict.from_severity(f.severity) is verdict]
    return "; ".join(f"{f.rule} {f.message}" for f in worst[:3])


def _globals(analysis: Analysis) -> Iterator[Resolved]:
    """Every global the file's pickles import, as torch's restricted unpickler resolves it.

    torch's restricted unpickler applies the Python-2 name mapping whatever the protocol (CPython only
    below protocol 3), so names are resolved the way *it* will look them up, and judged by that.
    """
    seen: set[tuple[str, str]] = set()
    for program in analysis.programs:
        for stmt in program.statements:
            if isinstance(stmt, Global):
                module, name = _torch_name(stmt.module, stmt.name)
                if (module, name) not in seen:
                    seen.add((module, name))
                    yield resolve(module, name, pickle.HIGHEST_PROTOCOL)


def _torch_name(module: str, name: str) -> tuple[str, str]:
    """``_read_global_instruction`` in torch/_weights_only_unpickler.py."""
    mapped = _compat_pickle.NAME_MAPPING.get((module, name))
    if mapped is not None:
        return mapped
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _known(resolved: Resolved) -> Category | None:
    known = classify(resolved)
    return None if known is None else known.category


def _safe_globals(analysis: Analysis, trust: Trust) -> list[SafeGlobal]:
    """The objects to allow, keyed by the name torch's restricted unpickler looks up for this file."""
    allowed: list[SafeGlobal] = []
    numpy_dtype = False
    for resolved in _globals(analysis):
        if _known(resolved) is not Category.SAFE and not trust.trusts(resolved):
            continue  # _check refused unknown globals; anything else named here torch refuses itself
        # torch looks globals up by the name as written (after its Python-2 mapping), which is `written` here.
        allowed.append((_import(resolved), resolved.written))
        numpy_dtype = numpy_dtype or (resolved.module, resolved.qualname) == _NUMPY_DTYPE
    if numpy_dtype:
        allowed.extend(_numpy_dtype_classes())
    return allowed


def _import(resolved: Resolved) -> Any:
    # Only reached for globals the scan judged safe or the policy trusts, after the scan passed.
    value: Any = importlib.import_module(resolved.module)
    for part in resolved.qualname.split("."):
        value = getattr(value, part)
    return value


def _numpy_dtype_classes() -> list[SafeGlobal]:
    """numpy's own dtype classes: what ``numpy.dtype(...)`` returns, and BUILD then targets.

    torch's restricted unpickler only BUILDs objects whose exact type is allowed, and since numpy 1.20
    ``numpy.dtype("f8")`` is an instance of a subclass (``numpy.dtypes.Float64DType``) that no pickle names.
    The set is closed (one class per builtin type code), so allowing it adds no foreign code.
    """
    import numpy  # type: ignore[import-not-found,unused-ignore]  # optional

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some type codes are deprecated aliases
        classes = {type(numpy.dtype(code)) for code in numpy.typecodes["All"]}
    return [(cls, f"{cls.__module__}.{cls.__qualname__}") for cls in sorted(classes, key=lambda c: c.__qualname__)]


def _restricted_message(exc: pickle.UnpicklingError) -> str:
    # torch's message ends by recommending weights_only=False, the one thing this function exists to avoid:
    # keep only its diagnosis.
    text = str(exc)
    marker = "WeightsUnpickler error:"
    at = text.find(marker)
    detail = text[at + len(marker) :].strip().split("\n\n")[0].strip() if at >= 0 else text.strip().splitlines()[0]
    return (
        f"torch's restricted unpickler cannot rebuild this file: {detail} "
        "(picklewarden never loads without that restriction; picklewarden.convert extracts the weights)"
    )
