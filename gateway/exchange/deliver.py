"""Seal and deliver: one package per recipient, each written create-once, its manifest signed by the gateway."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from gateway.adapters.aeszip import CHUNK, write_aes_zips
from gateway.adapters.fsio import OpenFile, private_dirs, sha256_fd
from gateway.adapters.gpg import MAX_SIGNATURE_BYTES, Fingerprint, Purpose, keep_recipients
from gateway.core import faults
from gateway.core.errors import ChangedError, GatewayError, VaultError
from gateway.core.manifest import MANIFEST_VERSION, MAX_MANIFEST_BYTES, armor_signature, canonical_json
from gateway.core.marking import Marking
from gateway.core.model import Agency, Delivery, Period, package_suffix
from gateway.core.pgpmime import Envelope
from gateway.exchange.envelope import seal
from gateway.exchange.intake import Job, remove_taken
from gateway.exchange.mailout import package_mail
from gateway.exchange.outcome import Delivered
from gateway.state.journal import DEFERRED, DELIVERED, ROLLED_BACK, SEALING, DeliveryRecord, SubmissionRecord
from gateway.state.requests import Requests
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
    corrects: str | None = None  # the earlier package (from the same agency) this file corrects
    request: tuple[str, str] | None = None  # the information request it answers, and the agency that asked

    def base(self, submission: str) -> str:
        return package_base(self.marking, self.agency, self.period, submission)


def package_base(marking: Marking, agency: Agency, period: Period, submission: str) -> str:
    """The name every package of a submission shares (before its suffix); also the literal/member name's stem."""
    return f"{marking.token}__{agency.id}__{period}__{submission}"


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


class _Once:
    """A value computed the first time it is asked for, then kept."""

    def __init__(self, make: Callable[[], str]) -> None:
        self._make, self._value = make, ""

    def __call__(self) -> str:
        if not self._value:
            self._value = self._make()
        return self._value


@dataclass(frozen=True, slots=True)
class _Common:
    """What every delivery of one submission shares."""

    sender_signature: str
    sender_certificate: _Once
    prepared: Preseal
    envelope: Envelope | None = None  # what the sender's signature covers around the CSV (PGP/MIME)


def _todo(recipients: Sequence[Agency], done: dict[str, DeliveryRecord]) -> list[Agency]:
    """The recipients still to deliver to (never made, begun before a crash, rolled back, or deferred)."""
    return [r for r in recipients if r.id not in done or done[r.id].status in (SEALING, ROLLED_BACK, DEFERRED)]


def seal_all(root: Root, submission: str, job: Job, sealed: Sealed, prepared: Preseal | None = None) -> Sealing:
    """Deliver one package per recipient that can be sealed for; defer (record, alert once) the others.

    Each step is idempotent, so a redo after a crash, or a retry once a deferred recipient can be
    sealed for, completes the set; a delivery already made is never made again. A payload
    `prepared` made (while the file was validated) is used where it was made for this very
    package and key; any other is encrypted here.
    """
    recipients = root.config.recipients(sealed.agency)
    if not recipients:
        raise GatewayError(f"{sealed.agency.id} has no recipients: give it a route in gateway.toml")
    done = root.journal.deliveries(submission)
    routed = {r.id for r in recipients}
    for gone in (d for d in done.values() if d.status == DEFERRED and d.recipient not in routed):
        root.journal.delivery_dropped(submission, gone.recipient)  # the route changed since: never made
    prepared = prepared or Preseal.none()
    prepared.planned()  # the vault is opened once, not by two threads at a time
    plans = {r.id: plan(root, r) for r in _todo(recipients, done)}  # all planned before anything is written
    assert job.signed is not None and job.signed.binary is not None  # noqa: S101 (authenticated)
    common = _Common(
        armor_signature(job.signed.binary),  # exactly what gpg checked, armored cleanly
        # exported once for every manifest of the submission (one gpg process, not one per recipient)
        _Once(lambda: root.keyring.export_public(sealed.signer)),
        prepared,
        job.signed.envelope,
    )
    delivered, deferred = [], []
    for recipient in recipients:
        previous = done.get(recipient.id)
        how = plans.get(recipient.id)
        if isinstance(how, Unsealable):
            _defer(root, submission, job, sealed, how, previous)
            deferred.append(how)
            continue
        if how is not None:
            _deliver(root, submission, how, job.source, sealed, common, previous)
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
        root.store.withdraw(
            why.recipient, (base + e for e in (package_suffix(previous.method), ".manifest.json", ".manifest.json.sig"))
        )
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
    common: _Common,
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
        payload_sha = _write_payload(root, plan, source, sealed.gateway, base, common.prepared)
    faults.reached("deliver.payload")
    manifest = _manifest(root, submission, sealed, plan, key_id, payload_name, payload_sha, common, expires)
    _publish_manifest(root, recipient, base, canonical_json(manifest), sealed.gateway)
    faults.reached("deliver.manifest")
    if sealed.request is not None and sealed.request[1] == recipient:  # the answer has reached the requester
        Requests(root.db).answered(
            sealed.request[0], officer=sealed.officer, submission=submission, package=base, agency=sealed.agency.id
        )
    mail = package_mail(
        root,
        recipient=plan.recipient,
        base=base,
        marking=sealed.marking,
        sender=sealed.agency.id,
        period=sealed.period,
        rows=sealed.report.rows,
        source=source,
        gateway=sealed.gateway,
    )
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
            }
            | ({"corrects": sealed.corrects} if sealed.corrects else {})
            | ({"request": sealed.request[0]} if sealed.request else {}),
        ),
        mail,
    )
    faults.reached("deliver.committed")
    flush_audit(root)


