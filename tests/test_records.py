"""The run-time stand-in for ``typing.NamedTuple`` (``picklewarden._typing``) builds the records typing does.

The scan's modules take ``NamedTuple`` from there so that a scan never imports ``typing`` (issue 16, start-up);
these tests hold it to typing's behaviour on what the package's records use.
"""

from __future__ import annotations

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
