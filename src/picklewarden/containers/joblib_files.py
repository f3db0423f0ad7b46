"""joblib files: a pickle whose numpy arrays are written as raw bytes in the middle of the opcode stream.

``joblib.dump`` pickles each array as a ``NumpyArrayWrapper`` (class, then a BUILD with shape, dtype,
order and alignment) and writes the array's bytes right after that BUILD: an alignment byte, padding and
the raw data, or, for object arrays, a whole second pickle. ``joblib.load`` reads the file with the
pure-Python ``pickle._Unpickler`` and, after every BUILD that leaves a wrapper on the stack, reads those
bytes straight from the file. A scanner that reads the stream as one pickle either breaks at the first
array or, worse, executes attacker-chosen array bytes as opcodes while joblib skips them (and skips
opcodes the scanner takes for data).

So the stream is first walked exactly as joblib walks it: ``pickle._Unpickler`` itself, with ``find_class``
answering inert stand-ins and BUILD replaced by joblib's logic over those stand-ins (nothing is imported
or called). The walk yields where joblib's direct reads fall. The opcode stream with those spans cut out
is then what the scanner runs, offsets mapped back to the file; object-array pickles are scanned as the
separate pickles they are. The dtype arithmetic follows numpy's own ``dtype.__setstate__`` (flags from
the pickle decide ``hasobject``), and anything not understood stops the walk with an error.
"""

from __future__ import annotations

import io
import pickle
import re
from dataclasses import dataclass, field

from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.base import Anomaly, OffsetMap, PickleSource, Stacking
from picklewarden.errors import LimitExceeded
from picklewarden.knowledge.joblib_compat import ARRAY_WRAPPER as WRAPPER
from picklewarden.limits import Limits
from picklewarden.model import Severity
from picklewarden.pickle.names import remap
from picklewarden.pickle.pymachine import ClampedReader, load_bytearray8, read_extension, resolve_extension

if TYPE_CHECKING:
    from typing import Any, NoReturn

