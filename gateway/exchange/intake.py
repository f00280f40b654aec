"""Find complete submissions in an outbox: a CSV and its detached signature, nothing else.

Never taken: a file still being written or hidden (`.*`, `*.tmp`, `*.part`, `~$*`), a symlink, a
FIFO or device, a folder. Those are listed as ignored, with the reason, and never followed. The
outbox is read through its open descriptor (`fsio.Folder`), so a link put in place of the folder
itself is refused rather than followed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.adapters.fsio import Folder, OpenFile, shown
from gateway.adapters.gpg import MAX_SIGNATURE_BYTES, SignatureCheck
from gateway.core.errors import InputFileError, PolicyError, UsageError
from gateway.core.manifest import binary_signature
from gateway.core.model import Agency
from gateway.core.model import period_in as period_in  # noqa: PLC0414 (re-exported: it was defined here)
from gateway.core.model import period_of as period_of  # noqa: PLC0414
from gateway.core.pgpmime import EVIDENCE_SUFFIX, MAX_EVIDENCE_BYTES, Envelope, parse
from gateway.core.receipt import RECEIPTS
from gateway.core.request import REQUESTS
from gateway.state.root import Root

# a detached signature (binary or armored), or a PGP/MIME message's signature and envelope (core/pgpmime)
SIGNATURE_SUFFIXES = (".sig", ".asc", EVIDENCE_SUFFIX)
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


def drop_pair(
    root: Path, agency: str, name: str, signature_suffix: str, signature: bytes, data: Iterable[bytes]
) -> Path:
    """Put a CSV (the bytes `data` yields) and its detached signature into `agency`'s outbox, the
    signature first, each by temp file, fsync and rename: the gateway never sees a CSV without its
    signature, or half of either. Returns the CSV's path; raises PolicyError if either name is
    already waiting there (nothing written then)."""
    with open_outbox(root, agency, create=True) as outbox:
        if outbox.identity(name) is not None or outbox.identity(name + signature_suffix) is not None:
            raise PolicyError(
                f"{shown(name)!r} is already waiting in {agency}'s outbox: wait for the gateway, or rename the file"
            )
        outbox.write(name + signature_suffix, signature)
        with outbox.new_file(name) as copy:
            for chunk in data:
                copy.write(chunk)
    return root / OUTBOX / agency / name


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
        if _in_progress(entry.name) or entry.name in (REJECTED, RECEIPTS, REQUESTS):
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


@dataclass(frozen=True, slots=True)
class Signed:
    """The signature file as read once: its binary form is what gpg checks and the manifest carries.

    `envelope`: the file came signed in a PGP/MIME message; the signature covers that envelope with
    the CSV in it (`Envelope.signed`), not the CSV's bytes alone.
    """

    name: str
    identity: tuple[int, int]
    raw: bytes
    binary: bytes | None
    problem: str | None
    envelope: Envelope | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """One submission in hand: where it lies, its one open file, its signature and gpg's verdict."""

    agency: Agency
    folder: Folder
    pair: Pair
    source: OpenFile
    signed: Signed | None
    check: SignatureCheck | None

    @property
    def shown(self) -> str:
        return shown(self.pair.csv)


def take(root: Root, agency: Agency, folder: Folder, pair: Pair, source: OpenFile) -> Job:
    """Read the signature once and check it over the first complete read of the file (which fixes its hash)."""
    signed = _read_signature(folder, pair.signature) if pair.signature is not None else None
    check = None
    if signed is not None and signed.binary is not None:
        data = source.chunks() if signed.envelope is None else signed.envelope.signed(source.chunks())
        check = root.keyring.verify_detached(data, signed.binary)
        if check.valid and source.digest is None:  # gpg vouched for bytes the hash did not see
            check = SignatureCheck(False, None, None, "gpg did not read the whole file: submit it again")
    return Job(agency, folder, pair, source, signed, check)


def _read_signature(folder: Folder, name: str) -> Signed | None:
    """The signature file's bytes, read once and capped; None if it went away."""
    limit = MAX_EVIDENCE_BYTES if name.endswith(EVIDENCE_SUFFIX) else MAX_SIGNATURE_BYTES
    try:
        with folder.open_file(name) as file:
            raw = os.pread(file.fd, limit + 1, 0)
            identity = file.identity
    except UsageError:
        return None
    except InputFileError as exc:
        return Signed(name, (0, 0), b"", None, f"the signature file cannot be read ({exc.message})")
    if len(raw) > limit:
        return Signed(name, identity, b"", None, f"{shown(name)!r} is larger than a detached signature can be")
    if name.endswith(EVIDENCE_SUFFIX):
        return _read_evidence(name, identity, raw)
    try:
        return Signed(name, identity, raw, binary_signature(raw), None)
    except ValueError as exc:
        return Signed(name, identity, raw, None, f"not an OpenPGP signature ({exc}): sign with gpg --detach-sign FILE")


def _read_evidence(name: str, identity: tuple[int, int], raw: bytes) -> Signed:
    """A PGP/MIME message's envelope and signature, as the SMTP intake wrote them (`mailin`)."""
    try:
        envelope, armored = parse(raw)
        if armored is None:
            raise ValueError("it holds no signature")
        return Signed(name, identity, raw, binary_signature(armored.encode("ascii", "replace")), None, envelope)
    except ValueError as exc:
        problem = f"{shown(name)!r} is not a PGP/MIME signature the gateway can check ({exc}): send the message again"
        return Signed(name, identity, raw, None, problem)


def remove_taken(job: Job) -> None:
    """Signature first: a crash in between leaves a CSV the journal knows, never an orphan signature.

    Each is removed only if its name still leads to the file that was read: one renamed in meanwhile
    stays, and is a submission of its own."""
    if job.signed is not None:
        job.folder.remove(job.signed.name, job.signed.identity)
    job.folder.remove(job.pair.csv, job.source.identity)
    job.folder.sync()
