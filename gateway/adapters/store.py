"""The package store (local folders now; S3-compatible create-only puts later).

Delivery is create-once: a package is written under a temp name in the recipient's folder,
fsynced, and link()ed to its final name. If that name exists the existing package is kept and
adopted, never overwritten (rename-over is not safe on NFS; S3 maps this to If-None-Match puts).
Every write goes through the folder's open descriptor, never a path: a link put in place of an
inbox folder, or of a temp file, is not followed.

Fencing (many nodes over one root, the PostgreSQL journal): a process holding a claim stages every file it
publishes to an agency, and every file it withdraws, in its claim's own folder in that agency's inbox,
inbox/<agency>/.fences/<fencing number>/, made before the claim was committed, and links or renames it
into place by a path through that folder (in the inbox itself, so on the file system of the inbox, whatever
is mounted there). A node that takes the submission over first removes those folders (`Fences.revoke`),
so the old holder, however long it was paused, can put no file in any inbox after that: its next link
finds no such path.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gateway.adapters.fsio import Folder, idle_seconds, sha256_fd, temp_name
from gateway.adapters.perms import group_id, share_file
from gateway.core.errors import ClaimLost, GatewayError

INBOX = "inbox"
FENCES = ".fences"  # inbox/<agency>/.fences/<n>/: the staging folder there of the claim with fencing number n
_REVOKED = "revoked-"  # a fence folder being removed
_STAGING_ERRORS = (
    errno.ENOENT,
    errno.ENOTDIR,
    errno.ESTALE,
)  # a path through a fence folder that is gone (ESTALE: NFS)


@dataclass(slots=True)
class Created:
    """The file being written by `create_once`; `sha256` is set once it is published."""

    file: BinaryIO
    sha256: str = ""


class Fences:
    """The claims' fence folders, inbox/<agency>/.fences/<n>/ (see the module).

    `current` is the fencing number of the claim this process holds (None: it holds none, or claims are not
    leases); while it is set, the store stages every publication and withdrawal in that claim's folders.
    `recipients(sender)` gives the agencies a sender's files are delivered to: a claim gets a folder in each.
    """

    def __init__(self, base: Path, recipients: Callable[[str], Sequence[str]] | None = None) -> None:
        self.base = base  # the root
        self.recipients = recipients or (lambda _: ())
        self.current: int | None = None
        self._made: dict[int, tuple[str, ...]] = {}  # fencing number -> the agencies given a folder for it

    def make(self, number: int, agencies: Iterable[str]) -> None:
        """Make the folders of the claim `number` in the inboxes of `agencies` (before the claim is committed:
        see `revoke`). Not synced: a crash that loses one ends its holder too."""
        made: list[str] = []
        self._made[number] = ()
        with Folder.open(self.base, INBOX, create=True) as inboxes:
            for agency in dict.fromkeys(agencies):
                with inboxes.sub(agency, create=True) as inbox:
                    _make_in(inbox, str(number))
                made.append(agency)
                self._made[number] = tuple(made)

    def drop(self, number: int) -> None:
        """Remove the folders of the claim `number`, let go by its holder (what they still hold is left to `sweep`),
        and .fences itself where no other claim has one: an idle inbox holds packages only."""
        agencies = self._made.pop(number, ())
        if not agencies:
            return
        with suppress(OSError, GatewayError), Folder.open(self.base, INBOX) as inboxes:
            for agency in agencies:
                with suppress(OSError, GatewayError), inboxes.sub(agency) as inbox:
                    os.rmdir(f"{FENCES}/{number}", dir_fd=inbox.fd)
                    os.rmdir(FENCES, dir_fd=inbox.fd)  # refused while another claim has a folder there

    def revoke(self, number: int) -> None:
        """Take the folders of the claim `number` away, in every inbox, with whatever its holder was writing in
        them: from now on that holder can publish or withdraw nothing (its paths through them lead nowhere).

        They were made before their claim was committed, and their holder never makes them again, so once
        they are renamed away nothing can bring them back.
        """
        for inbox, fences in self._every():
            with inbox, fences:
                _revoke_in(fences, str(number))
                _tidy(inbox)

    def sweep(self, live: Callable[[int], bool], quiet: float) -> int:
        """Remove what revocations left, and the fence folders unchanged for `quiet` seconds that no claim
        holds any more (`live(n)` False: let go, or its lease ran out and no one took it over; a folder just
        made belongs to a claim not yet committed); return how many went."""
        removed = 0
        for inbox, fences in self._every():
            with inbox, fences:
                for entry in fences.entries():
                    if entry.name.startswith(_REVOKED):
                        _remove_tree(fences, entry.name)
                        removed += 1
                    elif entry.name.isdigit() and idle_seconds(entry) >= quiet and not live(int(entry.name)):
                        _revoke_in(fences, entry.name)
                        removed += 1
                _tidy(inbox)
        return removed

    def _every(self) -> Iterator[tuple[Folder, Folder]]:
        """Every agency's inbox that has a .fences folder, and that folder (links never followed)."""
        try:
            with Folder.open(self.base, INBOX) as inbox:
                names = [e.name for e in inbox.entries() if e.is_dir(follow_symlinks=False)]
        except (GatewayError, OSError):
            return
        for name in names:
            try:
                agency = Folder.open(self.base, INBOX, name)
            except (GatewayError, OSError):
                continue
            try:
                fences = agency.sub(FENCES)
            except (GatewayError, OSError):  # none there (or not a folder of ours)
                agency.close()
                continue
            yield agency, fences

    @property
    def within(self) -> str:
        """The current claim's folder as a path from an agency's inbox ("" while no claim is held)."""
        return "" if self.current is None else f"{FENCES}/{self.current}"

    def lost(self, inbox: Folder, exc: OSError) -> OSError | ClaimLost:
        """What a failed step through the current claim's folder in `inbox` means: ClaimLost if it is gone."""
        if exc.errno not in _STAGING_ERRORS or self.current is None:
            return exc
        try:
            os.stat(f"{FENCES}/{self.current}", dir_fd=inbox.fd, follow_symlinks=False)
        except FileNotFoundError:
            return ClaimLost(
                f"the claim with fencing number {self.current} was taken over by another node while this one was"
                f" paused or cut off longer than its lease (or inbox/{inbox.path.name} became a recipient after"
                " the claim was taken): nothing was published or withdrawn there, and the file is looked at again"
            )
        return exc


