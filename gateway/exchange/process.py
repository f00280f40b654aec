"""The use cases. Only this module knows the order a submission flows in:
intake -> authenticate -> validate -> mark -> seal -> deliver -> record.

A submission is opened once (`fsio.OpenFile`) and every stage reads that one descriptor: the
signature check, the hash, the validator and every encryption each get a read of their own, and
each complete read must hash to what the first did. Nothing is read again by name, so a file
renamed in or written to while the gateway works on it is refused, never sealed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.adapters.aeszip import write_aes_zip
from gateway.adapters.fsio import Folder, OpenFile, fsync_dir, is_plain_name, open_once, shown
from gateway.adapters.gpg import (
    MARKING_NOTATION,
    MAX_SIGNATURE_BYTES,
    PERIOD_NOTATION,
    Fingerprint,
    Keyring,
    Purpose,
    SignatureCheck,
)
from gateway.core import faults
from gateway.core.errors import (
    ChangedError,
    ConfigError,
    CryptoError,
    GatewayError,
    InputFileError,
    PolicyError,
    StorageError,
    UsageError,
    VaultError,
)
from gateway.core.manifest import (
    MANIFEST_VERSION,
    MAX_MANIFEST_BYTES,
    armor_signature,
    binary_signature,
    canonical_json,
)
from gateway.core.marking import MARKING_SEPARATOR, Level, Marking, apply_marking, requested_level
from gateway.core.model import Agency, Delivery, Period
from gateway.exchange.authenticate import Signature, authenticate
from gateway.exchange.intake import OUTBOX, REJECTED, SIGNATURE_SUFFIXES, Pair, open_outbox, scan_outbox
from gateway.state.journal import (
    DELIVERED,
    DONE,
    RECEIVED,
    REJECTING,
    ROLLED_BACK,
    SEALING,
    DeliveryRecord,
    SubmissionRecord,
)
from gateway.state.root import Root
from gateway.validate import Report, validate_file, validate_stream

log = logging.getLogger(__name__)
SAMPLES = "samples"
QUARANTINE = "quarantine"
INBOX = "inbox"
STATE = "state"
KEYS = "keys"
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
        return f"delivered {self.agency}/{shown(self.name)} from {self.officer}: {what}, to {recipients}"


@dataclass(frozen=True, slots=True)
class Rejected:
    agency: str
    name: str
    stage: str
    reasons: tuple[str, ...]
    report: Path | None  # None when the agency's rejected/ folder could not be written safely

    @property
    def summary(self) -> str:
        return f"rejected  {self.agency}/{shown(self.name)} at {self.stage}: {self.reasons[0]}"


@dataclass(frozen=True, slots=True)
class Duplicate:
    agency: str
    name: str
    original: str

    @property
    def summary(self) -> str:
        return f"duplicate {self.agency}/{shown(self.name)}: already delivered as {self.original}"


@dataclass(frozen=True, slots=True)
class Waiting:
    agency: str
    name: str
    why: str = "no signature yet"

    @property
    def summary(self) -> str:
        return f"waiting   {self.agency}/{shown(self.name)}: {self.why}"


@dataclass(frozen=True, slots=True)
class Deferred:
    """The environment failed (disk full, permissions): the file stays in the outbox for the next try."""

    agency: str
    name: str
    reason: str

    @property
    def summary(self) -> str:
        return f"deferred  {self.agency}/{shown(self.name)}: {self.reason}; it stays in the outbox and is tried again"


Outcome = Delivered | Rejected | Duplicate | Waiting | Deferred
MAX_ATTEMPTS = 3  # a file that stopped the gateway this often is quarantined instead of tried again


class _Refused(Exception):
    """A stage refused the submission (internal: becomes a Rejected outcome)."""

    def __init__(self, stage: str, reasons: Sequence[str], report: Report | None = None) -> None:
        super().__init__(stage)
        self.stage, self.reasons, self.report = stage, tuple(reasons), report


@dataclass(frozen=True, slots=True)
class _Signed:
    """The signature file as read once: its binary form is what gpg checks and the manifest carries."""

    name: str
    identity: tuple[int, int]
    raw: bytes
    binary: bytes | None
    problem: str | None


@dataclass(frozen=True, slots=True)
class _Job:
    """One submission in hand: where it lies, its one open file, its signature and gpg's verdict."""

    agency: Agency
    folder: Folder
    pair: Pair
    source: OpenFile
    signed: _Signed | None
    check: SignatureCheck | None

    @property
    def shown(self) -> str:
        return shown(self.pair.csv)


