"""The package store (local folders now; S3-compatible create-only puts later).

Delivery is create-once: a package is written under a temp name in the recipient's folder,
fsynced, and link()ed to its final name. If that name exists the existing package is kept and
adopted, never overwritten (rename-over is not safe on NFS; S3 maps this to If-None-Match puts).
Every write goes through the folder's open descriptor, never a path: a link put in place of an
inbox folder, or of a temp file, is not followed.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gateway.adapters.fsio import Folder, sha256_fd
from gateway.adapters.perms import group_id, share_file
from gateway.core.errors import GatewayError

INBOX = "inbox"


@dataclass(slots=True)
class Created:
    """The file being written by `create_once`; `sha256` is set once it is published."""

    file: BinaryIO
    sha256: str = ""


class PackageStore:
    """inbox/<agency>/ folders under a gateway root."""

    def __init__(self, root: Path, groups: Mapping[str, str] | None = None) -> None:
        self.root = root / INBOX
        self.base = root
        self.groups = dict(groups or {})  # agency id -> its Unix group: who may read what is published

    def group(self, agency: str) -> int | None:
        """The gid that may read `agency`'s inbox files; None (they stay private) if it has none on this host."""
        name = self.groups.get(agency)
        return None if name is None else group_id(name)

    def folder(self, agency: str) -> Path:
        """The path of an agency's inbox (made 0700 if missing; InputFileError if it is a link)."""
        self.open(agency).close()
        return self.root / agency

    def open(self, agency: str) -> Folder:
        """The agency's inbox, opened without following links (made 0700 if missing)."""
        return Folder.open(self.base, INBOX, agency, create=True)

    @contextmanager
    def create_once(self, agency: str, name: str) -> Iterator[Created]:
        """Yield a private temp file; on success publish it as `name` (0640, the agency's group) unless that
        already exists.

        Whatever happens the temp file is gone afterwards. `Created.sha256` is the SHA-256 of what was
        written (read back through the temp file's own descriptor, not by name).
        """
        with self.open(agency) as folder, folder.temp_file(name) as (temp, handle):
            created = Created(handle)
            yield created
            handle.flush()
            os.fsync(handle.fileno())
            created.sha256 = sha256_fd(handle.fileno())
            share_file(handle.fileno(), self.group(agency))  # by descriptor, before the link shows it
            try:
                os.link(temp, name, src_dir_fd=folder.fd, dst_dir_fd=folder.fd, follow_symlinks=False)
            except FileExistsError:  # made before a crash, or by another worker: adopt it
                with folder.open_file(name) as adopted:
                    created.sha256 = adopted.hash()
            folder.sync()

    def staging(self, agency: str) -> BinaryIO | None:
        """A new nameless private file (O_TMPFILE, 0600) in the agency's inbox, to be finished and then
        published by `publish_staged`; None where the file system has no nameless files.

        Nothing names it: no one sees it, and it vanishes when closed or with the process.
        """
        with self.open(agency) as folder:
            try:
                fd = os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600, dir_fd=folder.fd)
            except OSError as exc:
                if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    return None
                raise
        return os.fdopen(fd, "w+b")

    @contextmanager
    def publish_staged(self, agency: str, name: str, staged: BinaryIO, sha256: str) -> Iterator[Created]:
        """Publish `staged` (from `staging(agency)`, written, fsynced, of SHA-256 `sha256`) as `name`
        when the body ends, create-once as `create_once` does: a file already there is kept and adopted.

        The body runs before the link, so a failure (a crash) in it publishes nothing.
        """
        with self.open(agency) as folder:
            created = Created(staged, sha256)
            yield created
            share_file(staged.fileno(), self.group(agency))  # by descriptor, before the link shows it
            try:
                os.link(f"/proc/self/fd/{staged.fileno()}", name, dst_dir_fd=folder.fd, follow_symlinks=True)
            except FileExistsError:  # made before a crash, or by another worker: adopt it
                with folder.open_file(name) as adopted:
                    created.sha256 = adopted.hash()
            except OSError as exc:  # /proc/self/fd links refused (some sandboxes): a named temp, as create_once
                if exc.errno not in (errno.EXDEV, errno.ENOENT, errno.EPERM):
                    raise
                staged.seek(0)
                with self.create_once(agency, name) as copy:
                    shutil.copyfileobj(staged, copy.file, 1 << 20)
                created.sha256 = copy.sha256
            folder.sync()

    def publish_signed(self, agency: str, name: str, document: bytes, signature_name: str, signature: bytes) -> None:
        """Write `document` as `name`, replacing what is there (unsigned it is worth nothing), then its
        signature as `signature_name` in place of any other, with one sync of the folder for both.

        Either may be missing after a crash before the sync; the caller's retry writes both again.
        A signature another process published meanwhile for the same document is kept.
        """
        with self.open(agency) as folder:
            folder.write(name, document, group=self.group(agency), sync_folder=False)
            folder.remove(signature_name)  # one left by a crash, over other bytes
        with self.create_once(agency, signature_name) as created:  # its folder sync covers both names
            created.file.write(signature)

    def read(self, agency: str, name: str, limit: int) -> bytes | None:
        """The bytes of `name` (None if missing, a link, or larger than `limit`), read through one descriptor."""
        try:
            with self.open(agency) as folder:
                return folder.read(name, limit)
        except (OSError, GatewayError):
            return None

    def size(self, agency: str, name: str) -> int:
        """The size of the published file `name`; OSError or GatewayError if it is not there."""
        with self.open(agency) as folder, folder.open_file(name) as file:
            return file.size

    def sha256(self, agency: str, name: str) -> str:
        """The SHA-256 of the published file `name`, read through one descriptor."""
        with self.open(agency) as folder, folder.open_file(name) as file:
            return file.hash()

    def packages(self, agency: str) -> list[Path]:
        """The package payloads waiting in an agency's inbox, oldest name first."""
        folder = self.root / agency
        if not folder.is_dir() or folder.is_symlink():
            return []
        return sorted(
            p
            for p in folder.iterdir()
            if not p.name.startswith(".") and p.name.endswith((".csv.gpg", ".zip")) and p.is_file()
        )
