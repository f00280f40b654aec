"""Retention: delete what has outlived its purpose (Solihull 3.1; Warwickshire 2.3).

Deleting a package from the inbox does not reach copies in backups; deleting the AES password it
was sealed with does: once no live package needs a password, it leaves the vault, and backed-up
copies of those packages can no longer be opened by the gateway's side.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from gateway.adapters.gpg import Fingerprint, Purpose
from gateway.core.model import Delivery
from gateway.core.request import REQUESTS
from gateway.exchange.intake import OUTBOX, REJECTED
from gateway.exchange.mailout import spool
from gateway.governance.drops import REJECTED_SUFFIX
from gateway.governance.requests import REFUSAL_SUFFIX, TEXT_SUFFIX
from gateway.state.journal import DUTY_PURGE, DeliveryRecord
from gateway.state.requests import Requests
from gateway.state.root import QUARANTINE, STATE, Root
from gateway.state.subjects import SubjectIndex, current_key_id

log = logging.getLogger(__name__)
_PACKAGE_FILES = (".manifest.json", ".manifest.json.sig")
_END_OF_TIME = "9999-12-31T23:59:59+00:00"


@dataclass(frozen=True, slots=True)
class Purge:
    """What a purge removed (or, with dry_run, would remove)."""

    dry_run: bool
    packages: tuple[str, ...] = ()
    passwords: tuple[str, ...] = ()
    quarantined: tuple[str, ...] = ()
    reports: tuple[str, ...] = ()
    audit_entries: int = 0
    keys: tuple[str, ...] = ()  # retired gateway keys whose secret half went
    sar_entries: int = 0  # subject access index entries of packages past audit retention (or of an old key)
    request_texts: tuple[str, ...] = ()  # requests whose text went with the audit entries of their answer


def purge(root: Root, now: datetime, *, dry_run: bool) -> Purge:
    """Delete expired packages, the passwords only they needed, old quarantine items, reports and audit entries.

    With `dry_run`, change nothing and say what would go. Records what it did on the audit log. On the PostgreSQL
    journal, where every node's timer may start a purge, one runs at a time (the others wait, then find less).
    """
    with root.journal.exclusive(DUTY_PURGE):
        return _purge(root, now, dry_run=dry_run)


def _purge(root: Root, now: datetime, *, dry_run: bool) -> Purge:
    expired = root.journal.deliveries_expired(now.isoformat(timespec="seconds"))
    if root.config.packages.delete_after_receipt:  # received, so no longer needed in the inbox
        seen = {(d.package, d.recipient) for d in expired}
        expired += [d for d in root.journal.receipted() if (d.package, d.recipient) not in seen]
    # quarantine/<agency>/ and its receipts/ and requests/ folders
    kept = timedelta(days=root.config.retention.quarantine_days)
    quarantined = _older_than(root.path / QUARANTINE, "**/*", kept, now)
    reports_age = timedelta(days=root.config.retention.reports_days)
    reports = _older_than(root.path / OUTBOX, f"{REJECTED}/*.report.*", reports_age, now)
    reports += _older_than(root.path / OUTBOX, f"{REQUESTS}/*{REJECTED_SUFFIX}", reports_age, now)
    audit_cutoff = now - timedelta(days=root.config.retention.audit_days)
    texts = Requests(root.db).closed_before(audit_cutoff.isoformat(timespec="seconds"))
    if dry_run:
        passwords = _unneeded_passwords(root, _needed_after(root, expired))
        return Purge(
            True,
            _names(expired),
            passwords,
            _relative(root, quarantined),
            _relative(root, reports),
            root.audit.expired(audit_cutoff),
            _retired_gateway_keys(root, now, delete=False),
            _stale_subjects(root, audit_cutoff, expired, drop=False),
            tuple(r.id for r in texts),
        )
    for delivery in expired:
        _delete_package(root, delivery)
    for path in (*quarantined, *reports):
        path.unlink(missing_ok=True)
    for path in quarantined:
        root.journal.quarantine_purged(str(path.relative_to(root.path / QUARANTINE)))
    _delete_request_texts(root, [r.id for r in texts], now)
    root.journal.mail_forget(audit_cutoff.isoformat(timespec="seconds"))
    passwords = _remove_passwords(root)
    keys = _retired_gateway_keys(root, now, delete=True)
    gateway = root.gateway_key()
    removed = root.audit.purge_before(
        audit_cutoff, lambda data: root.keyring.sign_bytes(data, gateway, purpose=Purpose.AUDIT), str(gateway)
    )
    subjects = _stale_subjects(root, audit_cutoff, [], drop=True)  # the expired packages are purged by now
    result = Purge(
        False,
        _names(expired),
        passwords,
        _relative(root, quarantined),
        _relative(root, reports),
        removed,
        keys,
        subjects,
        tuple(r.id for r in texts),
    )
    root.audit.append(
        "retention.purged",
        actor="admin",
        packages=len(result.packages),
        password_ids=list(result.passwords),
        gateway_keys=list(result.keys),
        quarantined=len(result.quarantined),
        reports=len(result.reports),
        audit_entries=removed,
        sar_entries=subjects,
        request_texts=len(texts),
    )
    log.info(
        "purged packages=%d passwords=%d quarantined=%d reports=%d audit_entries=%d sar_entries=%d request_texts=%d",
        len(result.packages),
        len(passwords),
        len(quarantined),
        len(reports),
        removed,
        subjects,
        len(texts),
    )
    return result


def _delete_request_texts(root: Root, request_ids: list[str], now: datetime) -> None:
    """Delete the texts (and refusals' reasons) of requests closed before the audit log's retention: the
    register keeps their ids, dates and outcome, as the audit log keeps no entry older."""
    folder = root.path / STATE / REQUESTS
    for ident in request_ids:
        for suffix in (TEXT_SUFFIX, REFUSAL_SUFFIX):
            (folder / f"{ident}{suffix}").unlink(missing_ok=True)
    if request_ids:
        Requests(root.db).texts_purged(request_ids, now.isoformat(timespec="seconds"))


def _stale_subjects(root: Root, audit_cutoff: datetime, going: list[DeliveryRecord], *, drop: bool) -> int:
    """The subject access index entries that go (with `drop`, delete them): those of submissions whose every
    package is purged (or `going`), delivered before the audit log's retention, and those made under an old
    SAR key (a rotation that stopped half way, or a worker that hashed under it meanwhile)."""
    index, cutoff = SubjectIndex(root.db), audit_cutoff.isoformat(timespec="seconds")
    old = index.past_retention(cutoff, {(d.submission, d.recipient) for d in going})
    key_id = current_key_id(root)
    return index.drop_stale(key_id, old) if drop else index.stale(key_id, old)


def _delete_package(root: Root, delivery: DeliveryRecord) -> None:
    folder = root.store.folder(delivery.recipient)
    payload = delivery.package + (".csv.gpg" if delivery.method == Delivery.GPG.value else ".zip")
    for name in (payload, *(delivery.package + suffix for suffix in _PACKAGE_FILES)):
        (folder / name).unlink(missing_ok=True)
    root.journal.purged(delivery.submission, delivery.recipient)
    (spool(root) / f"{delivery.package}.{delivery.recipient}.asc").unlink(missing_ok=True)  # its e-mail, encrypted
    root.journal.mail_purged(delivery.package, delivery.recipient)


def _needed_after(root: Root, expired: list[DeliveryRecord]) -> set[str]:
    """The key ids still needed once `expired` are purged: what the purge itself will find live.

    A key id shared by an expired package and a live one stays needed. (A retired password that only
    a delivery still being sealed and expired packages use is listed although the purge keeps it:
    dry-run may overstate there, never understate.)
    """
    gone = {(d.submission, d.recipient) for d in expired}
    delivered = root.journal.deliveries_expired(_END_OF_TIME)  # every package still in an inbox
    kept = {d.key_id for d in delivered if (d.submission, d.recipient) not in gone}
    being_sealed = root.journal.live_key_ids() - {d.key_id for d in delivered}
    return kept | being_sealed


def _unneeded_passwords(root: Root, needed: set[str]) -> tuple[str, ...]:
    if not root.vault_path.exists():
        return ()
    return tuple(r.id for r in root.vault.records() if r.status != "current" and r.id not in needed)


def _remove_passwords(root: Root) -> tuple[str, ...]:
    if not root.vault_path.exists():
        return ()
    with root.changing_vault() as vault:
        needed = root.journal.live_key_ids()
        doomed = {r.id for r in vault.records() if r.status != "current" and r.id not in needed}
        return tuple(r.id for r in vault.remove(doomed))


def _retired_gateway_keys(root: Root, now: datetime, *, delete: bool) -> tuple[str, ...]:
    """The retired gateway keys nothing live needs (no package it signed, no quarantined file encrypted
    to it); with `delete`, their secret half goes (the public half stays to verify the audit log)."""
    removed = []
    for fingerprint, _, _, status in root.journal.gateway_keys():
        live = root.journal.live_packages(signed_by=fingerprint, expiring_after=now.isoformat(timespec="seconds"))
        if status != "retired" or live:
            continue
        if root.journal.quarantined_with(fingerprint) or fingerprint in Requests(root.db).sealing_keys():
            continue  # a quarantined file or a request's text is encrypted to it
        if not root.keyring.key(Fingerprint.parse(fingerprint)).has_secret:
            continue
        if delete:
            root.keyring.delete_secret_key(Fingerprint.parse(fingerprint))
        removed.append(fingerprint)
    return tuple(removed)


def _older_than(parent: Path, pattern: str, age: timedelta, now: datetime) -> list[Path]:
    cutoff = now.timestamp() - age.total_seconds()
    if not parent.is_dir():
        return []
    found = []
    for folder in parent.iterdir():
        if not folder.is_dir() or folder.is_symlink():
            continue
        for path in folder.glob(pattern):
            info = path.lstat()
            if path.is_file() and not path.is_symlink() and info.st_mtime < cutoff and not path.name.startswith("."):
                found.append(path)
    return sorted(found)


def _names(deliveries: list[DeliveryRecord]) -> tuple[str, ...]:
    return tuple(f"{d.recipient}/{d.package}" for d in deliveries)


def _relative(root: Root, paths: list[Path]) -> tuple[str, ...]:
    return tuple(str(p.relative_to(root.path)) for p in paths)
