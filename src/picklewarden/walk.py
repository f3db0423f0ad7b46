"""Which files a scan covers: files named on the command line, and files found under named directories.

Walks follow symbolic links, but safely: a directory reached twice (a link loop) is walked once, and a
link whose target lies outside the tree being scanned is listed as skipped rather than followed -- except
the links a Hugging Face cache is made of, which point from ``snapshots/<revision>/`` into the same
repository's ``blobs/``. Inside such a cache, files are named the way people know them,
``org/name:path/in/repo`` (see :attr:`Target.location`), and ``blobs/`` itself is not walked a second time.

``include``/``exclude`` are glob patterns over the path relative to the walked directory: ``*`` and ``?``
stay within one path component, ``**`` spans components, ``[...]`` is a character class. A pattern
without ``/`` matches the file name in any directory (like ``.gitignore``). A directory matching an
exclude pattern is not entered. Files named explicitly are never filtered.
"""

from __future__ import annotations

import os
import re

from picklewarden._typing import TYPE_CHECKING, NamedTuple
from picklewarden.globs import glob_regex

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

_HF_REPO = re.compile(r"(models|datasets|spaces)--(.+)")
_HF_SKIP = frozenset({"blobs", "refs", ".no_exist"})


class Target(NamedTuple):
    """One file a scan considers."""

    path: str
    explicit: bool
    """Named by the caller (scanned whatever it is) rather than found in a directory."""
    location: str = ""
    """``org/name:file`` for a file in a Hugging Face cache snapshot (``datasets/org/name:file``...)."""
    revision: str = ""
    """The snapshot (commit) a Hugging Face cache file belongs to."""
    skip: str = ""
    """Why the file is listed but not scanned (a link leaving the tree, a dangling link)."""
    error: str = ""
    """Why part of the tree could not be walked (never reported as clean)."""


def matches(patterns: Sequence[str], relative: str) -> bool:
    """True when ``relative`` (a ``/``-separated path under the walked directory) matches a pattern."""
    name = relative.rsplit("/", 1)[-1]
    for pattern in patterns:
        pattern = pattern.removeprefix("./").lstrip("/").rstrip("/")
        subject = relative if "/" in pattern else name
        if pattern and glob_regex(pattern).match(subject):
            return True
    return False


def _inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives on Windows
        return False


def hf_location(path: str) -> tuple[str, str, str]:
    """(location, revision, repository directory) of a file inside a Hugging Face cache snapshot, else empty."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(len(parts) - 3, -1, -1):
        match = _HF_REPO.fullmatch(parts[i])
        if match is None or parts[i + 1] != "snapshots" or len(parts) < i + 4:
            continue
        kind, name = match.groups()
        repo = "/".join(name.split("--"))
        if kind != "models":
            repo = f"{kind}/{repo}"
        return f"{repo}:{'/'.join(parts[i + 3 :])}", parts[i + 2], os.sep.join(parts[: i + 1])
    return "", "", ""


def _is_hf_repo(directory: str) -> bool:
    return _HF_REPO.fullmatch(os.path.basename(directory)) is not None and os.path.isdir(
        os.path.join(directory, "snapshots")
    )


def walk(root: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Iterator[Target]:
    """Files under ``root`` in a stable (sorted, depth-first) order."""
    root_real = os.path.realpath(root)
    visited: set[tuple[int, int]] = set()
    pending: list[tuple[str, str]] = [(root, "")]  # paths are reported as the caller spelled the root
    while pending:
        directory, relative = pending.pop()
        try:
            stat = os.stat(directory)
            key = (stat.st_dev, stat.st_ino)
            if key in visited:
                continue  # reached again through a link: a loop, or a second name for the same directory
            visited.add(key)
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            yield Target(directory, False, error=f"cannot list directory: {exc.strerror or exc}")
            continue
        hf_repo = _is_hf_repo(directory)
        subdirs: list[tuple[str, str]] = []
        for entry in entries:
            path = entry.path
            child = f"{relative}/{entry.name}" if relative else entry.name
            try:
                if entry.is_symlink():
                    reason = _link_problem(path, root_real)
                    if reason:
                        yield Target(path, False, skip=reason)
                        continue
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError as exc:
                yield Target(path, False, error=f"cannot inspect: {exc.strerror or exc}")
                continue
            if is_dir:
                if matches(exclude, child) or (hf_repo and entry.name in _HF_SKIP):
                    continue  # a cache's blobs are reached, under their real names, through its snapshots
                subdirs.append((path, child))
            elif is_file and not matches(exclude, child) and (not include or matches(include, child)):
                location, revision, _ = hf_location(path)
                yield Target(path, False, location=location, revision=revision)
        pending.extend(reversed(subdirs))


def _link_problem(path: str, root_real: str) -> str:
    """Why a symbolic link must not be followed ('' when it may)."""
    target = os.path.realpath(path)
    if not os.path.exists(target):
        return f"dangling symbolic link to {os.readlink(path)!r}"
    if _inside(target, root_real):
        return ""
    _, _, repo = hf_location(path)
    if repo and _inside(target, os.path.realpath(os.path.join(repo, "blobs"))):
        return ""  # a Hugging Face snapshot file pointing into its own repository's blob store
    return f"symbolic link to {target} leaves the scanned tree: not followed"


def iter_targets(paths: Iterable[str], include: Sequence[str] = (), exclude: Sequence[str] = ()) -> Iterator[Target]:
    """Every file to consider: named files as they are, and files under named directories."""
    for path in paths:
        if os.path.isdir(path):
            yield from walk(path, include, exclude)
        else:
            location, revision, _ = hf_location(path)
            yield Target(path, True, location=location, revision=revision)
