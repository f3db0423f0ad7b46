"""What the scan needs from :mod:`typing` at run time, without importing it.

Importing ``typing`` costs about 3 ms, a tenth of what a one-file scan spends starting up (issue 16). So the
modules a scan loads annotate lazily (``from __future__ import annotations``), import typing's names under
``TYPE_CHECKING`` only, and take the names they use at run time from here. Type checkers see typing's
own ``NamedTuple`` and ``cast``; at run time a record is a :func:`collections.namedtuple`, built the way
``typing.NamedTuple`` builds one, and ``cast`` returns its value as typing's does.
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
            record = collections.namedtuple(typename, fields, defaults=defaults, module=namespace["__module__"])
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
