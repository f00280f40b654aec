"""Find complete submissions in an outbox: a CSV and its detached signature, nothing else.

Never taken: a file still being written or hidden (`.*`, `*.tmp`, `*.part`, `~$*`), a symlink, a
FIFO or device, a folder. Those are listed as ignored, with the reason, and never followed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

SIGNATURE_SUFFIXES = (".sig", ".asc")
REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Pair:
    """A submission: the CSV, its signature (None while it has not arrived) and the CSV's age."""

    csv: Path
    signature: Path | None
    age_seconds: float


@dataclass(frozen=True, slots=True)
class Intake:
    pairs: tuple[Pair, ...]
    ignored: tuple[tuple[str, str], ...]


def _in_progress(name: str) -> bool:
    return name.startswith((".", "~$")) or name.endswith((".tmp", ".part"))


def scan_outbox(folder: Path, now: float, orphan_after: float = 60.0) -> Intake:
    """Pair every CSV in `folder` with its `.sig` or `.asc`; list what is ignored and why.

    A signature arrives before its CSV: only one alone for over `orphan_after` seconds is listed.
    A file that vanishes while the folder is read is simply not there.
    """
    regular: dict[str, os.stat_result] = {}
    ignored: list[tuple[str, str]] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return Intake((), ())
    for entry in entries:
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
            regular[entry.name] = info
    pairs = []
    for name, info in sorted(regular.items()):
        if not name.lower().endswith(".csv"):
            if not name.endswith(SIGNATURE_SUFFIXES):
                ignored.append((name, "not a .csv submission or its signature"))
            elif name.rsplit(".", 1)[0] not in regular and now - info.st_mtime > orphan_after:
                ignored.append((name, "a signature without its CSV: left behind, or its CSV is late"))
            continue
        signature = next((folder / (name + s) for s in SIGNATURE_SUFFIXES if name + s in regular), None)
        pairs.append(Pair(folder / name, signature, now - info.st_mtime))
    return Intake(tuple(pairs), tuple(ignored))