def _make_in(inbox: Folder, name: str, tries: int = 5) -> None:
    """Make the fence folder `name` in `inbox`'s .fences (made too if missing: another process may remove it,
    empty, between the two steps; then both are made again)."""
    for attempt in range(tries):
        with suppress(FileExistsError):
            os.mkdir(FENCES, 0o700, dir_fd=inbox.fd)
        try:
            os.mkdir(f"{FENCES}/{name}", 0o700, dir_fd=inbox.fd)
        except FileNotFoundError:
            if attempt == tries - 1:
                raise
            continue
        return


def _tidy(inbox: Folder) -> None:
    """Remove `inbox`'s .fences if no claim has a folder there (refused, and left, if one has)."""
    with suppress(OSError):
        os.rmdir(FENCES, dir_fd=inbox.fd)


def _revoke_in(fences: Folder, name: str) -> None:
    """Rename the fence folder `name` away in `fences` (if it is there), then remove it and what it holds."""
    gone = f"{_REVOKED}{name}-{secrets.token_hex(4)}"
    try:
        os.rename(name, gone, src_dir_fd=fences.fd, dst_dir_fd=fences.fd)
    except FileNotFoundError:
        return  # let go (or never made here): nothing to take away
    fences.sync()
    _remove_tree(fences, gone)


def _remove_tree(fences: Folder, name: str) -> None:
    """Remove the (revoked) fence folder `name` and the temp files in it; what a writer adds meanwhile is left
    for the next sweep."""
    with suppress(GatewayError), fences.sub(name) as folder:
        for entry in folder.entries():
            with suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(entry.name, dir_fd=folder.fd)
    with suppress(OSError):
        os.rmdir(name, dir_fd=fences.fd)
        fences.sync()