# ----------------------------------------------------------------------------------------- process


def process_once(root: Root, now: datetime) -> list[Outcome]:
    """Process every complete submission in every outbox once; a bad file never stops the others."""
    outcomes: list[Outcome] = []
    for agency in root.config.agencies.values():
        try:
            folder = open_outbox(root.path, agency.id)
        except UsageError:  # not there (yet): nothing to take
            continue
        except InputFileError as exc:
            log.error("refused agency=%s outbox, never followed: %s", agency.id, exc.message)
            continue
        with folder:
            intake = scan_outbox(folder, now.timestamp())
            for name, why in intake.ignored:
                log.warning("ignored agency=%s file=%r reason=%r", agency.id, name, why)
            for pair in intake.pairs:
                outcome = process_pair(root, agency, folder, pair, now)
                if outcome is not None:
                    outcomes.append(outcome)
    return outcomes


def process_pair(root: Root, agency: Agency, folder: Folder, pair: Pair, now: datetime) -> Outcome | None:
    """Take one submission through every stage; None if it vanished before it could be read.

    Never raises for a bad file (that is a Rejected outcome) nor for a full disk or a permission
    problem (Deferred: the file stays where it is and is tried again).
    """
    if pair.signature is None and pair.age_seconds < root.config.submissions.pairing_timeout_seconds:
        return Waiting(agency.id, pair.csv)
    try:
        source = folder.open_file(pair.csv)
    except UsageError:
        log.info("vanished agency=%s file=%r: removed before it was taken", agency.id, pair.csv)
        return None
    except GatewayError as exc:
        log.warning("unreadable agency=%s file=%r reason=%r", agency.id, pair.csv, exc.message)
        return None
    submission = None
    try:
        with source:
            if _being_written(root, source, pair):
                return Waiting(agency.id, pair.csv, "still being written: taken once its writer closes it")
            job = _take(root, agency, folder, pair, source)
            digest = source.hash()
            submission = _submission_id(agency.id, digest)
            record = root.journal.begin(submission, agency.id, _journal_name(pair.csv), digest)
            outcome = _attempt(root, job, record, now)
    except (OSError, StorageError, VaultError, ConfigError) as exc:
        reason = exc.message if isinstance(exc, GatewayError) else (exc.strerror or str(exc))
        code = "" if isinstance(exc, GatewayError) else errno.errorcode.get(exc.errno or 0, str(exc.errno))
        log.error("deferred agency=%s file=%r errno=%s reason=%r", agency.id, pair.csv, code, reason)
        _release(root, submission)
        return Deferred(agency.id, pair.csv, reason)
    log.info("processed agency=%s file=%r outcome=%s", agency.id, pair.csv, type(outcome).__name__.lower())
    return outcome


def _being_written(root: Root, source: OpenFile, pair: Pair) -> bool:
    """Whether a writer still has the file open (or, where that cannot be told, it changed too recently)."""
    active = source.writer_active()
    if active is None:
        return pair.age_seconds < root.config.daemon.settle_seconds
    return active


def _take(root: Root, agency: Agency, folder: Folder, pair: Pair, source: OpenFile) -> _Job:
    """Read the signature once and check it over the first complete read of the file (which fixes its hash)."""
    signed = _read_signature(folder, pair.signature) if pair.signature is not None else None
    check = None
    if signed is not None and signed.binary is not None:
        check = root.keyring.verify_detached(source.chunks(), signed.binary)
        if check.valid and source.digest is None:  # gpg vouched for bytes the hash did not see
            check = SignatureCheck(False, None, None, "gpg did not read the whole file: submit it again")
    return _Job(agency, folder, pair, source, signed, check)


