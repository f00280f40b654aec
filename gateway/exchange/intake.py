"""Find complete submissions in an outbox: a CSV and its detached signature, nothing else.

Never taken: a file still being written or hidden (`.*`, `*.tmp`, `*.part`, `~$*`), a symlink, a
FIFO or device, a folder. Those are listed as ignored, with the reason, and never followed. The
outbox is read through its open descriptor (`fsio.Folder`), so a link put in place of the folder
itself is refused rather than followed.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from gateway.adapters.fsio import Folder
from gateway.core.errors import GatewayError

SIGNATURE_SUFFIXES = (".sig", ".asc")
REJECTED = "rejected"
OUTBOX = "outbox"


@dataclass(frozen=True, slots=True)
class Pair:
    """A submission: the CSV's name, its signature's (None while it has not arrived) and the CSV's age.

    Names are as the file system gives them: they may hold bytes that are not UTF-8 (as surrogate
    escapes) and any control character. Print them with `fsio.shown`.
    """

    csv: str
    signature: str | None
    age_seconds: float


@dataclass(frozen=True, slots=True)
class Intake:
    pairs: tuple[Pair, ...]
    ignored: tuple[tuple[str, str], ...]


def open_outbox(root: Path, agency: str, *, create: bool = False) -> Folder:
    """The agency's outbox folder (with `create`, made 0700 if missing); raise UsageError if it is
    missing, InputFileError if it, or outbox/, is a link or not a folder (it is never followed)."""
    return Folder.open(root, OUTBOX, agency, create=create)


def _in_progress(name: str) -> bool:
    return name.startswith((".", "~$")) or name.endswith((".tmp", ".part"))


def scan_outbox(folder: Folder, now: float, orphan_after: float = 60.0) -> Intake:
    """Pair every CSV in `folder` with its `.sig` or `.asc`; list what is ignored and why.

    A signature arrives before its CSV: only one alone for over `orphan_after` seconds is listed.
    A file that vanishes while the folder is read is simply not there.
    """
    regular: dict[str, float] = {}
    ignored: list[tuple[str, str]] = []
    for entry in folder.entries():
        if _in_progress(entry.name) or entry.name == REJECTED:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # deleted between listing and looking
            continue
        if stat.S_ISLNK(info.st_mode):
            ignored.append((entry.name, "a symbolic link: links are never followed"))
        elif not stat.S_ISREG(info.st_mode):
            ignored.append((entry.name, "not a regular file (folder, FIFO or device)"))
        else:
            regular[entry.name] = info.st_mtime
    pairs = []
    for name, mtime in sorted(regular.items()):
        if not name.lower().endswith(".csv"):
            if not name.endswith(SIGNATURE_SUFFIXES):
                ignored.append((name, "not a .csv submission or its signature"))
            elif name.rsplit(".", 1)[0] not in regular and now - mtime > orphan_after:
                ignored.append((name, "a signature without its CSV: left behind, or its CSV is late"))
            continue
        signature = next((name + s for s in SIGNATURE_SUFFIXES if name + s in regular), None)
        pairs.append(Pair(name, signature, now - mtime))
    return Intake(tuple(pairs), tuple(ignored))


def count_waiting(root: Path, agency: str, now: float) -> int:
    """How many submissions wait in the agency's outbox (0 if it cannot be read safely)."""
    try:
        with Folder.open(root, OUTBOX, agency) as folder:
            return len(scan_outbox(folder, now).pairs)
    except (GatewayError, OSError):
        return 0