class PackageStore:
    """inbox/<agency>/ folders under a gateway root."""

    def __init__(
        self,
        root: Path,
        groups: Mapping[str, str] | None = None,
        recipients: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        self.root = root / INBOX
        self.base = root
        self.groups = dict(groups or {})  # agency id -> its Unix group: who may read what is published
        self.fences = Fences(root, recipients)  # sender id -> the agencies it delivers to

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
        written (read back through the temp file's own descriptor, not by name). Raises ClaimLost if this
        process's claim was taken over (see the module's "Fencing"): nothing is published then.
        """
        with (
            self.open(agency) as folder,
            self._fenced(folder),
            folder.temp_file(name, within=self.fences.within) as (temp, handle),
        ):
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

    @contextmanager
    def _fenced(self, folder: Folder) -> Iterator[None]:
        """Raise ClaimLost for a step through the current claim's fence folder in `folder` that failed because
        that folder was revoked (see the module); any other failure as it is."""
        try:
            yield
        except OSError as exc:
            raise self.fences.lost(folder, exc) from None

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

        The body runs before the link, so a failure (a crash) in it publishes nothing. Raises ClaimLost as
        `create_once` does.
        """
        with self.open(agency) as folder:
            created = Created(staged, sha256)
            yield created
            share_file(staged.fileno(), self.group(agency))  # by descriptor, before the link shows it
            try:
                self._link_nameless(staged.fileno(), folder, name)
            except FileExistsError:  # made before a crash, or by another worker: adopt it
                with folder.open_file(name) as adopted:
                    created.sha256 = adopted.hash()
            except OSError as exc:  # /proc/self/fd links refused (some sandboxes): a named temp, as create_once
                lost = self.fences.lost(folder, exc)
                if isinstance(lost, ClaimLost) or exc.errno not in (errno.EXDEV, errno.ENOENT, errno.EPERM):
                    raise lost from None
                staged.seek(0)
                with self.create_once(agency, name) as copy:
                    shutil.copyfileobj(staged, copy.file, 1 << 20)
                created.sha256 = copy.sha256
            folder.sync()

    def _link_nameless(self, fd: int, folder: Folder, name: str) -> None:
        """linkat() the nameless file `fd` into `folder` as `name`: directly, or while a claim is held first into
        its fence folder there and from that (a path a take-over cuts)."""
        source = f"/proc/self/fd/{fd}"
        if self.fences.current is None:
            os.link(source, name, dst_dir_fd=folder.fd, follow_symlinks=True)
            return
        temp = f"{self.fences.within}/{temp_name(name)}"
        os.link(source, temp, dst_dir_fd=folder.fd, follow_symlinks=True)
        try:
            os.link(temp, name, src_dir_fd=folder.fd, dst_dir_fd=folder.fd, follow_symlinks=False)
        finally:
            with suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(temp, dir_fd=folder.fd)

    def publish_signed(self, agency: str, name: str, document: bytes, signature_name: str, signature: bytes) -> None:
        """Write `document` as `name`, replacing what is there (unsigned it is worth nothing), then its
        signature as `signature_name` in place of any other, with one sync of the folder for both.

        Either may be missing after a crash before the sync; the caller's retry writes both again.
        A signature another process published meanwhile for the same document is kept. Raises ClaimLost
        as `create_once` does.
        """
        with self.open(agency) as folder:
            with self._fenced(folder):
                folder.write(name, document, group=self.group(agency), sync_folder=False, within=self.fences.within)
            self._remove(folder, signature_name)  # one left by a crash, over other bytes
        with self.create_once(agency, signature_name) as created:  # its folder sync covers both names
            created.file.write(signature)

    def withdraw(self, agency: str, names: Iterable[str]) -> None:
        """Remove the published files `names` (those that are there) from the agency's inbox, then sync it once.
        Raises ClaimLost as `create_once` does: a process taken over removes nothing."""
        with self.open(agency) as folder:
            for name in names:
                self._remove(folder, name)
            folder.sync()

    def _remove(self, folder: Folder, name: str) -> None:
        """Remove `name` from `folder`: while a claim is held, by a rename into its fence folder there first."""
        if self.fences.current is None:
            folder.remove(name)
            return
        temp = f"{self.fences.within}/{temp_name(name)}"
        try:
            os.rename(name, temp, src_dir_fd=folder.fd, dst_dir_fd=folder.fd)
        except OSError as exc:
            lost = self.fences.lost(folder, exc)
            if isinstance(lost, ClaimLost) or not isinstance(exc, FileNotFoundError):
                raise lost from None
            return  # not there
        with suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(temp, dir_fd=folder.fd)

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
