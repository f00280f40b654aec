"""The use cases. Only this module knows the order a submission flows in:
intake -> authenticate -> validate -> mark -> seal -> deliver -> record.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from gateway import faults
from gateway.authenticate import Signature, authenticate
from gateway.context import Root
from gateway.crypto_gpg import Fingerprint, Keyring
from gateway.crypto_zip import write_aes_zip
from gateway.errors import ConfigError, GatewayError, SchemaError, StorageError, UsageError, VaultError
from gateway.fsio import atomic_target, atomic_write_bytes, fsync_dir, open_regular, sha256_file, sha256_of
from gateway.intake import REJECTED, SIGNATURE_SUFFIXES, Pair, scan_outbox
from gateway.journal import (
    DELIVERED,
    DONE,
    RECEIVED,
    REJECTING,
    ROLLED_BACK,
    SEALING,
    DeliveryRecord,
    SubmissionRecord,
)
from gateway.manifest import MANIFEST_VERSION, armor_signature, canonical_json
from gateway.marking import MARKING_SEPARATOR, Level, Marking, apply_marking, requested_level
from gateway.model import Agency, Delivery, Period
from gateway.validate import Report, validate_file, validate_stream

log = logging.getLogger(__name__)
SAMPLES = "samples"
OUTBOX = "outbox"
QUARANTINE = "quarantine"
INBOX = "inbox"
STATE = "state"
KEYS = "keys"
CHUNK = 1 << 20
_PERIOD_IN_NAME = re.compile(r"(?<![0-9])(20[0-9]{2})-(0[1-9]|1[0-2])(?![0-9])")


def check_file(root: Root, path: Path, agency_id: str, period: Period | None, today: date) -> Report:
    """Validate `path` as a submission of `agency_id` for `period` (default: this month). Writes nothing."""
    agency = root.config.agency(agency_id)
    report = validate_file(path, agency, root.config, root.standard, period=period or Period.of(today), today=today)
    log.info(
        "validated file=%r agency=%s rows=%d errors=%d", path.name, agency.id, report.rows, sum(report.counts.values())
    )
    return report


# ----------------------------------------------------------------------------------------- outcomes


@dataclass(frozen=True, slots=True)
class Delivered:
    agency: str
    name: str
    submission: str
    officer: str
    marking: str
    rows: int
    packages: tuple[Path, ...]

    @property
    def summary(self) -> str:
        recipients = ", ".join(p.parent.name for p in self.packages)
        what = f"{self.rows} rows, {self.marking}"
        return f"delivered {self.agency}/{self.name} from {self.officer}: {what}, to {recipients}"


@dataclass(frozen=True, slots=True)
class Rejected:
    agency: str
    name: str
    stage: str
    reasons: tuple[str, ...]
    report: Path

    @property
    def summary(self) -> str:
        return f"rejected  {self.agency}/{self.name} at {self.stage}: {self.reasons[0]}"


@dataclass(frozen=True, slots=True)
class Duplicate:
    agency: str
    name: str
    original: str

    @property
    def summary(self) -> str:
        return f"duplicate {self.agency}/{self.name}: already delivered as {self.original}"


@dataclass(frozen=True, slots=True)
class Waiting:
    agency: str
    name: str

    @property
    def summary(self) -> str:
        return f"waiting   {self.agency}/{self.name}: no signature yet"


@dataclass(frozen=True, slots=True)
class Deferred:
    """The environment failed (disk full, permissions): the file stays in the outbox for the next try."""

    agency: str
    name: str
    reason: str

    @property
    def summary(self) -> str:
        return f"deferred  {self.agency}/{self.name}: {self.reason}; it stays in the outbox and is tried again"


Outcome = Delivered | Rejected | Duplicate | Waiting | Deferred
MAX_ATTEMPTS = 3  # a file that stopped the gateway this often is quarantined instead of tried again


class _Refused(Exception):
    """A stage refused the submission (internal: becomes a Rejected outcome)."""

    def __init__(self, stage: str, reasons: Sequence[str], report: Report | None = None) -> None:
        super().__init__(stage)
        self.stage, self.reasons, self.report = stage, tuple(reasons), report


# ----------------------------------------------------------------------------------------- process


def process_once(root: Root, now: datetime) -> list[Outcome]:
    """Process every complete submission in every outbox once; a bad file never stops the others."""
    outcomes: list[Outcome] = []
    for agency in root.config.agencies.values():
        intake = scan_outbox(root.path / OUTBOX / agency.id, now.timestamp())
        for name, why in intake.ignored:
            log.warning("ignored agency=%s file=%r reason=%r", agency.id, name, why)
        for pair in intake.pairs:
            outcome = process_pair(root, agency, pair, now)
            if outcome is not None:
                outcomes.append(outcome)
    return outcomes


def process_pair(root: Root, agency: Agency, pair: Pair, now: datetime) -> Outcome | None:
    """Take one submission through every stage; None if it vanished before it could be read.

    Never raises for a bad file (that is a Rejected outcome) nor for a full disk or a permission
    problem (Deferred: the file stays where it is and is tried again).
    """
    try:
        stream, size = open_regular(pair.csv)
    except UsageError:
        log.info("vanished agency=%s file=%r: removed before it was taken", agency.id, pair.csv.name)
        return None
    except GatewayError as exc:
        log.warning("unreadable agency=%s file=%r reason=%r", agency.id, pair.csv.name, exc.message)
        return None
    submission = None
    try:
        with stream:
            digest = sha256_of(stream)
            submission = _submission_id(agency.id, digest)
            if pair.signature is None and pair.age_seconds < root.config.submissions.pairing_timeout_seconds:
                return Waiting(agency.id, pair.csv.name)
            record = root.journal.begin(submission, agency.id, pair.csv.name, digest)
            outcome = _attempt(root, agency, pair, record, stream, size, now)
    except (OSError, StorageError, VaultError, ConfigError) as exc:
        reason = exc.message if isinstance(exc, GatewayError) else (exc.strerror or str(exc))
        code = "" if isinstance(exc, GatewayError) else errno.errorcode.get(exc.errno or 0, str(exc.errno))
        log.error("deferred agency=%s file=%r errno=%s reason=%r", agency.id, pair.csv.name, code, reason)
        _release(root, submission)
        return Deferred(agency.id, pair.csv.name, reason)
    log.info("processed agency=%s file=%r outcome=%s", agency.id, pair.csv.name, type(outcome).__name__.lower())
    return outcome


def _release(root: Root, submission: str | None) -> None:
    """After an error that was caught and logged, do not count the attempt as a crash."""
    if submission is None:
        return
    with suppress(OSError, StorageError):
        root.journal.release(submission)


def _attempt(
    root: Root, agency: Agency, pair: Pair, record: SubmissionRecord, stream: BinaryIO, size: int, now: datetime
) -> Outcome:
    if record.status == DELIVERED:  # delivered before a crash; only the outbox copy was left
        _finish(root, record, pair)
        return _delivered_outcome(root, record)
    try:
        if record.attempts > MAX_ATTEMPTS:
            raise _Refused(
                "intake",
                [
                    f"processing this file stopped the gateway {record.attempts - 1} times: it is kept in quarantine "
                    "for the admin, who will find the cause in the gateway's log; do not submit it again until then"
                ],
            )
        return _process(root, agency, pair, record, stream, size, now)
    except _Refused as refused:
        return _reject(root, agency, pair, record, refused, now)
    except (StorageError, VaultError, ConfigError):
        raise  # the gateway's own state (disk, vault, an expired key), not the file: deferred, never quarantined
    except GatewayError as exc:
        return _reject(root, agency, pair, record, _Refused("seal", [exc.message]), now)


def _process(
    root: Root, agency: Agency, pair: Pair, record: SubmissionRecord, stream: BinaryIO, size: int, now: datetime
) -> Outcome:
    if pair.signature is None:
        timeout = root.config.submissions.pairing_timeout_seconds
        raise _Refused(
            "intake",
            [
                f"no signature arrived within {timeout} seconds: every submission needs a detached "
                f"OpenPGP signature by a DO/PDO of {agency.id} beside it ({pair.csv.name}.sig or "
                ".asc); sign it and submit both again"
            ],
        )
    # gpg reads the file by name; the end of processing checks that the name still leads to this
    # very file (same inode) with the same bytes, so a swap in the outbox meanwhile rejects the
    # submission instead of delivering what was not checked.
    officer = _authenticate(root, agency, pair.csv, pair.signature, now)
    # only after authentication: an unsigned drop must not learn what was delivered before
    if record.status == DONE:
        return _duplicate(root, agency, pair, record.id)
    requested, base = requested_level(pair.csv.name)
    period = _period(base, now)
    report = validate_stream(
        stream, size, pair.csv, agency, root.config, root.standard, period=period, today=now.date()
    )
    if not report.valid:
        raise _Refused("validate", [f"{sum(report.counts.values())} row error(s) against Table 1"], report)
    marking = apply_marking(root.config.marking, requested)
    fixed = root.journal.sealing(
        record.id,
        officer=officer,
        marking=marking.token,
        period=str(period),
        rows=report.rows,
        sealed_at=now.isoformat(timespec="seconds"),
    )
    faults.reached("journal.sealing")
    # a redo after a crash keeps what the first attempt fixed, so package names and manifests match
    marking = _fixed_marking(root, fixed.marking, marking)
    period = Period.parse(fixed.period) if fixed.period else period
    sealed = _Sealed(
        agency,
        officer,
        marking,
        period,
        report,
        digest=fixed.sha256,
        size=size,
        at=_parse_time(fixed.sealed_at, now),
        gateway=root.gateway_key(),  # one key signs every package and manifest of the submission
    )
    packages = _seal_all(root, record.id, pair, stream, sealed)
    if sha256_of(stream) != fixed.sha256 or not _same_file(pair.csv, stream):
        raise _Refused("intake", ["the file changed while it was being processed: submit it again, complete"])
    root.journal.delivered(
        record.id,
        (
            "submission.delivered",
            {
                "submission": record.id,
                "sha256": fixed.sha256,
                "rows": report.rows,
                "marking": marking.text,
                "period": str(period),
                "recipients": [p.parent.name for p in packages],
            },
        ),
    )
    flush_audit(root)
    faults.reached("submission.delivered")
    _finish(root, replace(fixed, status=DELIVERED), pair)
    return Delivered(agency.id, pair.csv.name, record.id, officer, marking.token, report.rows, tuple(packages))


def _submission_id(agency: str, digest: str) -> str:
    """Derived from the bytes, so every attempt at the same file finds the same journal entry and package names."""
    return hashlib.sha256(f"{agency}\0{digest}".encode()).hexdigest()[:20]


def _fixed_marking(root: Root, token: str | None, computed: Marking) -> Marking:
    """The marking an earlier attempt fixed (config may have been reloaded since); never below the floor."""
    if token is None or token == computed.token:
        return computed
    for level in Level:
        candidate = apply_marking(root.config.marking, level)
        if candidate.token == token:
            return candidate
    return computed


def _parse_time(text: str | None, default: datetime) -> datetime:
    return datetime.fromisoformat(text) if text else default


def _authenticate(root: Root, agency: Agency, data: Path, signature_path: Path, now: datetime) -> str:
    check = root.keyring.verify_detached(data, signature_path)
    fingerprint = str(check.fingerprint) if check.fingerprint else None
    officer = root.registry.by_fingerprint(fingerprint, now) if fingerprint else None
    limits = root.config.submissions
    found = authenticate(
        Signature(check.valid, fingerprint, check.signed_at, check.problem),
        officer,
        agency.id,
        now=now,
        max_age=timedelta(hours=limits.signature_max_age_hours),
        skew=timedelta(seconds=limits.clock_skew_seconds),
    )
    if isinstance(found, str):
        raise _Refused("authenticate", [found])
    return found.id


def _period(name: str, now: datetime) -> Period:
    """The month the data is for: a YYYY-MM in the file name, else the current month."""
    match = _PERIOD_IN_NAME.search(name)
    return Period(int(match[1]), int(match[2])) if match else Period.of(now.date())


# ----------------------------------------------------------------------------------------- seal, deliver


@dataclass(frozen=True, slots=True)
class _Sealed:
    """What every package of one submission says (fixed in the journal before the first is written)."""

    agency: Agency
    officer: str
    marking: Marking
    period: Period
    report: Report
    digest: str
    size: int
    at: datetime
    gateway: Fingerprint

    def base(self, submission: str) -> str:
        return f"{self.marking.token}__{self.agency.id}__{self.period}__{submission}"


@dataclass(frozen=True, slots=True)
class _Plan:
    recipient: Agency
    method: Delivery
    key_id: str
    fingerprints: tuple[Fingerprint, ...] = ()


def _plan(root: Root, recipient: Agency) -> _Plan:
    """How to seal for `recipient`; fail closed (GatewayError) when it has no key or password."""
    if recipient.delivery is Delivery.AES_ZIP:
        record, _ = root.vault.current(recipient.id)
        return _Plan(recipient, Delivery.AES_ZIP, record.id)
    officers = [o for o in root.registry.all(recipient.id) if o.active]
    if not officers:
        raise GatewayError(
            f"{recipient.id} has no active officer to encrypt to: register one "
            f"(`iom-gateway officers add --agency {recipient.id} ...`), then submit again"
        )
    fingerprints = tuple(Fingerprint.parse(o.fingerprint) for o in officers)
    return _Plan(recipient, Delivery.GPG, ",".join(str(f) for f in fingerprints), fingerprints)


def _seal_all(root: Root, submission: str, pair: Pair, stream: BinaryIO, sealed: _Sealed) -> list[Path]:
    """Deliver one package per recipient; each step is idempotent, so a redo after a crash completes the set."""
    recipients = root.config.recipients(sealed.agency)
    if not recipients:
        raise GatewayError(f"{sealed.agency.id} has no recipients: give it a route in gateway.toml")
    done = root.journal.deliveries(submission)
    # plan every recipient before writing anything: one without a key fails the whole submission
    plans = {
        r.id: _plan(root, r) for r in recipients if r.id not in done or done[r.id].status in (SEALING, ROLLED_BACK)
    }
    assert pair.signature is not None  # noqa: S101 (authenticated)
    sender_signature = armor_signature(pair.signature.read_bytes())
    delivered = []
    for recipient in recipients:
        previous = done.get(recipient.id)
        name = sealed.base(submission) + (".csv.gpg" if recipient.delivery is Delivery.GPG else ".zip")
        if previous is None or previous.status in (SEALING, ROLLED_BACK):
            _deliver(root, submission, plans[recipient.id], pair, stream, sealed, sender_signature, previous)
        delivered.append(root.store.folder(recipient.id) / name)
    return delivered


def _deliver(
    root: Root,
    submission: str,
    plan: _Plan,
    pair: Pair,
    stream: BinaryIO,
    sealed: _Sealed,
    sender_signature: str,
    previous: DeliveryRecord | None,
) -> None:
    """Write payload, manifest and its signature for one recipient (adopting what a crash left), then commit."""
    base = sealed.base(submission)
    recipient = plan.recipient.id
    payload_name = base + (".csv.gpg" if plan.method is Delivery.GPG else ".zip")
    payload = root.store.folder(recipient) / payload_name
    expires = (sealed.at + timedelta(days=root.config.packages.expiry_days)).isoformat(timespec="seconds")
    key_id = plan.key_id
    if previous is not None and payload.exists():
        key_id = previous.key_id  # made before a crash: the manifest must name the key it was made for
    else:
        root.journal.delivery_sealing(
            submission,
            recipient,
            package=base,
            method=plan.method.value,
            key_id=key_id,
            expires=expires,
            signed_by=str(sealed.gateway),
        )
        _write_payload(root, plan, pair, stream, sealed.gateway, base)
    faults.reached("deliver.payload")
    payload_sha = sha256_file(payload)
    manifest = _manifest(root, submission, sealed, plan, key_id, payload_name, payload_sha, sender_signature, expires)
    _publish_signed(root, recipient, base + ".manifest.json", canonical_json(manifest), sealed.gateway)
    faults.reached("deliver.manifest")
    root.journal.delivery_done(
        submission,
        recipient,
        (
            "package.delivered",
            {
                "package": base,
                "sender": sealed.agency.id,
                "officer": sealed.officer,
                "marking": sealed.marking.text,
                "rows": sealed.report.rows,
                "columns": list(sealed.report.columns),
                "purpose": root.config.purpose,
                "legal_basis": root.config.legal_basis,
                "method": plan.method.value,
                "key_id": key_id,
                "payload_sha256": payload_sha,
            },
        ),
    )
    faults.reached("deliver.committed")
    flush_audit(root)


def _write_payload(root: Root, plan: _Plan, pair: Pair, stream: BinaryIO, gateway: Fingerprint, base: str) -> None:
    payload_name = base + (".csv.gpg" if plan.method is Delivery.GPG else ".zip")
    with root.store.create_once(plan.recipient.id, payload_name) as temp:
        if plan.method is Delivery.GPG:
            root.keyring.encrypt_file(
                pair.csv,
                temp,
                recipients=plan.fingerprints,
                signer=gateway,
                literal_name=base + ".csv",
                compress_level=root.config.packages.compress_level,
            )
        else:
            password = root.vault.password(plan.key_id)
            stream.seek(0)
            with temp.open("wb") as target:
                write_aes_zip(stream, target, member=base + ".csv", password=password)
        faults.reached("deliver.payload.written")


def _manifest(
    root: Root,
    submission: str,
    sealed: _Sealed,
    plan: _Plan,
    key_id: str,
    payload_name: str,
    payload_sha: str,
    sender_signature: str,
    expires: str,
) -> dict[str, object]:
    officer_fpr = root.registry.get(sealed.officer).fingerprint
    return {
        "format": "iom-gateway-manifest",
        "version": MANIFEST_VERSION,
        "package": sealed.base(submission),
        "payload": payload_name,
        "recipient": plan.recipient.id,
        "marking": sealed.marking.text,
        "marking_token": sealed.marking.token,
        "partnership": root.config.partnership,
        "purpose": root.config.purpose,
        "legal_basis": root.config.legal_basis,
        "sender": {"agency": sealed.agency.id, "officer": sealed.officer, "fingerprint": officer_fpr},
        "period": str(sealed.period),
        "rows": sealed.report.rows,
        "columns": sealed.report.columns,
        "schema_version": root.standard.version,
        "plaintext_sha256": sealed.digest,
        "plaintext_bytes": sealed.size,
        "plaintext_encoding": sealed.report.encoding,
        "payload_sha256": payload_sha,
        "sender_signature": sender_signature,
        "encryption": {"method": plan.method.value, "key_id": key_id},
        "gateway_key": str(sealed.gateway),
        "created": sealed.at.isoformat(timespec="seconds"),
        "expires": expires,
        "audit": root.audit.witness(),  # the log's seq and head now: the recipient holds a witness of it
    }


def _publish_signed(root: Root, agency: str, name: str, document: bytes, gateway: Fingerprint) -> None:
    """Publish `document` as `name` (or adopt the one a crash left) and sign what is published."""
    with root.store.create_once(agency, name) as temp:
        temp.write_bytes(document)
    published = root.store.folder(agency) / name
    with root.store.create_once(agency, name + ".sig") as temp:
        temp.write_bytes(root.keyring.sign_detached(published, gateway))


def _finish(root: Root, record: SubmissionRecord, pair: Pair) -> None:
    """Remove the delivered submission from the outbox (signature first), then close it in the journal."""
    _remove(pair)
    faults.reached("finish.removed")
    root.journal.done(record.id)


def _delivered_outcome(root: Root, record: SubmissionRecord) -> Delivered:
    deliveries = root.journal.deliveries(record.id)
    packages = tuple(root.store.folder(d.recipient) / d.package for d in deliveries.values())
    return Delivered(
        record.agency, record.name, record.id, record.officer or "", record.marking or "", record.rows or 0, packages
    )


def flush_audit(root: Root, *, check_log: bool = False) -> int:
    """Append the audit events the journal staged; with `check_log`, skip those a crash already appended."""
    flushed = 0
    for staged in root.journal.staged_audit():
        if not (check_log and root.audit.find_ref(staged.ref) is not None):
            root.audit.append(staged.event, actor=staged.actor, agency=staged.agency, ref=staged.ref, **staged.details)
            flushed += 1
        root.journal.audit_appended(staged.ref)
    return flushed


# ----------------------------------------------------------------------------------------- refuse


def _duplicate(root: Root, agency: Agency, pair: Pair, original: str) -> Duplicate:
    text = (
        f"{pair.csv.name}: not delivered again: the same bytes were already delivered as submission "
        f"{original}. Nothing was sent. If the data changed, export it again.\n"
    )
    _write_report(root, agency, pair.csv.name, text, {"file": pair.csv.name, "duplicate_of": original})
    root.audit.append("submission.duplicate", actor="gateway", agency=agency.id, original=original)
    _remove(pair)
    return Duplicate(agency.id, pair.csv.name, original)


def _reject(
    root: Root, agency: Agency, pair: Pair, record: SubmissionRecord, refused: _Refused, now: datetime
) -> Rejected:
    """Quarantine the submission encrypted to the gateway key, write its report, clear the outbox.

    The verdict is journaled first; every later step is idempotent (names derive from the
    submission id), so a crash anywhere is finished by the restart.
    """
    owned = root.journal.rejecting(record.id, refused.stage, refused.reasons[0])
    if record.status in (RECEIVED, SEALING):  # what an interrupted earlier attempt published
        _roll_back(root, record.id)
    _quarantine(root, agency, pair, record.id)
    faults.reached("reject.quarantined")
    text, detail = _report_text(pair, refused, now), _detail(agency, pair, refused)
    report_path = _write_report(root, agency, pair.csv.name, text, detail)
    _remove(pair)
    faults.reached("reject.removed")
    audit: tuple[str, dict[str, Any]] = (
        "submission.rejected",
        {
            "submission": record.id,
            "stage": refused.stage,
            "rules": dict(refused.report.counts) if refused.report is not None else None,
        },
    )
    if owned:
        root.journal.rejected(record.id, audit)
        flush_audit(root)
    else:  # a copy of something already delivered, refused (e.g. signed by someone else): the original stands
        root.audit.append(audit[0], actor="gateway", agency=agency.id, **audit[1])
    return Rejected(agency.id, pair.csv.name, refused.stage, refused.reasons, report_path)


def _quarantine(root: Root, agency: Agency, pair: Pair, submission: str) -> None:
    folder = root.path / QUARANTINE / agency.id
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    gateway = root.gateway_key()
    if pair.csv.is_file() and not pair.csv.is_symlink():
        name = f"{pair.csv.name}.{submission}.gpg"
        root.keyring.encrypt_file(
            pair.csv, folder / name, recipients=[gateway], signer=gateway, literal_name=pair.csv.name
        )
        root.journal.quarantined(f"{agency.id}/{name}", agency.id, submission, str(gateway))
    if pair.signature is not None and pair.signature.is_file():
        name = f"{pair.signature.name}.{submission}"
        atomic_write_bytes(folder / name, pair.signature.read_bytes())
        root.journal.quarantined(f"{agency.id}/{name}", agency.id, submission, str(gateway))


def _report_text(pair: Pair, refused: _Refused, now: datetime) -> str:
    lines = [
        f"{pair.csv.name}: REJECTED at {refused.stage} ({now:%Y-%m-%d %H:%M} UTC); nothing was delivered.",
        *(f"  - {reason}" for reason in refused.reasons),
    ]
    if refused.report is not None:
        lines += ["", refused.report.to_text().rstrip()]
    lines += ["", "The submission is kept encrypted in quarantine; fix it and submit it again."]
    return "\n".join(lines) + "\n"


def _detail(agency: Agency, pair: Pair, refused: _Refused) -> dict[str, object]:
    return {
        "file": pair.csv.name,
        "agency": agency.id,
        "stage": refused.stage,
        "reasons": list(refused.reasons),
        "validation": refused.report.to_json() if refused.report is not None else None,
    }


def _roll_back(root: Root, submission: str) -> list[str]:
    """Withdraw the packages an unfinished submission already published; keep any a recipient pulled."""
    withdrawn = []
    for delivery in root.journal.deliveries(submission).values():
        if delivery.status == ROLLED_BACK:
            continue
        if root.journal.pulled_by_anyone(delivery.package, delivery.recipient):
            log.warning("kept agency=%s package=%s: pulled before the rollback", delivery.recipient, delivery.package)
            continue
        root.journal.rolled_back(submission, delivery.recipient)
        suffix = ".csv.gpg" if delivery.method == Delivery.GPG.value else ".zip"
        folder = root.store.folder(delivery.recipient)
        for extension in (suffix, ".manifest.json", ".manifest.json.sig"):
            (folder / (delivery.package + extension)).unlink(missing_ok=True)
        fsync_dir(folder)
        withdrawn.append(f"{delivery.recipient}/{delivery.package}")
    return withdrawn


def _write_report(root: Root, agency: Agency, name: str, text: str, detail: Mapping[str, object]) -> Path:
    folder = root.path / OUTBOX / agency.id / REJECTED
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.is_symlink() or not folder.is_dir():
        raise SchemaError(f"{str(folder)!r} is not a plain folder: remove it so reports can be written")
    stem = name.removesuffix(".csv")
    atomic_write_bytes(folder / f"{stem}.report.txt", text.encode())
    atomic_write_bytes(folder / f"{stem}.report.json", json.dumps(detail, indent=2, ensure_ascii=False).encode())
    return folder / f"{stem}.report.txt"


def _remove(pair: Pair) -> None:
    """Signature first: a crash in between leaves a CSV the journal knows, never an orphan signature."""
    for path in (pair.signature, pair.csv):
        if path is not None:
            path.unlink(missing_ok=True)
    fsync_dir(pair.csv.parent)


def _same_file(path: Path, stream: BinaryIO) -> bool:
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(stream.fileno())
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


# ----------------------------------------------------------------------------------------- recover


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a restart found unfinished and how it ended."""

    audit_events: int = 0
    finished: tuple[str, ...] = ()
    abandoned: tuple[str, ...] = ()
    withdrawn: tuple[str, ...] = ()
    temp_files: int = 0
    audit_repaired: bool = False

    @property
    def anything(self) -> bool:
        return bool(self.audit_events or self.finished or self.abandoned or self.temp_files or self.audit_repaired)