JOBLIB_WRAPPERS = frozenset({f"{package}.numpy_pickle.{WRAPPER}" for package in ("joblib", "sklearn.externals.joblib")})
"""The wrapper classes joblib's unpickler (or scikit-learn's vendored copy) checks for with isinstance."""
_WRAPPER_INIT = ("subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes")
_WRAPPER_DEFAULTS = {"allow_mmap": False, "numpy_array_alignment_bytes": 16}
_DTYPE_MODULES = frozenset({"numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core._multiarray_umath"})
_NEW_HELPERS = frozenset({("copyreg", "_reconstructor"), ("copyreg", "__newobj__"), ("copyreg", "__newobj_ex__")})
_TYPESTR = re.compile(r"([<>|=]?)([?bBiufcOSUVaMm])(\d*)(?:\[\w+\])?")
_FIXED_SIZES = {"b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (2, 4, 8, 12, 16), "c": (8, 16, 24, 32)}
_INT64 = 1 << 64


class _Unsupported(Exception):
    """The walk met something joblib would read but this module cannot follow (the scan is incomplete)."""


class _Stop(Exception):
    """joblib itself fails here: nothing after this point runs."""


@dataclass(eq=False)
class _Info:
    kind: str
    """'global', 'call' or 'new'."""
    module: str = ""
    name: str = ""
    callee: Any = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    states: list[Any] = field(default_factory=list)


class _Meta(type):
    """Stand-ins are classes, so every opcode a real object could satisfy (NEWOBJ needs a type) works."""

    _pw: _Info

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return _standin(_Info("call", callee=cls, args=args, kwargs=kwargs))

    def __setitem__(cls, key: Any, value: Any) -> None:
        return None

    def append(cls, value: Any) -> None:
        return None

    def extend(cls, values: Any) -> None:
        return None

    def add(cls, value: Any) -> None:
        return None


class _Base(metaclass=_Meta):
    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return _standin(_Info("new", callee=cls, args=args, kwargs=kwargs))


def _standin(info: _Info) -> Any:
    return _Meta("standin", (_Base,), {"_pw": info})


def _info(value: Any) -> _Info | None:
    if type(value) is _Meta:
        info: _Info = value._pw
        return info
    return None


def _global(value: Any) -> tuple[str, str] | None:
    info = _info(value)
    return (info.module, info.name) if info is not None and info.kind == "global" else None


@dataclass
class _Spans:
    raw: list[tuple[int, int]] = field(default_factory=list)
    """File spans joblib reads directly (padding and array bytes, object-array pickles)."""
    nested: list[int] = field(default_factory=list)
    """Start of each object-array pickle."""
    anomalies: list[Anomaly] = field(default_factory=list)
    wrappers: set[str] = field(default_factory=set)
    canonical: bool = True


class _Walker(pickle._Unpickler):
    """``pickle._Unpickler`` (what joblib runs) over inert stand-ins, with joblib's BUILD hook."""

    # Set by pickle._Unpickler.load(); typeshed does not declare them.
    stack: list[Any]
    proto: int
    read: Any
    readinto: Any
    append: Any

    def __init__(self, stream: ClampedReader, limits: Limits, spans: _Spans, member: str, arrays: bool) -> None:
        super().__init__(stream, fix_imports=True, encoding="latin1")
        self._stream = stream
        self._limits = limits
        self._spans = spans
        self._member = member
        self._arrays = arrays
        self._count = 0
        table: dict[int, Any] = dict(pickle._Unpickler.dispatch)
        table[pickle.BUILD[0]] = _Walker._load_build
        table[pickle.PERSID[0]] = table[pickle.BINPERSID[0]] = _Walker._no_persistent
        table[pickle.NEXT_BUFFER[0]] = table[pickle.READONLY_BUFFER[0]] = _Walker._no_buffers
        table[pickle.BYTEARRAY8[0]] = _Walker._load_bytearray8
        for code in (pickle.EXT1[0], pickle.EXT2[0], pickle.EXT4[0]):
            # pickle's own handler writes what find_class returns into copyreg's process-wide cache.
            table[code] = _ext_handler(code)
        limit = limits.max_opcodes

        def counted(handler: Any) -> Any:
            def run(walker: _Walker) -> None:
                walker._count += 1
                if walker._count > limit:
                    raise _Unsupported(str(LimitExceeded("opcodes", limit, walker._count)))
                handler(walker)

            return run

        # load() looks the table up on the instance: every opcode goes through the counter.
        self.dispatch = {code: counted(handler) for code, handler in table.items()}  # type: ignore[misc]

    def find_class(self, module: str, name: str) -> Any:
        module, name, _ = remap(module, name, self.proto)
        return _standin(_Info("global", module=module, name=name))

    def _no_persistent(self) -> NoReturn:
        raise _Stop("joblib's unpickler has no persistent_load")

    def _no_buffers(self) -> NoReturn:
        raise _Stop("joblib's unpickler has no out-of-band buffers")

    def _load_bytearray8(self) -> None:
        # pickle's own version allocates bytearray(length) before reading: check the length first.
        load_bytearray8(self, self._stream.total)

    def _load_build(self) -> None:
        stack = self.stack
        state = stack.pop()
        if not stack:
            raise _Stop("BUILD on an empty stack")
        info = _info(stack[-1])
        if info is None:
            return
        info.states.append(state)
        if self._arrays and len(info.states) == 1 and self._is_wrapper(info):
            self._read_array(info, state)
            stack[-1] = _standin(_Info("call", module="numpy", name="ndarray"))

    def _is_wrapper(self, info: _Info) -> bool:
        callee = _global(info.callee)
        if info.kind == "call" and callee in _NEW_HELPERS and info.args:
            wrapped = _global(info.args[0])
            if wrapped is not None and wrapped[1].rsplit(".", 1)[-1] == WRAPPER:
                self._spans.wrappers.add(".".join(wrapped))
                return True
            return False
        if callee is None or callee[1].rsplit(".", 1)[-1] != WRAPPER:
            return False
        self._spans.wrappers.add(".".join(callee))
        if info.kind != "new" or info.args or info.kwargs:
            self._spans.canonical = False
        return True

    # -- joblib's NumpyArrayWrapper.read ---------------------------------------------------------------

    def _attributes(self, info: _Info, state: Any) -> dict[Any, Any]:
        attrs: dict[Any, Any] = {}
        if info.kind == "call" and _global(info.callee) not in _NEW_HELPERS:
            if len(info.args) > len(_WRAPPER_INIT) or set(info.kwargs) - set(_WRAPPER_INIT):
                raise _Stop("NumpyArrayWrapper called with arguments its __init__ rejects")
            attrs.update(_WRAPPER_DEFAULTS)
            attrs.update(zip(_WRAPPER_INIT, info.args, strict=False))
            attrs.update(info.kwargs)
        slots: Any = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
        for part in (state, slots):
            if not part:
                continue
            if not isinstance(part, dict):
                # A real object with items() would do for joblib; a stand-in cannot say what it holds.
                raise _Unsupported("wrapper state is not a plain dict")
            attrs.update(part)
        return attrs

    def _read_array(self, info: _Info, state: Any) -> None:
        attrs = self._attributes(info, state)
        if "shape" not in attrs or "dtype" not in attrs:
            raise _Stop("wrapper state lacks shape or dtype")
        count = _count(attrs["shape"])
        itemsize, hasobject = self._dtype(attrs["dtype"])
        start = self._stream.tell()
        if hasobject:
            self._spans.nested.append(start)
            inner = _Walker(self._stream, self._limits, self._spans, self._member, arrays=False)
            try:
                inner.load()
            except (_Unsupported, _Stop):
                raise
            except Exception as exc:  # noqa: BLE001 - the pure-Python unpickler raises many types
                self._spans.raw.append((start, self._stream.tell()))
                raise _Stop(f"object-array pickle breaks: {type(exc).__name__}: {exc}") from None
            self._spans.raw.append((start, self._stream.tell()))
            return
        if attrs.get("numpy_array_alignment_bytes") is not None:
            pad = self._stream.read(1)
            if len(pad) == 1 and pad[0]:
                self._stream.read(pad[0])
        total = count * itemsize
        end = self._stream.tell() + total
        size = self._stream.seek(0, io.SEEK_END)
        if end > size:
            self._spans.raw.append((start, size))
            raise _Stop(f"array data of {total} bytes runs past the end of the stream")
        self._stream.seek(end)
        self._spans.raw.append((start, end))

    def _dtype(self, value: Any) -> tuple[int, bool]:
        """(itemsize, hasobject) of a pickled numpy dtype, as numpy's __setstate__ leaves them."""
        info = _info(value)
        callee = _global(info.callee) if info is not None else None
        if info is None or callee is None or callee[1] != "dtype" or callee[0] not in _DTYPE_MODULES:
            raise _Unsupported("array dtype is not a pickled numpy.dtype")
        typestr = info.args[0] if info.args else None
        match = _TYPESTR.fullmatch(typestr) if isinstance(typestr, str) else None
        if match is None:
            raise _Unsupported(f"numpy dtype spelling {typestr!r} is not understood")
        kind, digits = match.group(2), match.group(3)
        state = info.states[-1] if info.states else None
        if state is not None and (not isinstance(state, tuple) or not 5 <= len(state) <= 9):
            raise _Unsupported("numpy dtype state has an unknown layout")
        flagged: bool | None = None
        has_fields = False
        if state is not None and len(state) >= 8:
            version, flags = state[0], state[7]
            if type(version) is not int or type(flags) is not int:
                raise _Stop("numpy dtype state is malformed")
            has_fields = state[2] is not None or state[4] is not None
            if version >= 3:
                flagged = bool(flags & 1)
            elif flags or kind == "O":
                # Below version 3 numpy recomputes the flags (_descr_find_object): any flag bit set in the
                # state, or an object kind, makes the whole dtype an object dtype.
                flagged = True
            elif has_fields:
                raise _Unsupported("numpy dtype state below version 3 with fields: its fields decide object-ness")
        elif state is not None and len(state) >= 6 and any(v is not None for v in state[2:4]):
            raise _Unsupported("old numpy dtype pickle with fields")
        if kind in "SUVa":
            elsize = state[5] if state is not None and len(state) >= 7 else None
            if isinstance(elsize, int) and elsize >= 0:
                itemsize = elsize
            elif digits:
                itemsize = int(digits) * (4 if kind == "U" else 1)
            else:
                raise _Unsupported(f"size of numpy dtype {typestr!r} is not known")
        elif kind in "?":
            itemsize = 1
        elif kind in "MmO":
            itemsize = 8
        else:
            size = int(digits or 0)
            if size not in _FIXED_SIZES[kind]:
                raise _Unsupported(f"numpy dtype {typestr!r} has an unknown size")
            itemsize = size
        hasobject = flagged if flagged is not None else kind == "O"
        if (kind == "O") != hasobject and not has_fields:
            what = (
                "object dtype without the object flag: numpy takes raw bytes from the file as object pointers"
                if kind == "O"
                else f"{typestr!r} dtype carrying the object flag: joblib unpickles what follows instead of "
                "reading numbers"
            )
            self._spans.anomalies.append(Anomaly("PW314", self._member or None, self._stream.tell(), what))
        return itemsize, hasobject


def _ext_handler(code_byte: int) -> Any:
    def run(walker: _Walker) -> None:
        resolve_extension(walker, read_extension(walker, code_byte))

    return run


def _count(shape: Any) -> int:
    """Element count as joblib computes it: a product of int64 values, which wraps silently."""
    if not isinstance(shape, (tuple, list)) or not all(type(x) in (int, bool) for x in shape):
        # numpy.int64() also accepts floats and digit strings: do not guess what joblib makes of them.
        raise _Unsupported("array shape is not a sequence of plain integers")
    total = 1
    for dim in shape:
        if not -(1 << 63) <= dim < 1 << 63:
            raise _Stop("array dimension overflows int64")
        total = (total * int(dim)) % _INT64
    if total >= 1 << 63:
        total -= _INT64
    if total < 0:
        raise _Stop("negative array size")
    return total


@dataclass(frozen=True)
class JoblibView:
    """The pickles joblib.load runs from one stream."""

    sources: tuple[PickleSource, ...]
    anomalies: tuple[Anomaly, ...] = ()
    error: str | None = None
    divergence: int | None = None
    """Where joblib's reading first differs from pickle.load's (start of the first array's bytes)."""


def joblib_view(source: PickleSource, limits: Limits) -> JoblibView | None:
    """Walk ``source`` as joblib.load does; None when no array wrapper changes how it is read."""
    data = source.data
    stream = ClampedReader(data)
    stream.seek(source.start)
    spans = _Spans()
    walker = _Walker(stream, limits, spans, source.member, arrays=True)
    error: str | None = None
    notes: list[Anomaly] = []
    try:
        walker.load()
    except _Unsupported as exc:
        error = f"{source.member or 'stream'}: joblib's reading cannot be followed past offset {stream.tell()}: {exc}"
    except _Stop as exc:
        notes.append(
            Anomaly("PW300", source.member or None, stream.tell(), f"joblib.load fails here: {exc}", Severity.INFO)
        )
    except Exception as exc:  # noqa: BLE001 - the pure-Python unpickler raises many types on a broken stream
        notes.append(
            Anomaly(
                "PW300",
                source.member or None,
                stream.tell(),
                f"joblib.load fails here: {type(exc).__name__}: {exc}",
                Severity.INFO,
            )
        )
    if not spans.raw:
        return None if error is None else JoblibView((), (), error)
    kept: list[bytes] = []
    spliced: list[int] = []
    original: list[int] = []
    position, length = 0, 0
    for start, end in sorted(spans.raw):
        if start > position:
            spliced.append(length)
            original.append(position)
            kept.append(bytes(data[position:start]))
            length += start - position
        position = max(position, end)
    spliced.append(length)
    original.append(position)
    kept.append(bytes(data[position:]))
    # Only joblib's own class, as joblib itself instantiates it: NumpyUnpickler reads array bytes after an
    # instance of that very class, so a look-alike elsewhere, or any attribute of the class, is not vouched.
    vouched = frozenset(spans.wrappers & JOBLIB_WRAPPERS) if spans.canonical else frozenset()
    outer = PickleSource(
        source.member,
        b"".join(kept),
        Stacking.ONE,
        True,
        start=source.start,
        vouched=vouched,
        origin=OffsetMap(tuple(spliced), tuple(original)),
        label="joblib",
        python=True,
    )
    inner = tuple(
        PickleSource(source.member, data, Stacking.ONE, True, start=start, label="joblib object array", python=True)
        for start in spans.nested
    )
    return JoblibView((outer, *inner), (*spans.anomalies, *notes), error, min(s for s, _ in spans.raw))