def _published(root: Root, agency: str, name: str) -> bool:
    with root.store.open(agency) as folder:
        return folder.identity(name) is not None


def _write_payload(
    root: Root, plan: _Plan, source: OpenFile, gateway: Fingerprint, base: str, prepared: Preseal
) -> str:
    """Seal a complete read of the submission into the recipient's inbox; return the payload's SHA-256."""
    name = base + package_suffix(plan.method)
    staged = prepared.payload(plan, base, gateway)
    if staged is not None and staged.linkable:
        with root.store.publish_staged(plan.recipient.id, name, staged.file, staged.sha256) as created:
            faults.reached("deliver.payload.written")
        return created.sha256
    with root.store.create_once(plan.recipient.id, name) as created:
        if staged is not None:
            shutil.copyfileobj(staged.file, created.file, CHUNK)
        else:
            read = _Read(source)
            if plan.method is Delivery.GPG:
                root.keyring.encrypt(
                    read,
                    created.file,
                    recipients=plan.fingerprints,
                    signer=gateway,
                    literal_name=base + ".csv",
                    compress_level=root.config.packages.compress_level,
                )
            else:
                password = root.vault.password(plan.key_id)
                level = root.config.packages.compress_level
                write_aes_zips(read, [(created.file, password)], member=base + ".csv", level=level)
            read.check()
        faults.reached("deliver.payload.written")
    return created.sha256


class _Cancelled(Exception):
    """The submission was refused (or failed) while its encryptions ran: they stop and are discarded."""


class _Read:
    """One complete read of the submission for one encryption, hash-checked against the first read
    (`OpenFile.chunks`); `done` only once the end was reached and the check passed."""

    def __init__(self, source: OpenFile, stop: threading.Event | None = None) -> None:
        self.source, self.stop, self.done = source, stop, False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.source.chunks():
            if self.stop is not None and self.stop.is_set():
                raise _Cancelled
            yield chunk
        self.done = True

    def check(self) -> None:
        """Raise ChangedError unless the encryption read the whole file."""
        if not self.done:
            raise ChangedError(f"{self.source.name!r} was not read to its end while being sealed: submit it again")


