"""Small shims so the package runs on every Python it declares (3.10+)."""

from __future__ import annotations

import sys
from typing import NoReturn

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover - exercised on 3.10 only

    def assert_never(value: NoReturn, /) -> NoReturn:
        """Exhaustiveness check for ``match`` over enums (typing.assert_never arrived in 3.11)."""
        raise AssertionError(f"unhandled value: {value!r}")


__all__ = ["assert_never"]
