"""The run-time stand-in for ``typing.NamedTuple`` (``picklewarden._typing``) builds the records typing does.

The scan's modules take ``NamedTuple`` from there so that a scan never imports ``typing`` (issue 16, start-up);
these tests hold it to typing's behaviour on what the package's records use.
"""

from __future__ import annotations

import collections
import copy
import pickle
import typing

import pytest

from picklewarden import _typing


def _define(base: type) -> type:
    class Span(base):
        """A half-open range."""

        start: int
        end: int = 0
        label: str = "x"

        kind = "span"  # a class attribute (no annotation): not a field

        @property
        def size(self) -> int:
            return int(self.end - self.start)

        def shifted(self, by: int) -> Span:
            return self._replace(start=self.start + by, end=self.end + by)

    return Span


RECORDS = {"shim": _define(_typing.NamedTuple), "typing": _define(typing.NamedTuple)}


class Pair(_typing.NamedTuple):
    """A module-level record: pickled by name, as the workers' reports are."""

    left: int
    right: str = ""


def test_the_shim_builds_what_typing_builds() -> None:
    ours, theirs = RECORDS["shim"], RECORDS["typing"]
    assert ours is not theirs and issubclass(ours, tuple)
    for cls in (ours, theirs):
        assert cls._fields == ("start", "end", "label")
        assert cls._field_defaults == {"end": 0, "label": "x"}
        assert list(cls.__annotations__) == ["start", "end", "label"]
        assert cls.__doc__ == "A half-open range."
        assert cls.__module__ == __name__
        assert cls.kind == "span"
        span = cls(2, 5)
        assert span == (2, 5, "x") and span.size == 3 and span.shifted(1) == (3, 6, "x")
        assert cls._make([1, 2, "y"]) == cls(1, end=2, label="y")
        assert span._asdict() == {"start": 2, "end": 5, "label": "x"}
        assert repr(span) == "Span(start=2, end=5, label='x')"
        assert not hasattr(span, "__dict__")  # slotted, like every namedtuple
        with pytest.raises(TypeError):
            cls()


def test_shim_records_pickle_by_name() -> None:
    pair = Pair(1, "b")
    again = pickle.loads(pickle.dumps(pair))
    assert type(again) is Pair and again == pair


@pytest.mark.parametrize("base", [_typing.NamedTuple, typing.NamedTuple], ids=["shim", "typing"])
def test_what_a_record_body_may_not_do(base: type) -> None:
    with pytest.raises(TypeError):

        class Late(base):
            a: int = 1
            b: int

    with pytest.raises(AttributeError):

        class Clash(base):
            a: int

            def _asdict(self) -> dict[str, int]:
                return {}


def test_the_shim_refuses_other_bases() -> None:
    with pytest.raises(TypeError):

        class Mixed(_typing.NamedTuple, dict):
            a: int


def test_cast_returns_its_value() -> None:
    marker = object()
    assert _typing.cast("int", marker) is marker
    assert _typing.TYPE_CHECKING is False


def test_assert_never_refuses_whatever_it_is_given() -> None:
    with pytest.raises(AssertionError, match="unhandled value: 3"):
        _typing.assert_never(3)  # type: ignore[arg-type]


# The records are built as collections.namedtuple builds them (one compiled constructor per field count rather
# than per class): the same class attributes, constructor, methods, errors, copying and pickling.
class Wide(_typing.NamedTuple):
    a: int
    b: object = None
    c: tuple[int, ...] = ()
    d: str = "d"


class Single(_typing.NamedTuple):
    only: int


class Empty(_typing.NamedTuple):
    pass


WideReference = collections.namedtuple("WideReference", "a b c d", defaults=(None, (), "d"))
SingleReference = collections.namedtuple("SingleReference", "only")
EmptyReference = collections.namedtuple("EmptyReference", "")


@pytest.mark.parametrize(
    ("ours", "theirs", "args"),
    [(Wide, WideReference, (1, [2], (3,), "x")), (Single, SingleReference, (7,)), (Empty, EmptyReference, ())],
    ids=["wide", "single", "empty"],
)
def test_records_behave_as_namedtuples(ours: type, theirs: type, args: tuple[object, ...]) -> None:
    assert ours._fields == theirs._fields and ours.__match_args__ == theirs.__match_args__
    assert ours._field_defaults == theirs._field_defaults
    assert ours.__new__.__defaults__ == theirs.__new__.__defaults__
    assert ours.__slots__ == theirs.__slots__ == () and ours.__mro__[1:] == (tuple, object)
    mine, reference = ours(*args), theirs(*args)
    assert tuple(mine) == tuple(reference) == args
    assert repr(mine) == repr(reference).replace("Reference", "")
    assert mine._asdict() == reference._asdict() and mine.__getnewargs__() == reference.__getnewargs__()
    assert ours._make(iter(args)) == mine and type(ours._make(args)) is ours
    for name, value in zip(ours._fields, args, strict=True):
        assert getattr(mine, name) is value
        assert getattr(ours, name).__doc__ == getattr(theirs, name).__doc__
        assert mine._replace(**{name: "new"}) == reference._replace(**{name: "new"})
        assert ours(**dict(zip(ours._fields, args, strict=True))) == mine
    for broken in (lambda cls: cls._make((*args, 0)), lambda cls: cls(*args, 0), lambda cls: cls(nope=1)):
        with pytest.raises(TypeError) as ours_error:
            broken(ours)
        with pytest.raises(TypeError):
            broken(theirs)
        assert "Reference" not in str(ours_error.value)
    with pytest.raises(ValueError, match="unexpected field names: \\['nope'\\]"):
        mine._replace(nope=1)
    assert copy.copy(mine) == mine and copy.deepcopy(mine) == mine
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        again = pickle.loads(pickle.dumps(mine, protocol))
        assert type(again) is ours and again == mine
    with pytest.raises(AttributeError):
        mine.extra = 1  # slotted: no instance dict


def test_positional_patterns_use_the_fields() -> None:
    match Wide(1, 2):
        case Wide(first, second, third, fourth):
            assert (first, second, third, fourth) == (1, 2, (), "d")
        case _:
            pytest.fail("a record's class pattern did not match it")


def test_a_wide_record_uses_its_defaults() -> None:
    assert Wide(1) == (1, None, (), "d") and Wide(1, d="z").d == "z"
    with pytest.raises(TypeError):
        Wide()


@pytest.mark.parametrize("name", ["_private", "class", "not an identifier"])
def test_field_names_namedtuple_refuses_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        body = {"__module__": __name__, "__annotations__": {name: "int"}}
        type(_typing.NamedTuple)("Bad", (_typing.NamedTuple,), body)
    with pytest.raises(ValueError):
        collections.namedtuple("Bad", [name])
