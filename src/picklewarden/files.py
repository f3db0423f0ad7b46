"""Opening scanned files without ever blocking on them."""

from __future__ import annotations

import errno
import os
import stat

from picklewarden._typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import BinaryIO

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for binary reading, or OSError when it is not a regular file.

    A FIFO named on the command line would block ``open`` (and then every read) until a writer appears,
    hanging the scan; devices never end. O_NONBLOCK makes the open itself return at once, and anything
    that is not a regular file is refused before a byte is read.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise OSError(errno.EINVAL, f"not a regular file ({kind})", os.fspath(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
