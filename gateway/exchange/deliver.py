"""Seal and deliver: one package per recipient, each written create-once, its manifest signed by the gateway."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from gateway.adapters.aeszip import write_aes_zip
from gateway.adapters.fsio import OpenFile
from gateway.adapters.gpg import MAX_SIGNATURE_BYTES, Fingerprint, Purpose
from gateway.core import faults
from gateway.core.errors import ChangedError, GatewayError, VaultError
from gateway.core.manifest import MANIFEST_VERSION, MAX_MANIFEST_BYTES, armor_signature, canonical_json
from gateway.core.marking import Marking
from gateway.core.model import Agency, Delivery, Period, package_suffix
from gateway.exchange.intake import Job, remove_taken
from gateway.exchange.outcome import Delivered
from gateway.state.journal import DEFERRED, DELIVERED, ROLLED_BACK, SEALING, DeliveryRecord, SubmissionRecord
from gateway.state.root import Root, flush_audit
from gateway.validate import Report

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sealed:
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


@dataclass(frozen=True, slots=True)
class Unsealable:
    """Why a recipient cannot be sealed for yet: the gateway's configuration, never the sender's file."""

    recipient: str
    code: str  # no_active_officer, no_password
    reason: str
    fix: str

    @property
    def text(self) -> str:
        return f"{self.reason}: {self.fix}"


@dataclass(frozen=True, slots=True)
class Sealing:
    """What `seal_all` made: the packages delivered (now or before) and the deliveries deferred."""

    packages: tuple[Path, ...]
    deferred: tuple[Unsealable, ...]


def plan(root: Root, recipient: Agency) -> _Plan | Unsealable:
    """How to seal for `recipient`, or why it cannot be done yet (no active officer, no current password).

    Raises VaultError if the vault itself cannot be opened (the gateway's state: the file is deferred whole).
    """
    if recipient.delivery is Delivery.AES_ZIP:
        vault = root.vault
        try:
            record, _ = vault.current(recipient.id)
        except VaultError:
            return Unsealable(
                recipient.id,
                "no_password",
                f"{recipient.id} (AES-ZIP) has no current password in the vault",
                f"give it one: `iom-gateway keys import --agency {recipient.id} --password-file F` "
                "(a 0600 file holding a password the policy accepts)",
            )
        return _Plan(recipient, Delivery.AES_ZIP, record.id)
    officers = [o for o in root.registry.all(recipient.id) if o.active]
    if not officers:
        return Unsealable(
            recipient.id,
            "no_active_officer",
            f"{recipient.id} has no active officer to encrypt to",
            f"register one: `iom-gateway officers add --agency {recipient.id} ...`",
        )
    fingerprints = tuple(Fingerprint.parse(o.fingerprint) for o in officers)
    return _Plan(recipient, Delivery.GPG, ",".join(str(f) for f in fingerprints), fingerprints)


def seal_all(root: Root, submission: str, job: Job, sealed: Sealed) -> Sealing:
    """Deliver one package per recipient that can be sealed for; defer (record, alert once) the others.

    Each step is idempotent, so a redo after a crash, or a retry once a deferred recipient can be
    sealed for, completes the set; a delivery already made is never made again.
    """
    recipients = root.config.recipients(sealed.agency)
    if not recipients:
        raise GatewayError(f"{sealed.agency.id} has no recipients: give it a route in gateway.toml")
    done = root.journal.deliveries(submission)
    routed = {r.id for r in recipients}
    for gone in (d for d in done.values() if d.status == DEFERRED and d.recipient not in routed):
        root.journal.delivery_dropped(submission, gone.recipient)  # the route changed since: never made
    todo = [r for r in recipients if r.id not in done or done[r.id].status in (SEALING, ROLLED_BACK, DEFERRED)]
    plans = {r.id: plan(root, r) for r in todo}  # every recipient planned before anything is written
    assert job.signed is not None and job.signed.binary is not None  # noqa: S101 (authenticated)
    sender_signature = armor_signature(job.signed.binary)  # exactly what gpg checked, armored cleanly
    delivered, deferred = [], []
    for recipient in recipients:
        previous = done.get(recipient.id)
        how = plans.get(recipient.id)
        if isinstance(how, Unsealable):
            _defer(root, submission, job, sealed, how, previous)
            deferred.append(how)
            continue
        if how is not None:
            _deliver(root, submission, how, job.source, sealed, sender_signature, previous)
        delivered.append(
            root.store.root / recipient.id / (sealed.base(submission) + package_suffix(recipient.delivery))
        )
    return Sealing(tuple(delivered), tuple(deferred))


def _defer(
    root: Root, submission: str, job: Job, sealed: Sealed, why: Unsealable, previous: DeliveryRecord | None
) -> None:
    """Record the delivery as deferred (the audit event and the ERROR line only when it becomes so)."""
    base = sealed.base(submission)
    if previous is not None and previous.status == SEALING:
        # begun before a crash for a key that is no longer active: what it wrote is never adopted
        with root.store.open(why.recipient) as folder:
            for extension in (package_suffix(previous.method), ".manifest.json", ".manifest.json.sig"):
                folder.remove(base + extension)
            folder.sync()
    method = root.config.agencies[why.recipient].delivery.value
    details = {
        "submission": submission,
        "package": base,
        "sender": sealed.agency.id,
        "reason": why.code,
        "fix": why.fix,
    }
    if root.journal.delivery_deferred(
        submission, why.recipient, package=base, method=method, reason=why.text, audit=("delivery.deferred", details)
    ):
        flush_audit(root)
        log.error(
            "deferred delivery agency=%s file=%r recipient=%s reason=%s: %s; the file stays in the outbox and the "
            "delivery is made at the next pass after that",
            sealed.agency.id,
            job.pair.csv,
            why.recipient,
            why.code,
            why.text,
        )


def _deliver(
    root: Root,
    submission: str,
    plan: _Plan,
    source: OpenFile,
    sealed: Sealed,
    sender_signature: str,
    previous: DeliveryRecord | None,
) -> None:
    """Write payload, manifest and its signature for one recipient (adopting what a crash left), then commit."""
    base = sealed.base(submission)
    recipient = plan.recipient.id
    payload_name = base + package_suffix(plan.method)
    expires = (sealed.at + timedelta(days=root.config.packages.expiry_days)).isoformat(timespec="seconds")
    key_id = plan.key_id
    if previous is not None and previous.status == SEALING and _published(root, recipient, payload_name):
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
                "period": str(sealed.period),  # the register lists a month's data by it, not by delivery date
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
    with root.store.create_once(plan.recipient.id, base + package_suffix(plan.method)) as created:
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
    sealed: Sealed,
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
        # the sender's public key, under the gateway's signature: a recipient away from the gateway
        # checks the sender's own signature with it (`pull --from`), with no key to hunt for
        "sender_certificate": root.keyring.export_public(sealed.signer),
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


def finish(root: Root, record: SubmissionRecord, job: Job) -> None:
    """Remove the delivered submission from the outbox (signature first), then close it in the journal."""
    remove_taken(job)
    faults.reached("finish.removed")
    root.journal.done(record.id)


def delivered_outcome(root: Root, record: SubmissionRecord) -> Delivered:
    """The outcome of a submission the journal already holds as delivered (finished after a crash)."""
    deliveries = root.journal.deliveries(record.id)
    packages = tuple(
        root.store.root / d.recipient / (d.package + package_suffix(d.method))
        for d in deliveries.values()
        if d.status == DELIVERED
    )
    return Delivered(
        record.agency, record.name, record.id, record.officer or "", record.marking or "", record.rows or 0, packages
    )
