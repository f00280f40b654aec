"""File-system access for hostile names: no symlinks, no devices, sizes known before reading."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import io
import os
import resource
import secrets
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO

from gateway.adapters.perms import share_file
from gateway.core.errors import ChangedError, InputFileError, UnreadableError, UsageError


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
    fd, size = _open_regular_fd(path, None)
    return os.fdopen(fd, "rb"), size


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


# ----------------------------------------------------------------------------------------- one open file


def read_chunks(fd: int) -> Iterator[bytes]:
    """The whole of the open file `fd` from its start, in chunks, by pread (its offset is left alone)."""
    offset = 0
    while chunk := os.pread(fd, HASH_CHUNK, offset):
        offset += len(chunk)
        yield chunk


def sha256_fd(fd: int) -> str:
    """The SHA-256 (hex) of the whole of the open file `fd`."""
    digest = hashlib.sha256()
    for chunk in read_chunks(fd):
        digest.update(chunk)
    return digest.hexdigest()


_LEASE_RDLCK, _LEASE_UNLCK = getattr(fcntl, "F_RDLCK", 0), getattr(fcntl, "F_UNLCK", 2)
_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)


class OpenFile:
    """A file opened once (no final symlink, a regular file, its size known) and read only through here.

    Every read starts at the beginning and is hashed. The first complete read fixes the file's SHA-256
    and length; a later complete read that differs raises ChangedError. So each consumer (the
    signature check, the validator, every encryption) gets a read of its own, and all of them saw the
    same bytes: a write into the file while the gateway works on it is caught, never passed on.
    Nothing is ever read by name again.
    """

    def __init__(self, fd: int, size: int, name: str) -> None:
        self.fd, self.size, self.name = fd, size, name
        self.digest: str | None = None
        self.length: int | None = None
        self.complete_reads = 0
        info = os.fstat(fd)
        self.identity = (info.st_dev, info.st_ino)

    def chunks(self, *, compare: bool = True) -> Iterator[bytes]:
        """One complete read of the file, in chunks (raises ChangedError at the end if it differs, unless
        `compare` is False: for keeping a rejected file as it now is)."""
        digest, length = hashlib.sha256(), 0
        for chunk in read_chunks(self.fd):
            digest.update(chunk)
            length += len(chunk)
            yield chunk
        if compare:
            self._complete(digest.hexdigest(), length)

    def stream(self) -> BinaryIO:
        """A binary stream over the file for a consumer that reads (and may seek back to 0)."""
        return io.BufferedReader(_Stream(self), HASH_CHUNK)

    @staticmethod
    def read_through(stream: BinaryIO) -> bool:
        """Whether `stream` (from `stream()`) made a complete, checked read of the file.

        Per stream, not `complete_reads`: other readers (encryptions in threads) may complete reads
        of the same file meanwhile, and must not vouch for this one.
        """
        raw = getattr(stream, "raw", None)
        return isinstance(raw, _Stream) and raw.completed

    def hash(self) -> str:
        """Read the whole file once (if no read has yet) and return its SHA-256."""
        if self.digest is None:
            for _ in self.chunks():
                pass
        assert self.digest is not None  # noqa: S101 (set by the complete read)
        return self.digest

    def writer_active(self) -> bool | None:
        """Whether another process holds the file open for writing: True, False, or None (cannot tell:
        a read lease needs the file's owner or CAP_LEASE, and some file systems have no leases)."""
        try:
            fcntl.fcntl(self.fd, _SETLEASE, _LEASE_RDLCK)
        except BlockingIOError:
            return True
        except OSError:
            return None
        fcntl.fcntl(self.fd, _SETLEASE, _LEASE_UNLCK)
        return False

    def _complete(self, digest: str, length: int) -> None:
        self.complete_reads += 1
        if self.digest is None:
            self.digest, self.length = digest, length
        elif (digest, length) != (self.digest, self.length):
            raise ChangedError(
                f"{self.name!r} changed while the gateway was reading it (another program wrote to it): "
                "nothing was delivered; let the export finish, then submit it again"
            )

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> OpenFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class _Stream(io.RawIOBase):
    """A read of an OpenFile as a raw stream; a complete read from offset 0 is checked like chunks()."""

    def __init__(self, file: OpenFile) -> None:
        super().__init__()
        self.file = file
        self.position = 0
        self.digest: Any = hashlib.sha256()  # None once a seek elsewhere broke the contiguous read
        self.completed = False  # a complete read from 0 was checked against the file's first

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = {os.SEEK_SET: offset, os.SEEK_CUR: self.position + offset}.get(whence)
        if target is None:
            target = os.fstat(self.file.fd).st_size + offset
        if target == 0:
            self.digest = hashlib.sha256()
        elif target != self.position:
            self.digest = None
        self.position = target
        return target

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        chunk = os.pread(self.file.fd, len(view), self.position)
        view[: len(chunk)] = chunk
        if self.digest is not None:
            if chunk:
                self.digest.update(chunk)
            else:
                digest, self.digest = self.digest.hexdigest(), None
                self.file._complete(digest, self.position)
                self.completed = True
        self.position += len(chunk)
        return len(chunk)


def open_once(path: Path, *, dir_fd: int | None = None) -> OpenFile:
    """Open `path` (relative to `dir_fd` if given) as an OpenFile; raise as open_regular does."""
    fd, size = _open_regular_fd(path, dir_fd)
    return OpenFile(fd, size, path.name)


def _open_regular_fd(path: Path, dir_fd: int | None) -> tuple[int, int]:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise UsageError(f"{str(path)!r} does not exist: check the file name") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputFileError(
                f"{str(path)!r} is a symbolic link: links are never followed, name the real file"
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise UnreadableError(f"{str(path)!r} cannot be opened: {exc.strerror}") from None
        raise InputFileError(f"{str(path)!r} cannot be opened: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise InputFileError(f"{str(path)!r} is not a regular file (a folder, FIFO or device): name a CSV file")
    os.set_blocking(fd, True)
    return fd, info.st_size


# ----------------------------------------------------------------------------------------- folders by descriptor

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def idle_seconds(entry: Path | os.DirEntry[str]) -> float:
    """Seconds since the entry itself (a link is not followed) last changed; 0 if it is gone."""
    try:
        return time.time() - entry.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return 0.0


def temp_name(name: str) -> str:
    """A new name for a temp file of `name` (hidden; swept by recovery when a writer is killed)."""
    return f".{name[:200]}.{secrets.token_hex(4)}.tmp"


class Folder:
    """A folder opened without following a symbolic link at any step below a trusted base; every
    operation is relative to its descriptor, so swapping a folder on the way for a link (to a place
    outside the root) after the check changes nothing: the gateway keeps working in the folder it
    opened."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    @classmethod
    def open(cls, base: Path, *names: str, create: bool = False) -> Folder:
        """Open `base` (trusted: the root), then each of `names` below it, refusing links; with `create`,
        make the missing ones (mode 0700). Raises UsageError if one is missing, InputFileError if one is
        a link or not a folder."""
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        path = base
        for name in names:
            path = path / name
            fd = _step(fd, name, path, create)  # closes the descriptor it is given, whatever happens
        return cls(fd, path)

    def sub(self, name: str, *, create: bool = False) -> Folder:
        """The folder `name` inside this one (no link followed); raise as `open`."""
        return Folder(_step(os.dup(self.fd), name, self.path / name, create), self.path / name)

    def entries(self) -> list[os.DirEntry[str]]:
        """What is in the folder now (names as the OS gives them: not always valid UTF-8)."""
        with os.scandir(self.fd) as listing:
            return list(listing)

    def open_file(self, name: str) -> OpenFile:
        """Open the regular file `name` once; raise UsageError if it is gone, InputFileError for a link."""
        return open_once(Path(name), dir_fd=self.fd)

    def read(self, name: str, limit: int) -> bytes | None:
        """The bytes of the regular file `name`, read once; None if it is not there.

        Raises InputFileError if it is a link, not a regular file, or larger than `limit` bytes.
        """
        try:
            with self.open_file(name) as file:
                data = os.pread(file.fd, limit + 1, 0)
        except UsageError:
            return None
        if len(data) > limit:
            raise InputFileError(f"{name!r} is larger than {limit:,} bytes")
        return data

    def identity(self, name: str) -> tuple[int, int] | None:
        """(device, inode) of the entry `name` itself (a link is not followed), or None if it is gone."""
        try:
            info = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return info.st_dev, info.st_ino

    def remove(self, name: str, identity: tuple[int, int] | None = None) -> bool:
        """Remove `name` (only if it is still the file `identity` names, when given); True if removed."""
        if identity is not None and self.identity(name) != identity:
            return False
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            return False
        return True

    @contextmanager
    def temp_file(self, name: str, mode: int = 0o600, *, within: str = "") -> Iterator[tuple[str, BinaryIO]]:
        """Yield the name and handle of a new private temp file beside `name` (flushed and fsynced when
        the body ends); whatever happens, that name is gone afterwards (the body may link or rename it).
        With `within` (a folder's path from this one) it is made there, and its name is a path from this folder."""
        temp = f"{within}/{temp_name(name)}" if within else temp_name(name)
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)
        try:
            with os.fdopen(fd, "w+b") as handle:
                yield temp, handle
        finally:
            with suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(temp, dir_fd=self.fd)

    @contextmanager
    def new_file(
        self, name: str, mode: int = 0o600, *, group: int | None = None, sync_folder: bool = True, within: str = ""
    ) -> Iterator[BinaryIO]:
        """Yield a private temp file beside `name` (or `within`, as `temp_file`); on success fsync it and rename it
        over `name`. With `group`, it gets that group and 0640 by its descriptor before the rename shows it (or
        stays private). With `sync_folder=False` the rename is durable only once the caller syncs the folder."""
        with self.temp_file(name, mode, within=within) as (temp, handle):
            yield handle
            handle.flush()
            if group is not None:
                share_file(handle.fileno(), group)
            os.fsync(handle.fileno())
            os.rename(temp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            if sync_folder:
                os.fsync(self.fd)

    def write(
        self,
        name: str,
        data: bytes,
        mode: int = 0o600,
        *,
        group: int | None = None,
        sync_folder: bool = True,
        within: str = "",
    ) -> None:
        """Write `data` as `name` atomically and durably (readable by `group` too, staged `within`, as `new_file`)."""
        with self.new_file(name, mode, group=group, sync_folder=sync_folder, within=within) as handle:
            handle.write(data)

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _step(fd: int, name: str, path: Path, create: bool) -> int:
    """Open folder `name` inside the open folder `fd` (closed here either way) without following a link."""
    try:
        if create:
            with suppress(FileExistsError):
                os.mkdir(name, 0o700, dir_fd=fd)
        return os.open(name, _DIRECTORY, dir_fd=fd)
    except FileNotFoundError:
        raise UsageError(f"{str(path)!r} does not exist") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise InputFileError(
                f"{str(path)!r} is a symbolic link or not a folder: the gateway never follows links; "
                f"replace it with a real folder (mkdir -m 700 {str(path)!r})"
            ) from None
        raise
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------- plaintext for recipients


def anonymous_file(folder: Path) -> BinaryIO:
    """A new private file in `folder` that has no name yet (O_TMPFILE): if the process is killed, it
    vanishes with it, so no plaintext is ever left behind. Falls back to a named 0600 temp file where
    the file system has no O_TMPFILE (`publish` and `remove_stale_temps` handle both)."""
    try:
        fd = os.open(folder, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
        fd, _ = tempfile.mkstemp(dir=folder, prefix=STALE_PREFIX, suffix=".tmp")
    return os.fdopen(fd, "w+b")


STALE_PREFIX = ".iom-gateway-"


def publish(handle: BinaryIO, folder: Path, name: str) -> Path:
    """Give the finished file `handle` (from `anonymous_file`) the name `name` in `folder`.

    A file already there is replaced: it is removed first, so a kill in between leaves neither file,
    never a named temp file with plaintext in it.
    """
    handle.flush()
    os.fsync(handle.fileno())
    target = folder / name
    if os.fstat(handle.fileno()).st_nlink:  # a named temp file: no O_TMPFILE on this file system
        os.replace(os.readlink(f"/proc/self/fd/{handle.fileno()}"), target)
    else:
        with suppress(FileNotFoundError):
            target.unlink()
        _link_anonymous(handle.fileno(), target)
    fsync_dir(folder)
    return target


_AT_FDCWD, _AT_EMPTY_PATH = -100, 0x1000


def _link_anonymous(fd: int, target: Path) -> None:
    """linkat() an O_TMPFILE file into place: by its /proc/self/fd link, or (where that is refused, as
    under some sandboxes) with AT_EMPTY_PATH, which Linux allows the opener since 6.10."""
    try:
        os.link(f"/proc/self/fd/{fd}", target, follow_symlinks=True)
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOENT, errno.EPERM):
            raise
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.linkat(fd, b"", _AT_FDCWD, os.fsencode(target), _AT_EMPTY_PATH) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(target))


def remove_stale_temps(folder: Path) -> int:
    """Delete the named temp files `anonymous_file`/`publish` leave when killed; return how many."""
    removed = 0
    for stale in folder.glob(f"{STALE_PREFIX}*.tmp"):
        if stale.is_file() and not stale.is_symlink():
            stale.unlink()
            removed += 1
    return removed


# ----------------------------------------------------------------------------------------- names for people

_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff")


def shown(name: str) -> str:
    """`name` safe to print: bytes that are not UTF-8, control and bidirectional characters escaped,
    so a file name cannot move the cursor, retitle a terminal or fake a line of output."""
    out = []
    for char in name:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or 0x7F <= code < 0xA0 or char in _BIDI or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        elif char == "\\":
            out.append("\\\\")
        else:
            out.append(char)
    return "".join(out)


def is_plain_name(name: str) -> bool:
    """Whether `name` can be used as it is for the gateway's own files and reports: valid UTF-8, no
    control or bidirectional characters, and short enough to carry a suffix (200 bytes)."""
    return shown(name) == name and len(name.encode("utf-8")) <= 200
