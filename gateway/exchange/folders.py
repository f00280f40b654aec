"""The folders each agency has under the root (outbox/, inbox/, quarantine/), kept in step with gateway.toml.

`init`, the daemon (at start and on SIGHUP) and `check` share these functions, so all three mean the
same by "an agency's folders". A folder is made 0700 and reached without following a link; one for
an agency no longer in gateway.toml is an orphan: nothing takes a file dropped there, so one that
holds files is reported.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from gateway.adapters.fsio import Folder, shown
from gateway.adapters.perms import DROP_DIR, PASSAGE_DIR, PRIVATE_DIR, READ_DIR, group_id, share_dir
from gateway.adapters.store import INBOX
from gateway.core.errors import InputFileError, UsageError
from gateway.core.model import Agency
from gateway.core.receipt import RECEIPTS
from gateway.core.request import REQUESTS
from gateway.exchange.intake import OUTBOX, REJECTED
from gateway.state.root import QUARANTINE

AGENCY_FOLDERS = (OUTBOX, INBOX, QUARANTINE)
# where a file for an agency waits to be taken (outbox) or pulled (inbox): an orphan there strands it
WATCHED = (OUTBOX, INBOX)


@dataclass(frozen=True, slots=True)
class FolderState:
    """What `agency_folders` found for one agency folder: "ok", "missing", "made" or "refused" (with why)."""

    folder: str  # relative to the root, e.g. "outbox/police"
    state: str
    why: str = ""


@dataclass(frozen=True, slots=True)
class Orphan:
    """A folder under outbox/ or inbox/ named for no agency in gateway.toml, and how many files it holds."""

    folder: str  # relative to the root, printable (`shown`): the name came from whoever made the folder
    files: int


def agency_folders(root: Path, agencies: Iterable[str] | Mapping[str, Agency], *, create: bool) -> list[FolderState]:
    """The state of every agency's outbox/, inbox/ and quarantine/ folder; with `create`, make the missing ones.

    A folder made is given the access model's mode (gateway/adapters/perms.py): outbox/<agency>/ setgid 2770
    with a default ACL for the gateway user (the root's owner), its rejected/ and inbox/<agency>/ setgid 2750,
    all of the agency's group; inbox/ and outbox/ 0711; quarantine/ stays 0700. Without the group on this
    host (or `agencies` given as bare ids) they stay 0700. Never follows a link: a link or a file where a
    folder belongs is "refused", with the fix.
    """
    found = []
    groups = {a.id: a.unix_group for a in agencies.values()} if isinstance(agencies, Mapping) else {}
    if create:
        _make_passages(root, any(group_id(g) is not None for g in groups.values()))
    for agency in agencies:
        for kind in AGENCY_FOLDERS:
            name = f"{kind}/{agency}"
            try:
                Folder.open(root, kind, agency).close()
                found.append(FolderState(name, "ok"))
                if create and kind == OUTBOX:
                    _receipts_folder(root, agency, groups.get(agency))
                continue
            except UsageError:
                pass
            except InputFileError as exc:
                found.append(FolderState(name, "refused", exc.message))
                continue
            if not create:
                found.append(FolderState(name, "missing"))
                continue
            try:
                Folder.open(root, kind, agency, create=True).close()
            except (InputFileError, UsageError, OSError) as exc:  # a race with a link, or no permission
                why = exc.message if isinstance(exc, InputFileError | UsageError) else str(exc.strerror)
                found.append(FolderState(name, "refused", why))
            else:
                found.append(FolderState(name, "made"))
                _share(root, kind, agency, groups.get(agency))
                if kind == OUTBOX:
                    _receipts_folder(root, agency, groups.get(agency))
    return found


def _make_passages(root: Path, shared: bool) -> None:
    """Make inbox/ and outbox/ (if missing) 0711: officers pass through to their own folder, list nothing;
    when an agency's group is on the host (`shared`), a root still 0700 becomes 0711 too."""
    if shared:
        with suppress(OSError):
            if stat.S_IMODE(os.stat(root).st_mode) == PRIVATE_DIR:
                os.chmod(root, PASSAGE_DIR)  # the trusted root itself, as init made it (no link to follow)
    for kind in WATCHED:
        try:
            Folder.open(root, kind).close()
        except UsageError:
            with suppress(InputFileError, UsageError, OSError), Folder.open(root, kind, create=True) as made:
                os.fchmod(made.fd, PASSAGE_DIR)
        except InputFileError:
            continue  # a link: refused per agency folder below


def _share(root: Path, kind: str, agency: str, group: str | None) -> None:
    """Give a just-made agency folder its mode and group (outbox/ also rejected/ and the ACL); else leave it 0700."""
    if kind == QUARANTINE or group is None:
        return
    gid = group_id(group)
    with suppress(OSError), Folder.open(root, kind, agency) as folder:
        if kind == INBOX:
            share_dir(folder.fd, gid, READ_DIR)
            return
        gateway_uid = os.stat(root).st_uid
        if share_dir(folder.fd, gid, DROP_DIR, acl_uid=gateway_uid):
            with folder.sub(REJECTED, create=True) as rejected:
                share_dir(rejected.fd, gid, READ_DIR)


def _receipts_folder(root: Path, agency: str, group: str | None) -> None:
    """outbox/<agency>/receipts/ and requests/, where officers upload the receipts they made away from the
    gateway and their signed information requests: made when missing (an outbox made before they existed has
    none), shared like the outbox when it is shared."""
    for name in (RECEIPTS, REQUESTS):
        with suppress(OSError, InputFileError, UsageError), Folder.open(root, OUTBOX, agency) as outbox:
            try:
                outbox.sub(name).close()
                continue
            except UsageError:
                pass
            with outbox.sub(name, create=True) as made:
                shared = stat.S_IMODE(os.fstat(outbox.fd).st_mode) == stat.S_IMODE(DROP_DIR)
                if shared and group is not None:
                    share_dir(made.fd, group_id(group), DROP_DIR, acl_uid=os.stat(root).st_uid)


def orphaned_folders(root: Path, agencies: Iterable[str]) -> list[Orphan]:
    """The folders under outbox/ and inbox/ for agencies not in `agencies`, with the files each holds."""
    known = set(agencies)
    orphans = []
    for kind in WATCHED:
        try:
            with Folder.open(root, kind) as parent:
                entries = parent.entries()
        except (UsageError, InputFileError, OSError):  # no such folder (yet), or refused: nothing orphaned there
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name in known or not entry.is_dir(follow_symlinks=False):
                continue
            orphans.append(Orphan(f"{kind}/{shown(entry.name)}", _files_in(root / kind / entry.name)))
    return orphans


def _files_in(folder: Path) -> int:
    """Regular files anywhere below `folder` (links are neither followed nor counted; unreadable parts are skipped)."""
    return sum(1 for top, _, names in os.walk(folder) for name in names if _regular(Path(top) / name))


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
