"""The use cases. Only this module knows the order a submission flows in:
intake -> authenticate -> validate -> mark -> seal -> deliver -> record.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from gateway.authenticate import Signature, authenticate
from gateway.context import Root
from gateway.crypto_gpg import Fingerprint, Keyring
from gateway.crypto_zip import write_aes_zip
from gateway.errors import GatewayError, SchemaError, UsageError
from gateway.fsio import atomic_target, atomic_write_bytes, open_regular
from gateway.intake import REJECTED, Pair, scan_outbox
from gateway.manifest import MANIFEST_VERSION, armor_signature, canonical_json
from gateway.marking import MARKING_SEPARATOR, Level, Marking, apply_marking, requested_level
from gateway.model import Agency, Delivery, Period
from gateway.validate import Report, validate_file, validate_stream

log = logging.getLogger(__name__)
SAMPLES = "samples"
OUTBOX = "outbox"
QUARANTINE = "quarantine"
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


Outcome = Delivered | Rejected | Duplicate | Waiting


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
            log.warning("ignored agency=%s file=%r reason=%s", agency.id, name, why)
        for pair in intake.pairs:
            try:
                outcome = _process(root, agency, pair, now)
            except _Refused as refused:
                outcome = _reject(root, agency, pair, refused, now)
            except GatewayError as exc:
                outcome = _reject(root, agency, pair, _Refused("seal", [exc.message]), now)
            log.info("processed agency=%s file=%r outcome=%s", agency.id, pair.csv.name, type(outcome).__name__)
            outcomes.append(outcome)
    return outcomes


def _process(root: Root, agency: Agency, pair: Pair, now: datetime) -> Outcome:
    timeout = root.config.submissions.pairing_timeout_seconds
    if pair.signature is None:
        if pair.age_seconds < timeout:
            return Waiting(agency.id, pair.csv.name)
        raise _Refused(
            "intake",
            [
                f"no signature arrived within {timeout} seconds: every submission needs a detached "
                f"OpenPGP signature by a DO/PDO of {agency.id} beside it ({pair.csv.name}.sig or "
                ".asc); sign it and submit both again"
            ],
        )
    stream, size = open_regular(pair.csv)
    with stream:
        digest = _sha256(stream)
        submission = hashlib.sha256(f"{agency.id}\0{digest}".encode()).hexdigest()[:20]
        # gpg reads the file by name; the end of processing checks that the name still leads to
        # this very file (same inode) with the same bytes, so a swap in the outbox meanwhile
        # rejects the submission instead of delivering what was not checked.
        opened = pair.csv
        officer = _authenticate(root, agency, opened, pair.signature, now)
        # only after authentication: an unsigned drop must not learn what was delivered before
        earlier = root.journal.delivered_copy(agency.id, digest)
        if earlier is not None:
            return _duplicate(root, agency, pair, earlier.id)
        requested, base = requested_level(pair.csv.name)
        period = _period(base, now)
        report = validate_stream(
            stream, size, pair.csv, agency, root.config, root.standard, period=period, today=now.date()
        )
        if not report.valid:
            raise _Refused("validate", [f"{sum(report.counts.values())} row error(s) against Table 1"], report)
        marking = apply_marking(root.config.marking, requested)
        record = functools.partial(
            root.journal.record_submission,
            submission,
            agency.id,
            pair.csv.name,
            digest,
            officer=officer,
            marking=marking.token,
            period=str(period),
            rows=report.rows,
        )
        record("sealing")
        sealed = _seal_all(
            root,
            agency,
            opened,
            stream,
            pair,
            pair.signature,
            submission=submission,
            digest=digest,
            size=size,
            officer=officer,
            marking=marking,
            period=period,
            report=report,
            now=now,
        )
        if _sha256(stream) != digest or not _same_file(pair.csv, stream):
            raise _Refused("intake", ["the file changed while it was being processed: submit it again, complete"])
    record("delivered")
    root.audit.append(
        "submission.delivered",
        actor=officer,
        agency=agency.id,
        submission=submission,
        sha256=digest,
        rows=report.rows,
        marking=marking.text,
        period=str(period),
        recipients=[p.parent.name for p in sealed],
    )
    _remove(pair)
    return Delivered(agency.id, pair.csv.name, submission, officer, marking.token, report.rows, tuple(sealed))


def _authenticate(root: Root, agency: Agency, data: Path, signature_path: Path, now: datetime) -> str:
    check = root.keyring.verify_detached(data, signature_path)
    fingerprint = str(check.fingerprint) if check.fingerprint else None
    officer = root.registry.by_fingerprint(fingerprint) if fingerprint else None
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


def _seal_all(
    root: Root,
    agency: Agency,
    opened: Path,
    stream: BinaryIO,
    pair: Pair,
    signature: Path,
    *,
    submission: str,
    digest: str,
    size: int,
    officer: str,
    marking: Marking,
    period: Period,
    report: Report,
    now: datetime,
) -> list[Path]:
    plans = [_plan(root, recipient) for recipient in root.config.recipients(agency)]
    if not plans:
        raise GatewayError(f"{agency.id} has no recipients: give it a route in gateway.toml")
    gateway = root.gateway_key()
    sender_signature = armor_signature(signature.read_bytes())
    officer_fpr = root.registry.get(officer).fingerprint
    expires = (now + timedelta(days=root.config.packages.expiry_days)).isoformat(timespec="seconds")
    base = f"{marking.token}__{agency.id}__{period}__{submission}"
    delivered = []
    for plan in plans:
        payload_name = base + (".csv.gpg" if plan.method is Delivery.GPG else ".zip")
        with root.store.create_once(plan.recipient.id, payload_name) as temp:
            if plan.method is Delivery.GPG:
                root.keyring.encrypt_file(
                    opened,
                    temp,
                    recipients=plan.fingerprints,
                    signer=gateway,
                    literal_name=base + ".csv",
                    compress_level=root.config.packages.compress_level,
                )
            else:
                _, password = root.vault.current(plan.recipient.id)
                stream.seek(0)
                with temp.open("wb") as target:
                    write_aes_zip(stream, target, member=base + ".csv", password=password)
            payload_sha = _sha256_path(temp)
        manifest = {
            "format": "iom-gateway-manifest",
            "version": MANIFEST_VERSION,
            "package": base,
            "payload": payload_name,
            "recipient": plan.recipient.id,
            "marking": marking.text,
            "marking_token": marking.token,
            "partnership": root.config.partnership,
            "purpose": root.config.purpose,
            "legal_basis": root.config.legal_basis,
            "sender": {"agency": agency.id, "officer": officer, "fingerprint": officer_fpr},
            "period": str(period),
            "rows": report.rows,
            "columns": report.columns,
            "schema_version": root.standard.version,
            "plaintext_sha256": digest,
            "plaintext_bytes": size,
            "plaintext_encoding": report.encoding,
            "payload_sha256": payload_sha,
            "sender_signature": sender_signature,
            "encryption": {"method": plan.method.value, "key_id": plan.key_id},
            "gateway_key": str(gateway),
            "created": now.isoformat(timespec="seconds"),
            "expires": expires,
        }
        _publish_signed(root, plan.recipient.id, base + ".manifest.json", canonical_json(manifest), gateway)
        root.journal.record_delivery(
            submission, plan.recipient.id, package=base, method=plan.method.value, key_id=plan.key_id, expires=expires
        )
        root.audit.append(
            "package.delivered",
            actor="gateway",
            agency=plan.recipient.id,
            package=base,
            sender=agency.id,
            officer=officer,
            marking=marking.text,
            rows=report.rows,
            columns=manifest["columns"],
            method=plan.method.value,
            key_id=plan.key_id,
            payload_sha256=payload_sha,
        )
        delivered.append(root.store.folder(plan.recipient.id) / payload_name)
    return delivered


def _publish_signed(root: Root, agency: str, name: str, document: bytes, gateway: Fingerprint) -> None:
    with root.store.create_once(agency, name) as temp:
        temp.write_bytes(document)
        signature = root.keyring.sign_detached(temp, gateway)
    with root.store.create_once(agency, name + ".sig") as temp:
        temp.write_bytes(signature)


def _duplicate(root: Root, agency: Agency, pair: Pair, original: str) -> Duplicate:
    text = (
        f"{pair.csv.name}: not delivered again: the same bytes were already delivered as submission "
        f"{original}. Nothing was sent. If the data changed, export it again.\n"
    )
    _write_report(root, agency, pair.csv.name, text, {"file": pair.csv.name, "duplicate_of": original})
    root.audit.append("submission.duplicate", actor="gateway", agency=agency.id, original=original)
    _remove(pair)
    return Duplicate(agency.id, pair.csv.name, original)


def _reject(root: Root, agency: Agency, pair: Pair, refused: _Refused, now: datetime) -> Rejected:
    """Quarantine the submission encrypted to the gateway key, write its report, clear the outbox."""
    folder = root.path / QUARANTINE / agency.id
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    gateway = root.gateway_key()
    if pair.csv.is_file() and not pair.csv.is_symlink():
        root.keyring.encrypt_file(
            pair.csv,
            folder / f"{pair.csv.name}.{stamp}.gpg",
            recipients=[gateway],
            signer=gateway,
            literal_name=pair.csv.name,
        )
    if pair.signature is not None:
        atomic_write_bytes(folder / f"{pair.signature.name}.{stamp}", pair.signature.read_bytes())
    lines = [
        f"{pair.csv.name}: REJECTED at {refused.stage} ({now:%Y-%m-%d %H:%M} UTC); nothing was delivered.",
        *(f"  - {reason}" for reason in refused.reasons),
    ]
    if refused.report is not None:
        lines += ["", refused.report.to_text().rstrip()]
    lines += ["", "The submission is kept encrypted in quarantine; fix it and submit it again."]
    detail = {
        "file": pair.csv.name,
        "agency": agency.id,
        "stage": refused.stage,
        "reasons": list(refused.reasons),
        "validation": refused.report.to_json() if refused.report is not None else None,
    }
    report_path = _write_report(root, agency, pair.csv.name, "\n".join(lines) + "\n", detail)
    root.journal.record_submission(
        f"rejected-{agency.id}-{stamp}-{pair.csv.name}"[:120],
        agency.id,
        pair.csv.name,
        "",
        "rejected",
        reason=refused.stage,
    )
    root.audit.append(
        "submission.rejected",
        actor="gateway",
        agency=agency.id,
        stage=refused.stage,
        rules=dict(refused.report.counts) if refused.report is not None else None,
    )
    _remove(pair)
    return Rejected(agency.id, pair.csv.name, refused.stage, refused.reasons, report_path)


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
    for path in (pair.csv, pair.signature):
        if path is not None:
            path.unlink(missing_ok=True)


def _same_file(path: Path, stream: BinaryIO) -> bool:
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(stream.fileno())
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _sha256(stream: BinaryIO) -> str:
    stream.seek(0)
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _sha256_path(path: Path) -> str:
    with path.open("rb") as handle:
        return _sha256(handle)


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