class _Work:
    """One encryption running in a thread of its own."""

    def __init__(self, work: Callable[[], None]) -> None:
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(work,), name="preseal", daemon=True)
        self.thread.start()

    def _run(self, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as exc:  # handed to the thread that delivers, which raises it
            self.failure = exc

    def wait(self) -> None:
        """Wait for it to end; raise what it raised."""
        self.thread.join()
        if self.failure is not None:
            raise self.failure


@dataclass(frozen=True, slots=True)
class Staged:
    """One recipient's finished payload, made while the file was validated: written, fsynced, hashed."""

    file: BinaryIO
    sha256: str
    linkable: bool  # a nameless file in the recipient's own inbox: published by a link, not copied


class Preseal:
    """The encryptions of one submission, started while it is validated (`Preseal.start`).

    One `gpg --encrypt --sign` to every officer of every OpenPGP recipient still to deliver to, then
    per agency a copy with only its own officers' session-key packets; and one Deflate stream
    feeding every AES-ZIP recipient's archive. Each encryption reads the one open file for itself
    (every complete read is checked against the first, so the bytes are the ones authenticated).
    Every output is a nameless private file (O_TMPFILE; the finished payloads in their recipient's
    inbox, ready to be linked in): nothing is published here, and they vanish when closed, or with
    the process if it is killed. Used as a context manager: on leaving it the encryptions are
    stopped and every output not published is discarded.
    """

    def __init__(self, base: str = "", gateway: Fingerprint | None = None) -> None:
        self.base, self.gateway = base, gateway
        self.stop = threading.Event()
        self.files: list[BinaryIO] = []  # every file opened here, closed by close()
        self.ready: dict[tuple[str, str], Staged] = {}  # (recipient, key id) -> its payload
        self.works: dict[Delivery, _Work] = {}
        self.zips_planned = threading.Event()  # set once the ZIP thread has done with the vault
        self.zips_planned.set()

    @classmethod
    def none(cls) -> Preseal:
        """Nothing prepared: every payload is encrypted when it is delivered."""
        return cls()

    @classmethod
    def start(cls, root: Root, submission: str, job: Job, base: str) -> Preseal:
        """Start encrypting for the recipients still to deliver to, as package `base`; never raises a
        GatewayError (what cannot be prepared now is encrypted, or refused, when it is delivered)."""
        try:
            gateway = root.gateway_key()
            todo = _todo(root.config.recipients(job.agency), root.journal.deliveries(submission))
            scratch = private_dirs(root.store.root)
        except GatewayError:
            return cls.none()
        prepared = cls(base, gateway)
        try:
            gpgs = [p for p in (plan(root, r) for r in todo if r.delivery is Delivery.GPG) if isinstance(p, _Plan)]
            if gpgs:
                prepared._start_gpg(root, gpgs, job.source, scratch)
            zips = [r for r in todo if r.delivery is Delivery.AES_ZIP]
            if zips:
                prepared._start_zips(root, zips, job.source, scratch)
        except GatewayError:
            return prepared  # what could not be prepared is encrypted, or refused, when it is delivered
        except BaseException:
            prepared.close()
            raise
        return prepared

    def _start_gpg(self, root: Root, gpgs: list[_Plan], source: OpenFile, scratch: Path) -> None:
        """One message to every officer of every OpenPGP recipient, signed by the gateway; then each
        agency's package: that message with only its own officers' session-key packets."""
        assert self.gateway is not None  # noqa: S101 (set by start)
        fingerprints = tuple(dict.fromkeys(f for p in gpgs for f in p.fingerprints))
        joint, read, gateway = self._temp(scratch), _Read(source, self.stop), self.gateway

        def encrypt() -> None:
            root.keyring.encrypt(
                read,
                joint,
                recipients=fingerprints,
                signer=gateway,
                literal_name=self.base + ".csv",
                compress_level=root.config.packages.compress_level,
            )
            read.check()
            key_ids = root.keyring.recipient_key_ids(fingerprints)  # one gpg listing for every officer
            for p in gpgs:
                if self.stop.is_set():
                    raise _Cancelled
                target, linkable = self._target(root, p, scratch)
                joint.seek(0)
                keep_recipients(joint, target, frozenset().union(*(key_ids[f] for f in p.fingerprints)))
                self._done(p, target, linkable)
            joint.close()  # split: its disk space back at once

        self.works[Delivery.GPG] = _Work(encrypt)

    def _start_zips(self, root: Root, todo: list[Agency], source: OpenFile, scratch: Path) -> None:
        """One read, one Deflate stream, an archive per ZIP recipient: all in one thread, which also
        opens the vault (its scrypt runs while the file is validated, not before)."""
        self.zips_planned.clear()

        def deflate() -> None:
            try:
                plans = [p for p in (plan(root, r) for r in todo) if isinstance(p, _Plan)]
                zips = [(p, root.vault.password(p.key_id)) for p in plans]
            except GatewayError:  # said (or deferred) when the delivery is made
                return
            finally:
                self.zips_planned.set()
            if not zips:
                return
            read = _Read(source, self.stop)
            targets = [(p, self._target(root, p, scratch), password) for p, password in zips]
            level = root.config.packages.compress_level
            write_aes_zips(read, [(t, pw) for _, (t, _), pw in targets], member=self.base + ".csv", level=level)
            read.check()
            for p, (target, linkable), _ in targets:
                self._done(p, target, linkable)

        self.works[Delivery.AES_ZIP] = _Work(deflate)

    def _temp(self, scratch: Path) -> BinaryIO:
        # 0600 and nameless (O_TMPFILE, or unlinked at once): closed by close(), gone with the process
        file = tempfile.TemporaryFile(dir=scratch)  # noqa: SIM115
        self.files.append(file)
        return file

    def _target(self, root: Root, plan: _Plan, scratch: Path) -> tuple[BinaryIO, bool]:
        """A nameless file for `plan`'s payload: in its recipient's inbox if possible (linked in, not copied)."""
        staged = root.store.staging(plan.recipient.id)
        if staged is None:
            return self._temp(scratch), False
        self.files.append(staged)
        return staged, True

    def _done(self, plan: _Plan, target: BinaryIO, linkable: bool) -> None:
        target.flush()
        os.fsync(target.fileno())  # here, while the file is validated, not when it is published
        self.ready[(plan.recipient.id, plan.key_id)] = Staged(target, sha256_fd(target.fileno()), linkable)

    def planned(self) -> None:
        """Wait until no preparation uses the vault (the one thread that may open it meanwhile)."""
        self.zips_planned.wait()

    def payload(self, plan: _Plan, base: str, gateway: Fingerprint) -> Staged | None:
        """`plan`'s payload as prepared (at its start), or None if none was made for this package and key.

        Raises what the encryption raised (a changed file, a full disk); after a refusal (gpg's, the
        ZIP writer's) None too, so each recipient is encrypted for on its own and the refusal is theirs.
        """
        work = self.works.get(plan.method)
        if base != self.base or gateway != self.gateway or work is None:
            return None
        try:
            work.wait()
        except ChangedError:
            raise
        except GatewayError:
            # a refusal that may concern one recipient only (an officer's key expired meanwhile):
            # encrypted for each on its own, so it is raised for that recipient, as before
            return None
        staged = self.ready.get((plan.recipient.id, plan.key_id))
        if staged is not None:
            staged.file.seek(0)
        return staged

    def close(self) -> None:
        """Stop every encryption still running and discard every output not published."""
        self.stop.set()
        for work in self.works.values():
            work.thread.join()
        for file in self.files:
            file.close()
        self.files.clear()
        self.ready.clear()

    def __enter__(self) -> Preseal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _manifest(
    root: Root,
    submission: str,
    sealed: Sealed,
    plan: _Plan,
    key_id: str,
    payload_name: str,
    payload_sha: str,
    common: _Common,
    expires: str,
) -> dict[str, object]:
    manifest: dict[str, object] = {
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
        "sender_signature": common.sender_signature,
        # the sender's public key, under the gateway's signature: a recipient away from the gateway
        # checks the sender's own signature with it (`pull --from`), with no key to hunt for
        "sender_certificate": common.sender_certificate(),
        "encryption": {"method": plan.method.value, "key_id": key_id},
        "gateway_key": str(sealed.gateway),
        "created": sealed.at.isoformat(timespec="seconds"),
        "expires": expires,
        "audit": root.audit.witness(),  # the log's seq and head now: the recipient holds a witness of it
    }
    if sealed.corrects is not None:  # signed by the sender (corrects@iom-gateway): `pull` marks the earlier file
        manifest["corrects"] = sealed.corrects
    if sealed.request is not None:  # signed by the sender (request@iom-gateway): the information request answered
        manifest["request"] = sealed.request[0]
    if common.envelope is not None:  # sealed as the payload is: only its recipients read the officer's words
        manifest["sender_envelope"] = _sealed_envelope(root, common.envelope, plan.method, key_id, sealed.gateway)
    return manifest


def _sealed_envelope(root: Root, envelope: Envelope, method: Delivery, key_id: str, gateway: Fingerprint) -> str:
    if method is Delivery.GPG:
        keys = [Fingerprint.parse(k) for k in key_id.split(",")]
        return seal(envelope, method, keyring=root.keyring, recipients=keys, gateway=gateway)
    return seal(envelope, method, keyring=root.keyring, password=root.vault.password(key_id))


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
    signed = root.keyring.sign_bytes(document, gateway, purpose=Purpose.MANIFEST)
    root.store.publish_signed(agency, name, document, signature_name, signed)


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