def recover(root: Root) -> Recovery:
    """Finish or roll back whatever a crash left in flight; call before processing, with the daemon lock held.

    In order: repair a torn audit line; append audit events staged but not yet logged (skipping those
    already there); finish submissions that were delivered but not yet removed from the outbox,
    and rejections that were journaled; abandon (and withdraw the packages of) submissions whose
    files vanished; remove our own stale temp files. What is still in an outbox is simply processed
    again: every step is idempotent.
    """
    repaired = root.audit.repair()
    events = flush_audit(root, check_log=True)
    finish_repacks(root)
    finished, abandoned, withdrawn = [], [], []
    for record in root.journal.submissions(DELIVERED, REJECTING, RECEIVED, SEALING):
        pair = _outbox_pair(root, record)
        if record.status == DELIVERED:
            if pair is not None:
                _remove(pair)
            root.journal.done(record.id)
            finished.append(record.id)
        elif pair is None and record.status == REJECTING:
            root.journal.rejected(
                record.id, ("submission.rejected", {"submission": record.id, "stage": record.stage, "rules": None})
            )
            finished.append(record.id)
        elif pair is None:
            withdrawn += _roll_back(root, record.id) if record.status == SEALING else []
            root.journal.abandoned(record.id, ("submission.abandoned", {"submission": record.id, "was": record.status}))
            abandoned.append(record.id)
    events += flush_audit(root)
    return Recovery(events, tuple(finished), tuple(abandoned), tuple(withdrawn), _remove_temp_files(root), repaired)


