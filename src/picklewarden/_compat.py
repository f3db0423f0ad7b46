"""Small shims so the package runs on every Python it declares (3.10+)."""

from __future__ import annotations

from picklewarden._typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import NoReturn


def assert_never(value: NoReturn, /) -> NoReturn:
    """Exhaustiveness check for ``match`` over enums: typing.assert_never arrived in 3.11, and importing
    typing at run time costs a scan's start-up about 3 ms (see ``_typing``)."""
    raise AssertionError(f"unhandled value: {value!r}")


__all__ = ["assert_never"]
