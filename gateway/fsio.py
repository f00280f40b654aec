"""File-system access for hostile names: no symlinks, no devices, sizes known before reading."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from gateway.errors import InputFileError, UsageError


def open_regular(path: Path) -> tuple[BinaryIO, int]:
    """Open `path` for reading without following a final symlink; return the file and its size.

    Raises UsageError if nothing is there, InputFileError for a symlink, FIFO, device or folder.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UsageError(f"{str(path)!r} does not exist: check the file name") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputFileError(
                f"{str(path)!r} is a symbolic link: links are never followed, name the real file"
            ) from None
        raise InputFileError(f"{str(path)!r} cannot be opened: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise InputFileError(f"{str(path)!r} is not a regular file (a folder, FIFO or device): name a CSV file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), info.st_size