REPACK_SUFFIX = ".repack"


def finish_repacks(root: Root) -> int:
    """Swap in the files of re-encrypted packages that were all written before a crash (see rotation)."""
    finished = 0
    for submission, recipient, key_id, signed_by, files in root.journal.repacks():
        folder = root.store.folder(recipient)
        for name in files:
            staged = folder / f".{name}{REPACK_SUFFIX}"
            if staged.exists():
                os.replace(staged, folder / name)
        fsync_dir(folder)
        root.journal.repack_done(submission, recipient, key_id, signed_by)
        finished += 1
    return finished


def _outbox_pair(root: Root, record: SubmissionRecord) -> Pair | None:
    """The submission's files if its CSV is still in the outbox with the same bytes."""
    csv_path = root.path / OUTBOX / record.agency / record.name
    try:
        stream, _ = open_regular(csv_path)
    except GatewayError:
        return None
    with stream:
        if sha256_of(stream) != record.sha256:
            return None
    signature = next((p for s in SIGNATURE_SUFFIXES if (p := csv_path.with_name(csv_path.name + s)).is_file()), None)
    return Pair(csv_path, signature, 0.0)


def _remove_temp_files(root: Root) -> int:
    """Delete the temp files our own writers leave when killed (never an agency's own temp files in an outbox)."""
    folders = [root.path / STATE, root.path / KEYS]
    for parent in (root.path / INBOX, root.path / QUARANTINE):
        folders += [p for p in parent.iterdir() if p.is_dir() and not p.is_symlink()] if parent.is_dir() else []
    outboxes = root.path / OUTBOX
    if outboxes.is_dir():
        folders += [p / REJECTED for p in outboxes.iterdir() if (p / REJECTED).is_dir()]
    removed = 0
    for folder in folders:
        for temp in [*folder.glob(".*.tmp"), *folder.glob(f".*{REPACK_SUFFIX}")]:
            if temp.is_file() and not temp.is_symlink():
                temp.unlink()
                removed += 1
                log.info("removed stale temp file=%r", str(temp.relative_to(root.path)))
    return removed


