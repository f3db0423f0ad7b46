"""Which parsing core is in use: the compiled ``_speedups`` extension, or the pure-Python reference.

``pip install`` compiles ``_speedups.c`` when the machine has a C compiler and Python's headers; without
them (or with ``PICKLEWARDEN_PURE_PYTHON=1`` set) the pure-Python loops run, which are the reference the
compiled ones are tested against. Callers read :data:`speedups` at call time, so tests can switch cores.
"""

from __future__ import annotations

import os

from picklewarden._typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Protocol

    from picklewarden.containers.zipentry import ZipEntry
    from picklewarden.pickle.layout import Searchable
    from picklewarden.pickle.program import Persistent

PURE_PYTHON_ENV = "PICKLEWARDEN_PURE_PYTHON"

Record = tuple[int, int, bytes, int, int, int, int, int, int, int, bytes, int, str | None, bool]
"""A central-directory record in ``ziprecords._Raw``'s field order."""


if TYPE_CHECKING:

    class Speedups(Protocol):
        """The functions ``_speedups.c`` defines (their contracts are in that file)."""

        def layout_chunk(
            self,
            data: Searchable,
            pos: int,
            count: int,
            chunk_end: int,
            proto: int,
            steps: bytes,
            actions: bytes,
            max_memo: int,
            highest_protocol: int,
            put_text: int,
            ext_signed: int,
            stop: int,
            imports: list[tuple[int, int, int]],
            calls: list[tuple[int, int]],
            builds: list[int],
            persistent: list[int],
            extensions: list[tuple[int, int]],
            frame_end: int,
            /,
        ) -> tuple[int, int, int, int, int, object]: ...

        def central_directory(
            self,
            data: object,
            cd_offset: int,
            cd_size: int,
            total: int,
            disk: int,
            size: int,
            usual_flags: int,
            entry_type: type | None,
            /,
        ) -> (
            tuple[list[Record], list[ZipEntry | None], list[bytes], list[int], bool, int, int, bool, bool, bool] | None
        ): ...

        def ordered_spans(self, entries: Sequence[ZipEntry], entry_type: type, /) -> bool | None: ...

        def entry_flags(self, entries: Sequence[ZipEntry], entry_type: type, folder: str, /) -> bytes | None: ...

        def fit_storages(
            self,
            statements: Sequence[Persistent],
            size_of: Callable[[object], int | None],
            folder: str,
            files: list[str],
            entries: list[ZipEntry],
            start: int,
            entry_type: type,
            /,
        ) -> bool | None: ...

        def storage_columns(
            self, statements: Sequence[Persistent], /
        ) -> tuple[list[str], list[object], list[int]] | None: ...

        def find_bytes(self, data: Searchable, needle: bytes, start: int, end: int, /) -> int: ...

        def configure(
            self,
            value: type,
            persistent: type,
            elided: type,
            global_: type,
            call_how_call: object,
            opnames: tuple[str | None, ...],
            slow_call: object,
            /,
        ) -> None: ...

        RecorderCore: type
        """Base of the machine's compiled recorder (``_speedups_machine.h``)."""
        StandinMeta: type
        """Metaclass base whose calls take the compiled elided path."""


def _load() -> Speedups | None:
    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return None
    try:
        from picklewarden import _speedups  # type: ignore[attr-defined,import-not-found,unused-ignore]
    except ImportError:
        return None
    return cast("Speedups", _speedups)  # the protocol above types its functions


speedups: Speedups | None = _load()
"""The compiled module, or None when the pure-Python reference runs."""


def core_name() -> str:
    """What ``picklewarden --version`` reports."""
    if speedups is not None:
        return "compiled C core"
    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return f"pure-Python core ({PURE_PYTHON_ENV} is set)"
    return "pure-Python core (the C extension is not built)"
