"""What the scan needs from :mod:`typing` at run time, without importing it.

Importing ``typing`` costs about 3 ms, a tenth of what a one-file scan spends starting up (issue 16). So the
modules a scan loads annotate lazily (``from __future__ import annotations``), import typing's names under
``TYPE_CHECKING`` only, and take the names they use at run time from here. Type checkers see typing's
own ``NamedTuple`` and ``cast``; ``cast`` returns its value as typing's does.

At run time a record is the tuple subclass :func:`collections.namedtuple` makes, from the class body the way
``typing.NamedTuple`` reads one. It is built here rather than by ``namedtuple``, which compiles a constructor
for every class: about 80 us each, 2 ms for the 22 records a scan defines. Here one constructor is compiled
per number of fields and given each class's field names (tests/test_records.py holds the two to the same
behaviour).
"""

from __future__ import annotations

TYPE_CHECKING = False
"""False at run time; type checkers treat any name ``TYPE_CHECKING`` as true."""

if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
    from typing import NoReturn
    from typing import cast as cast
else:
    import collections
    from keyword import iskeyword
    from operator import itemgetter

    # namedtuple's field accessor (a C descriptor), or what its pure-Python fallback uses.
    _field = getattr(collections, "_tuplegetter", lambda index, doc: property(itemgetter(index), doc=doc))
    _constructors = {}  # number of fields -> the code of a compiled constructor for that many

    def _constructor_code(count):
        # Only a count goes into the compiled text (field names are set on the code object afterwards), and
        # only the package's own record definitions reach here: nothing from a scanned file is compiled.
        code = _constructors.get(count)
        if code is None:
            names = "".join(f"_{index}, " for index in range(count))
            source = f"lambda _cls, {names}: _tuple_new(_cls, ({names}))"
            code = _constructors[count] = eval(source, {"_tuple_new": tuple.__new__}).__code__
        return code

    @classmethod
    def _make(cls, iterable):
        """Make a new record from a sequence or iterable of its fields' values."""
        result = tuple.__new__(cls, iterable)
        if len(result) != len(cls._fields):
            raise TypeError(f"Expected {len(cls._fields)} arguments, got {len(result)}")
        return result

    def _replace(self, /, **changes):
        """Return a new record with the given fields replaced by new values."""
        result = self._make(map(changes.pop, self._fields, self))
        if changes:
            raise ValueError(f"Got unexpected field names: {list(changes)!r}")
        return result

    def __repr__(self):
        return f"{self.__class__.__name__}({', '.join(f'{n}={v!r}' for n, v in zip(self._fields, self, strict=True))})"

    def _asdict(self):
        """Return a new dict which maps field names to their values."""
        return dict(zip(self._fields, self, strict=True))

    def __getnewargs__(self):
        """Return self as a plain tuple (for copy and pickle)."""
        return tuple(self)

    def _record(typename, fields, defaults, module):
        """What ``collections.namedtuple(typename, fields, defaults=defaults, module=module)`` returns."""
        for name in fields:
            if not name.isidentifier() or iskeyword(name) or name.startswith("_"):
                raise ValueError(f"{typename}: {name!r} cannot name a record field")
        if len(set(fields)) != len(fields):
            raise ValueError(f"{typename}: a field name is repeated")
        code = _constructor_code(len(fields)).replace(co_varnames=("_cls", *fields), co_name="__new__")
        new = type(_make.__func__)(code, {"_tuple_new": tuple.__new__, "__builtins__": {}}, "__new__")
        new.__defaults__ = tuple(defaults) or None
        namespace = {
            "__doc__": f"{typename}({', '.join(fields)})",
            "__slots__": (),
            "_fields": fields,
            "_field_defaults": dict(zip(fields[len(fields) - len(defaults) :], defaults, strict=True)),
            "__new__": new,
            "_make": _make,
            "_replace": _replace,
            "__repr__": __repr__,
            "_asdict": _asdict,
            "__getnewargs__": __getnewargs__,
            "__match_args__": fields,
            "__module__": module,
        }
        for index, name in enumerate(fields):
            namespace[name] = _field(index, f"Alias for field number {index}")
        return type(typename, (tuple,), namespace)

    # What typing.NamedTuple refuses to let a class body replace, and what it does not copy from one.
    _PROHIBITED = frozenset(
        {"__new__", "__init__", "__slots__", "__getnewargs__", "_fields", "_field_defaults", "_make", "_replace"}
        | {"_asdict", "_source"}
    )
    _SPECIAL = frozenset({"__module__", "__name__", "__annotations__"})

    class _RecordMeta(type):
        def __new__(mcls, typename, bases, namespace):
            if not bases:  # the base class below
                return super().__new__(mcls, typename, bases, namespace)
            if bases != (NamedTuple,):
                raise TypeError(f"{typename}: a record has no base but NamedTuple")
            # Annotations are strings (PEP 563) and only their names matter here: no string is evaluated.
            annotations = namespace.get("__annotations__", {})
            fields = tuple(annotations)
            defaults = [namespace[name] for name in fields if name in namespace]
            for name in fields[: len(fields) - len(defaults)]:
                if name in namespace:
                    raise TypeError(f"{typename}: field {name!r} without a default follows one with a default")
            record = _record(typename, fields, defaults, namespace["__module__"])
            record.__annotations__ = dict(annotations)
            for key, value in namespace.items():
                if key in _PROHIBITED:
                    raise AttributeError(f"{typename}: cannot overwrite the record attribute {key}")
                if key not in _SPECIAL and key not in fields:
                    setattr(record, key, value)
            return record

    class NamedTuple(metaclass=_RecordMeta):
        """Base of a record class: ``class Span(NamedTuple): start: int; end: int``."""

    def cast(typ, value, /):
        """Return ``value`` unchanged, as :func:`typing.cast` does at run time."""
        return value


def assert_never(value: NoReturn, /) -> NoReturn:
    """Exhaustiveness check for ``match`` over enums, as :func:`typing.assert_never` (3.11+) does."""
    raise AssertionError(f"unhandled value: {value!r}")


__all__ = ["TYPE_CHECKING", "NamedTuple", "assert_never", "cast"]