def now_utc() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------------------------- submit


def submit(
    root: Root, path: Path, *, agency_id: str, officer_id: str, marking: str | None, gnupghome: Path | None, today: date
) -> tuple[Report, Path | None]:
    """Validate `path`, sign it as the officer and drop CSV and signature into the agency's outbox.

    The signature lands first, each by temp file and rename, so the gateway never sees a CSV
    without its signature or half of either. Returns the report and the outbox path (None if refused).
    """
    agency = root.config.agency(agency_id)
    officer = root.registry.get(officer_id)
    if officer.agency != agency.id or not officer.active:
        raise UsageError(f"{officer_id} is not an active officer of {agency.id}: a DO/PDO of {agency.id} must sign")
    requested = Level.parse(marking) if marking else None
    base = path.name
    if requested is not None and requested > root.config.marking.level:
        base = f"{requested.name}{MARKING_SEPARATOR}{base}"
    report = check_file(root, path, agency.id, _period(path.name, datetime.now(UTC)), today)
    if not report.valid:
        return report, None
    home = gnupghome or root.demo_home(officer.id)
    if not home.is_dir():
        raise UsageError(f"no GnuPG home for {officer.id}: pass --gnupghome with the officer's own keyring")
    signature = Keyring(home).sign_detached(path, Fingerprint.parse(officer.fingerprint))
    outbox = root.path / OUTBOX / agency.id
    outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = outbox / base
    if target.exists() or (outbox / (base + ".sig")).exists():
        raise UsageError(
            f"{base!r} is already waiting in {agency.id}'s outbox: wait for the gateway, or rename the file"
        )
    atomic_write_bytes(outbox / (base + ".sig"), signature)
    with atomic_target(target) as temp, open_regular(path)[0] as source, temp.open("wb") as copy:
        shutil.copyfileobj(source, copy, CHUNK)
    root.audit.append("submission.submitted", actor=officer.id, agency=agency.id, rows=report.rows)
    return report, target