def _read_signature(folder: Folder, name: str) -> _Signed | None:
    """The signature file's bytes, read once and capped; None if it went away."""
    try:
        with folder.open_file(name) as file:
            raw = os.pread(file.fd, MAX_SIGNATURE_BYTES + 1, 0)
            identity = file.identity
    except UsageError:
        return None
    except InputFileError as exc:
        return _Signed(name, (0, 0), b"", None, f"the signature file cannot be read ({exc.message})")
    if len(raw) > MAX_SIGNATURE_BYTES:
        return _Signed(name, identity, b"", None, f"{shown(name)!r} is larger than a detached signature can be")
    try:
        return _Signed(name, identity, raw, binary_signature(raw), None)
    except ValueError as exc:
        return _Signed(name, identity, raw, None, f"not an OpenPGP signature ({exc}): sign with gpg --detach-sign FILE")


def _journal_name(name: str) -> str:
    """The name as the journal keeps it: the file system's, or its escaped form if it is not UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return shown(name)
    return name


def _release(root: Root, submission: str | None) -> None:
    """After an error that was caught and logged, do not count the attempt as a crash."""
    if submission is None:
        return
    with suppress(OSError, StorageError):
        root.journal.release(submission)


def _attempt(root: Root, job: _Job, record: SubmissionRecord, now: datetime) -> Outcome:
    if record.status == DELIVERED:  # delivered before a crash; only the outbox copy was left
        _finish(root, record, job)
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
        return _process(root, job, record, now)
    except _Refused as refused:
        return _reject(root, job, record, refused, now)
    except (StorageError, VaultError, ConfigError):
        raise  # the gateway's own state (disk, vault, an expired key), not the file: deferred, never quarantined
    except ChangedError as exc:
        return _reject(root, job, record, _Refused("intake", [exc.message]), now)
    except GatewayError as exc:
        return _reject(root, job, record, _Refused("seal", [exc.message]), now)


def _process(root: Root, job: _Job, record: SubmissionRecord, now: datetime) -> Outcome:
    officer = _authenticate(root, job, now)
    # only after authentication: an unsigned drop must not learn what was delivered before
    if record.status == DONE:
        return _duplicate(root, job, record.id)
    marking, period = _intent(root, job, now)
    report = _validate(root, job, period, now)
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
        job.agency,
        officer,
        marking,
        period,
        report,
        digest=fixed.sha256,
        size=job.source.length or 0,
        at=_parse_time(fixed.sealed_at, now),
        gateway=root.gateway_key(),  # one key signs every package and manifest of the submission
        signer=_signer(job),
    )
    packages = _seal_all(root, record.id, job, sealed)
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
    _finish(root, replace(fixed, status=DELIVERED), job)
    return Delivered(job.agency.id, job.pair.csv, record.id, officer, marking.token, report.rows, tuple(packages))


def _signer(job: _Job) -> Fingerprint:
    assert job.check is not None and job.check.fingerprint is not None  # noqa: S101 (authenticated)
    return job.check.fingerprint


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


def _authenticate(root: Root, job: _Job, now: datetime) -> str:
    """The registered officer who signed exactly these bytes; refuse (naming the fix) otherwise."""
    if job.signed is None:
        timeout = root.config.submissions.pairing_timeout_seconds
        raise _Refused(
            "intake",
            [
                f"no signature arrived within {timeout} seconds: every submission needs a detached "
                f"OpenPGP signature by a DO/PDO of {job.agency.id} beside it ({job.shown}.sig or "
                ".asc); sign it and submit both again"
            ],
        )
    if job.check is None:
        raise _Refused("authenticate", [f"the signature does not verify: {job.signed.problem}"])
    check = job.check
    fingerprint = str(check.fingerprint) if check.fingerprint else None
    officer = root.registry.by_fingerprint(fingerprint, now) if fingerprint else None
    limits = root.config.submissions
    found = authenticate(
        Signature(
            check.valid, fingerprint, check.signed_at, check.problem, check.hash_algorithm, check.signature_class
        ),
        officer,
        job.agency.id,
        now=now,
        max_age=timedelta(hours=limits.signature_max_age_hours),
        skew=timedelta(seconds=limits.clock_skew_seconds),
    )
    if isinstance(found, str):
        raise _Refused("authenticate", [found])
    return found.id


def _intent(root: Root, job: _Job, now: datetime) -> tuple[Marking, Period]:
    """The marking and period: the signed notations decide; a file-name prefix can only raise the
    marking; a period in the file name must agree with a signed one. Without notations, the file
    name decides (a prefix, a YYYY-MM), else the floor and the current month."""
    assert job.check is not None  # noqa: S101 (authenticated)
    try:
        signed_marking, signed_period = job.check.notation(MARKING_NOTATION), job.check.notation(PERIOD_NOTATION)
        level = Level.parse(signed_marking) if signed_marking is not None else None
    except (CryptoError, PolicyError) as exc:
        problem = f"the signed marking ({MARKING_NOTATION}): {exc.message}; sign again"
        raise _Refused("authenticate", [problem]) from None
    prefix, base = requested_level(job.pair.csv)
    marking = apply_marking(root.config.marking, max((x for x in (level, prefix) if x is not None), default=None))
    named = _period_in(base)
    if signed_period is None:
        return marking, _period(base, now)
    try:
        period = Period.parse(signed_period)
    except UsageError as exc:
        raise _Refused("authenticate", [f"the signed period ({PERIOD_NOTATION}): {exc.message}; sign again"]) from None
    if named is not None and named != period:
        raise _Refused(
            "authenticate",
            [
                f"the file name says period {named} but the officer signed it for {period} ({PERIOD_NOTATION}): "
                f"rename the file to match the signed period, or sign it again for {named}"
            ],
        )
    return marking, period


def _validate(root: Root, job: _Job, period: Period, now: datetime) -> Report:
    """Table 1 and the ownership matrix over a complete read of the one open file."""
    reads = job.source.complete_reads
    report = validate_stream(
        job.source.stream(),
        job.source.length or 0,
        job.folder.path / job.shown,
        job.agency,
        root.config,
        root.standard,
        period=period,
        today=now.date(),
    )
    if not report.valid:
        raise _Refused("validate", [f"{sum(report.counts.values())} row error(s) against Table 1"], report)
    if job.source.complete_reads == reads:  # a valid report reads to the end; never seal what it did not see
        raise _Refused("validate", ["the validator did not read the whole file: submit it again"])
    return report


def _period_in(name: str) -> Period | None:
    match = _PERIOD_IN_NAME.search(name)
    return Period(int(match[1]), int(match[2])) if match else None


def _period(name: str, now: datetime) -> Period:
    """The month the data is for: a YYYY-MM in the file name, else the current month."""
    return _period_in(name) or Period.of(now.date())


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
    signer: Fingerprint  # the key that made the sender's signature (during a rekey's grace, the old one)

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


def _suffix(method: Delivery | str) -> str:
    return ".csv.gpg" if method in (Delivery.GPG, Delivery.GPG.value) else ".zip"


def _seal_all(root: Root, submission: str, job: _Job, sealed: _Sealed) -> list[Path]:
    """Deliver one package per recipient; each step is idempotent, so a redo after a crash completes the set."""
    recipients = root.config.recipients(sealed.agency)
    if not recipients:
        raise GatewayError(f"{sealed.agency.id} has no recipients: give it a route in gateway.toml")
    done = root.journal.deliveries(submission)
    # plan every recipient before writing anything: one without a key fails the whole submission
    plans = {
        r.id: _plan(root, r) for r in recipients if r.id not in done or done[r.id].status in (SEALING, ROLLED_BACK)
    }
    assert job.signed is not None and job.signed.binary is not None  # noqa: S101 (authenticated)
    sender_signature = armor_signature(job.signed.binary)  # exactly what gpg checked, armored cleanly
    delivered = []
    for recipient in recipients:
        previous = done.get(recipient.id)
        if previous is None or previous.status in (SEALING, ROLLED_BACK):
            _deliver(root, submission, plans[recipient.id], job.source, sealed, sender_signature, previous)
        delivered.append(root.store.root / recipient.id / (sealed.base(submission) + _suffix(recipient.delivery)))
    return delivered


def _deliver(
    root: Root,
    submission: str,
    plan: _Plan,
    source: OpenFile,
    sealed: _Sealed,
    sender_signature: str,
    previous: DeliveryRecord | None,
) -> None:
    """Write payload, manifest and its signature for one recipient (adopting what a crash left), then commit."""
    base = sealed.base(submission)
    recipient = plan.recipient.id
    payload_name = base + _suffix(plan.method)
    expires = (sealed.at + timedelta(days=root.config.packages.expiry_days)).isoformat(timespec="seconds")
    key_id = plan.key_id
    if previous is not None and _published(root, recipient, payload_name):
        key_id = previous.key_id  # made before a crash: the manifest must name the key it was made for
        payload_sha = root.store.sha256(recipient, payload_name)
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
        payload_sha = _write_payload(root, plan, source, sealed.gateway, base)
    faults.reached("deliver.payload")
    manifest = _manifest(root, submission, sealed, plan, key_id, payload_name, payload_sha, sender_signature, expires)
    _publish_manifest(root, recipient, base, canonical_json(manifest), sealed.gateway)
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


def _published(root: Root, agency: str, name: str) -> bool:
    with root.store.open(agency) as folder:
        return folder.identity(name) is not None


def _write_payload(root: Root, plan: _Plan, source: OpenFile, gateway: Fingerprint, base: str) -> str:
    """Seal a complete read of the submission into the recipient's inbox; return the payload's SHA-256."""
    reads = source.complete_reads
    with root.store.create_once(plan.recipient.id, base + _suffix(plan.method)) as created:
        if plan.method is Delivery.GPG:
            root.keyring.encrypt(
                source.chunks(),
                created.file,
                recipients=plan.fingerprints,
                signer=gateway,
                literal_name=base + ".csv",
                compress_level=root.config.packages.compress_level,
            )
        else:
            password = root.vault.password(plan.key_id)
            write_aes_zip(source.stream(), created.file, member=base + ".csv", password=password)
        if source.complete_reads == reads:
            raise ChangedError(f"{source.name!r} was not read to its end while being sealed: submit it again")
        faults.reached("deliver.payload.written")
    return created.sha256


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
        "sender": {"agency": sealed.agency.id, "officer": sealed.officer, "fingerprint": str(sealed.signer)},
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


def _publish_manifest(root: Root, agency: str, base: str, document: bytes, gateway: Fingerprint) -> None:
    """Publish a manifest and the gateway's signature over exactly the bytes composed here (never over
    bytes read back from an inbox). A signed pair a crash left is adopted if the signature holds; an
    unsigned manifest is worth nothing and is replaced."""
    name, signature_name = base + ".manifest.json", base + ".manifest.json.sig"
    there = root.store.read(agency, name, MAX_MANIFEST_BYTES)
    signature = root.store.read(agency, signature_name, MAX_SIGNATURE_BYTES)
    if there is not None and signature is not None:
        check = root.keyring.verify_bytes(there, signature, purpose=Purpose.MANIFEST)
        if check.valid and str(check.fingerprint) in {key for key, *_ in root.journal.gateway_keys()}:
            return
    root.store.replace(agency, name, document)
    if signature is not None:
        with root.store.open(agency) as folder:
            folder.remove(signature_name)
    root.store.put(agency, signature_name, root.keyring.sign_bytes(document, gateway, purpose=Purpose.MANIFEST))


def _finish(root: Root, record: SubmissionRecord, job: _Job) -> None:
    """Remove the delivered submission from the outbox (signature first), then close it in the journal."""
    _remove(job)
    faults.reached("finish.removed")
    root.journal.done(record.id)


def _delivered_outcome(root: Root, record: SubmissionRecord) -> Delivered:
    deliveries = root.journal.deliveries(record.id)
    packages = tuple(root.store.root / d.recipient / (d.package + _suffix(d.method)) for d in deliveries.values())
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


def _duplicate(root: Root, job: _Job, original: str) -> Duplicate:
    text = (
        f"{job.shown}: not delivered again: the same bytes were already delivered as submission "
        f"{original}. Nothing was sent. If the data changed, export it again.\n"
    )
    _write_report(root, job.agency, job.pair.csv, text, {"file": job.shown, "duplicate_of": original})
    root.audit.append("submission.duplicate", actor="gateway", agency=job.agency.id, original=original)
    _remove(job)
    return Duplicate(job.agency.id, job.pair.csv, original)


def _reject(root: Root, job: _Job, record: SubmissionRecord, refused: _Refused, now: datetime) -> Rejected:
    """Quarantine the submission encrypted to the gateway key, write its report, clear the outbox.

    The verdict is journaled first; every later step is idempotent (names derive from the
    submission id), so a crash anywhere is finished by the restart.
    """
    owned = root.journal.rejecting(record.id, refused.stage, refused.reasons[0])
    if record.status in (RECEIVED, SEALING):  # what an interrupted earlier attempt published
        _roll_back(root, record.id)
    _quarantine(root, job, record.id)
    faults.reached("reject.quarantined")
    text, detail = _report_text(job, refused, now), _detail(job, refused)
    report_path = _write_report(root, job.agency, job.pair.csv, text, detail)
    _remove(job)
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
        root.audit.append(audit[0], actor="gateway", agency=job.agency.id, **audit[1])
    return Rejected(job.agency.id, job.pair.csv, refused.stage, refused.reasons, report_path)


def _own_name(name: str) -> str:
    """A name for the gateway's own files about `name`: the name itself if it is plain text of at
    most 200 bytes, else one derived from its bytes (a name that is not UTF-8, holds control
    characters or is too long to carry a suffix must still get its report)."""
    if is_plain_name(name):
        return name
    return f"unusable-name-{hashlib.sha256(os.fsencode(name)).hexdigest()[:12]}.csv"


def _quarantine(root: Root, job: _Job, submission: str) -> None:
    """Keep what was read (encrypted to the gateway key) and the signature as it came."""
    gateway = root.gateway_key()
    name = f"{_own_name(job.pair.csv)}.{submission}"
    with Folder.open(root.path, QUARANTINE, job.agency.id, create=True) as folder:
        with folder.new_file(name + ".gpg") as target:
            root.keyring.encrypt(
                job.source.chunks(compare=False),
                target,
                recipients=[gateway],
                signer=gateway,
                literal_name=_own_name(job.pair.csv),
                purpose=Purpose.QUARANTINE,
            )
        root.journal.quarantined(f"{job.agency.id}/{name}.gpg", job.agency.id, submission, str(gateway))
        if job.signed is not None:
            suffix = next((s for s in SIGNATURE_SUFFIXES if job.signed.name.endswith(s)), ".sig")
            folder.write(name + suffix, job.signed.raw)
            root.journal.quarantined(f"{job.agency.id}/{name}{suffix}", job.agency.id, submission, str(gateway))


def _report_text(job: _Job, refused: _Refused, now: datetime) -> str:
    lines = [
        f"{job.shown}: REJECTED at {refused.stage} ({now:%Y-%m-%d %H:%M} UTC); nothing was delivered.",
        *(f"  - {reason}" for reason in refused.reasons),
    ]
    if _own_name(job.pair.csv) != job.pair.csv:
        lines.append(
            "  - the file's name is not plain text of at most 200 bytes (bytes that are not UTF-8, control or"
            " direction characters, or too long): this report is named after its bytes; rename the file"
        )
    if refused.report is not None:
        lines += ["", refused.report.to_text().rstrip()]
    lines += ["", "The submission is kept encrypted in quarantine; fix it and submit it again."]
    return "\n".join(lines) + "\n"


def _detail(job: _Job, refused: _Refused) -> dict[str, object]:
    return {
        "file": job.shown,
        "agency": job.agency.id,
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
        with root.store.open(delivery.recipient) as folder:
            for extension in (_suffix(delivery.method), ".manifest.json", ".manifest.json.sig"):
                folder.remove(delivery.package + extension)
            folder.sync()
        withdrawn.append(f"{delivery.recipient}/{delivery.package}")
    return withdrawn


def _write_report(root: Root, agency: Agency, name: str, text: str, detail: Mapping[str, object]) -> Path | None:
    """Write the report beside the outbox (rejected/), never through a link; None if that is not possible."""
    stem = _own_name(name).removesuffix(".csv")
    try:
        with open_outbox(root.path, agency.id, create=True) as outbox, outbox.sub(REJECTED, create=True) as folder:
            folder.write(f"{stem}.report.txt", text.encode())
            folder.write(f"{stem}.report.json", json.dumps(detail, indent=2, ensure_ascii=False).encode())
    except (InputFileError, UsageError) as exc:
        log.error("no report agency=%s file=%r: %s", agency.id, name, exc.message)
        return None
    return root.path / OUTBOX / agency.id / REJECTED / f"{stem}.report.txt"


def _remove(job: _Job) -> None:
    """Signature first: a crash in between leaves a CSV the journal knows, never an orphan signature.

    Each is removed only if its name still leads to the file that was read: one renamed in meanwhile
    stays, and is a submission of its own."""
    if job.signed is not None:
        job.folder.remove(job.signed.name, job.signed.identity)
    job.folder.remove(job.pair.csv, job.source.identity)
    job.folder.sync()


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
        left = _outbox_copy(root, record)
        if record.status == DELIVERED:
            if left is not None:
                _remove_copy(left, record.name)
            root.journal.done(record.id)
            finished.append(record.id)
        elif left is None and record.status == REJECTING:
            root.journal.rejected(
                record.id, ("submission.rejected", {"submission": record.id, "stage": record.stage, "rules": None})
            )
            finished.append(record.id)
        elif left is None:
            withdrawn += _roll_back(root, record.id) if record.status == SEALING else []
            root.journal.abandoned(record.id, ("submission.abandoned", {"submission": record.id, "was": record.status}))
            abandoned.append(record.id)
        if left is not None:
            left[0].close()
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


def _outbox_copy(root: Root, record: SubmissionRecord) -> tuple[Folder, tuple[int, int]] | None:
    """The outbox folder and the file's identity, if the submission's CSV is still there with the same bytes."""
    try:
        folder = open_outbox(root.path, record.agency)
    except GatewayError:
        return None
    try:
        with folder.open_file(record.name) as file:
            if file.hash() == record.sha256:
                return folder, file.identity
    except GatewayError:
        pass
    folder.close()
    return None


def _remove_copy(left: tuple[Folder, tuple[int, int]], name: str) -> None:
    folder, identity = left
    for suffix in SIGNATURE_SUFFIXES:
        folder.remove(name + suffix)
    folder.remove(name, identity)
    folder.sync()


def _remove_temp_files(root: Root) -> int:
    """Delete the temp files our own writers leave when killed (never an agency's own temp files in an outbox)."""
    folders = [root.path / STATE, root.path / KEYS]
    for parent in (root.path / INBOX, root.path / QUARANTINE):
        folders += [p for p in parent.iterdir() if p.is_dir() and not p.is_symlink()] if parent.is_dir() else []
    outboxes = root.path / OUTBOX
    if outboxes.is_dir():
        folders += [p / REJECTED for p in outboxes.iterdir() if not p.is_symlink() and (p / REJECTED).is_dir()]
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

    The marking and period the officer intends are signed with the file, as the notations
    marking@iom-gateway and period@iom-gateway. The file is read once; the validator, the signature
    and the copy each read that one open file. The signature lands first, each by temp file and
    rename, so the gateway never sees a CSV without its signature or half of either. Returns the
    report and the outbox path (None if refused).
    """
    agency = root.config.agency(agency_id)
    officer = root.registry.get(officer_id)
    if officer.agency != agency.id or not officer.active:
        raise UsageError(f"{officer_id} is not an active officer of {agency.id}: a DO/PDO of {agency.id} must sign")
    requested = Level.parse(marking) if marking else None
    level = max(requested or root.config.marking.level, root.config.marking.level)
    base = path.name if level == root.config.marking.level else f"{level.name}{MARKING_SEPARATOR}{path.name}"
    period = _period(path.name, datetime.now(UTC))
    with open_once(path) as source:
        report = validate_stream(
            source.stream(), source.size, path, agency, root.config, root.standard, period=period, today=today
        )
        if not report.valid:
            return report, None
        home = gnupghome or root.demo_home(officer.id)
        if not home.is_dir():
            raise UsageError(f"no GnuPG home for {officer.id}: pass --gnupghome with the officer's own keyring")
        notations = {MARKING_NOTATION: level.name, PERIOD_NOTATION: str(period)}
        signer = Fingerprint.parse(officer.fingerprint)
        signature = Keyring(home).sign_detached(source.chunks(), signer, notations=notations)
        with open_outbox(root.path, agency.id, create=True) as outbox:
            if outbox.identity(base) is not None or outbox.identity(base + ".sig") is not None:
                raise UsageError(
                    f"{base!r} is already waiting in {agency.id}'s outbox: wait for the gateway, or rename the file"
                )
            outbox.write(base + ".sig", signature)
            with outbox.new_file(base) as copy:
                for chunk in source.chunks():
                    copy.write(chunk)
    root.audit.append("submission.submitted", actor=officer.id, agency=agency.id, rows=report.rows)
    return report, root.path / OUTBOX / agency.id / base
