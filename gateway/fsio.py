"""File-system access for hostile names: no symlinks, no devices, sizes known before reading."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import resource
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from gateway.errors import InputFileError, UsageError


def disable_core_dumps() -> None:
    """Set this process's core file limit to 0, soft and hard: it can never dump core again, nor its children.

    A core dump holds the memory of a process that has had plaintext, passwords and keys in it (one
    SIGABRT core held 1,591 copies of a surname). Lowering the hard limit cannot be undone without
    privilege, on purpose. Under systemd LimitCORE=0 has done it already, and nothing is called:
    the unit's SystemCallFilter= denies setrlimit(2) (glibc uses prlimit64(2), which it allows).
    """
    if resource.getrlimit(resource.RLIMIT_CORE) != (0, 0):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


PRIVATE_UMASK = 0o077


@contextmanager
def private_umask() -> Iterator[None]:
    """Within, whatever this process creates is its owner's alone (umask 077); the caller's umask is given back.

    Every write and mkdir of the gateway asks for 0600 or 0700 itself; this also covers what
    libraries create, whatever umask the admin's shell or a cron job hands the gateway. Given back
    on exit for an in-process caller (the tests); a console command exits anyway.
    """
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def private_dirs(path: Path) -> Path:
    """Create `path` and every missing parent with mode 0700, as `mkdir -p` would; return `path`.

    Path.mkdir(parents=True) gives the parents the default mode (0777 less the umask): under umask
    000 the inbox/ it made was open to everyone. The umask can only narrow 0700. An existing folder
    is left as it is (an agency's ACL shows in its group bits). Raises FileExistsError if `path` is
    not a folder, OSError if it cannot be made.
    """
    try:
        path.mkdir(mode=0o700)
    except FileNotFoundError:
        if path.parent == path:
            raise
        private_dirs(path.parent)
        path.mkdir(mode=0o700, exist_ok=True)
    except FileExistsError:
        if not path.is_dir():
            raise
    return path


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


def fsync_dir(folder: Path) -> None:
    """Make a rename or link inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_target(path: Path, mode: int = 0o600) -> Iterator[Path]:
    """Yield a private temp path beside `path`; on success fsync it and rename it over `path`.

    On an exception the temp file is removed and `path` is untouched: a reader never sees a
    half-written file.
    """
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(name)
    try:
        os.fchmod(fd, mode)
        os.close(fd)
        yield temp
        with temp.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(temp, path)
        fsync_dir(path.parent)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` atomically and durably (temp file, fsync, rename, fsync folder)."""
    with atomic_target(path, mode) as temp, temp.open("wb") as handle:
        handle.write(data)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the (private, created if needed) lock file `path`, waiting for it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


HASH_CHUNK = 1 << 20


def sha256_of(stream: BinaryIO) -> str:
    """The SHA-256 (hex) of a whole open file, read from its start in chunks."""
    stream.seek(0)
    digest = hashlib.sha256()
    while chunk := stream.read(HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """The SHA-256 (hex) of the file at `path`."""
    with path.open("rb") as handle:
        return sha256_of(handle)
