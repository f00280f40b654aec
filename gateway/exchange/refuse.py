"""Refuse a submission: quarantine what was read, write a report the sender can act on, withdraw packages."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.adapters.fsio import Folder, is_plain_name, shown
from gateway.adapters.gpg import Purpose
from gateway.adapters.perms import group_id
from gateway.core import faults
from gateway.core.errors import InputFileError, UsageError
from gateway.core.model import Agency, package_suffix
from gateway.core.pgpmime import EVIDENCE_SUFFIX
from gateway.exchange.intake import OUTBOX, REJECTED, SIGNATURE_SUFFIXES, Job, open_outbox, remove_taken
from gateway.exchange.mailout import rejection_notice
from gateway.exchange.outcome import Duplicate, Refused, Rejected, Waiting
from gateway.state.journal import DEFERRED, PARTIAL, RECEIVED, ROLLED_BACK, SEALING, MailItem, SubmissionRecord
from gateway.state.root import QUARANTINE, Root, flush_audit

log = logging.getLogger(__name__)


def duplicate(root: Root, job: Job, original: str) -> Duplicate:
    """Refuse bytes already delivered: report it to the sender, log it, clear the outbox."""
    text = (
        f"{job.shown}: not delivered again: the same bytes were already delivered as submission "
        f"{original}. Nothing was sent. If the data changed, export it again.\n"
    )
    write_report(root, job.agency, job.pair.csv, text, {"file": job.shown, "duplicate_of": original})
    root.audit.append("submission.duplicate", actor="gateway", agency=job.agency.id, original=original)
    remove_taken(job)
    return Duplicate(job.agency.id, job.pair.csv, original)


def reject(root: Root, job: Job, record: SubmissionRecord, refused: Refused, now: datetime) -> Rejected:
    """Quarantine the submission encrypted to the gateway key, write its report, clear the outbox.

    The verdict is journaled first; every later step is idempotent (names derive from the
    submission id), so a crash anywhere is finished by the restart.
    """
    owned = root.journal.rejecting(record.id, refused.stage, refused.reasons[0])
    if record.status in (RECEIVED, SEALING, PARTIAL):  # what an interrupted or partial earlier attempt published
        roll_back(root, record.id)
    _quarantine(root, job, record.id)
    faults.reached("reject.quarantined")
    text, detail = _report_text(job, refused, now), _detail(job, refused)
    report_path = write_report(root, job.agency, job.pair.csv, text, detail)
    remove_taken(job)
    faults.reached("reject.removed")
    details: dict[str, Any] = {"submission": record.id, "stage": refused.stage, "file": job.shown}
    if refused.report is not None:  # which Table 1 rules failed, and how often (never a cell's value)
        details["rules"] = dict(refused.report.counts)
    signer = _signer(job)
    if signer is not None:
        details["signer"] = signer
    audit: tuple[str, dict[str, Any]] = ("submission.rejected", details)
    if owned:
        root.journal.rejected(record.id, audit, _notice(root, job, record.id, refused, now))
        flush_audit(root)
    else:  # a copy of something already delivered, refused (e.g. signed by someone else): the original stands
        root.audit.append(audit[0], actor="gateway", agency=job.agency.id, **audit[1])
    return Rejected(job.agency.id, job.pair.csv, refused.stage, refused.reasons, report_path)


def _notice(root: Root, job: Job, submission: str, refused: Refused, now: datetime) -> tuple[MailItem, ...]:
    """The rejection notice for the officer who signed the file, if the signature was good and theirs."""
    if job.check is None or not job.check.valid or job.check.fingerprint is None:
        return ()  # no one the gateway can tell the file is from: the report in reports/ is all
    officer = root.registry.by_fingerprint(str(job.check.fingerprint), now)
    if officer is None or officer.agency != job.agency.id:
        return ()
    counts = dict(refused.report.counts) if refused.report is not None else {refused.stage: 1}
    return rejection_notice(root, officer, submission, job.shown, counts)


def _signer(job: Job) -> str | None:
    """The key that made the signature, as far as gpg could tell: its fingerprint, or an unknown key's id."""
    if job.check is None:
        return None
    if job.check.fingerprint is not None:
        return str(job.check.fingerprint)
    return job.check.unknown_key


def _own_name(name: str) -> str:
    """A name for the gateway's own files about `name`: the name itself if it is plain text of at
    most 200 bytes, else one derived from its bytes (a name that is not UTF-8, holds control
    characters or is too long to carry a suffix must still get its report)."""
    if is_plain_name(name):
        return name
    return f"unusable-name-{hashlib.sha256(os.fsencode(name)).hexdigest()[:12]}.csv"


def _quarantine(root: Root, job: Job, submission: str) -> None:
    """Keep what was read (encrypted to the gateway key) and the signature as it came."""
    gateway = root.gateway_key()
    name = f"{_own_name(job.pair.csv)}.{submission}"
    with Folder.open(root.path, QUARANTINE, job.agency.id, create=True) as folder:

        def sealed(target_name: str, data: Iterable[bytes], literal_name: str) -> None:
            with folder.new_file(target_name) as target:
                root.keyring.encrypt(
                    data,
                    target,
                    recipients=[gateway],
                    signer=gateway,
                    literal_name=literal_name,
                    purpose=Purpose.QUARANTINE,
                )
            root.journal.quarantined(f"{job.agency.id}/{target_name}", job.agency.id, submission, str(gateway))

        sealed(name + ".gpg", job.source.chunks(compare=False), _own_name(job.pair.csv))
        if job.signed is None:
            return
        suffix = next((s for s in SIGNATURE_SUFFIXES if job.signed.name.endswith(s)), ".sig")
        if suffix == EVIDENCE_SUFFIX:  # a mail's envelope may hold the officer's words: sealed, as the file
            sealed(name + suffix + ".gpg", (job.signed.raw,), _own_name(job.pair.csv) + EVIDENCE_SUFFIX)
        else:
            folder.write(name + suffix, job.signed.raw)
            root.journal.quarantined(f"{job.agency.id}/{name}{suffix}", job.agency.id, submission, str(gateway))


def unreadable(root: Root, agency: Agency, folder: Folder, name: str, now: datetime) -> Waiting:
    """An upload the gateway may not read: its uploader's client made it without group read (sftp `put` of a
    0600 file does), which also masks the outbox's default ACL. Nothing is taken and the file stays; the sender
    gets a report saying how to send it again, once per upload (and the admin one audit event)."""
    stem = _own_name(name).removesuffix(".csv")
    try:
        uploaded = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
        with folder.sub(REJECTED, create=True) as rejected:
            reported = os.stat(f"{stem}.report.txt", dir_fd=rejected.fd, follow_symlinks=False)
        told = reported.st_mtime_ns >= uploaded.st_mtime_ns
    except FileNotFoundError:
        told = False
    except (InputFileError, UsageError, OSError):
        told = True  # nowhere to report it: the log line below still says why it waits
    why = "the gateway may not read it (uploaded without read permission for its group)"
    if told:
        return Waiting(agency.id, name, why, soon=False)
    shown_name = shown(name)
    text = (
        f"{shown_name}: NOT TAKEN ({now:%Y-%m-%d %H:%M} UTC): the gateway may not read it.\n"
        "  - It was uploaded without read permission for its group (mode 0600, say, which an SFTP client such as\n"
        "    `sftp put` copies from the file on your machine); that also overrides the outbox's access list.\n\n"
        f"Nothing was delivered. Remove it (sftp: rm /outbox/{shown_name}) and upload a copy its group can read\n"
        '(chmod 640 FILE before put; WinSCP: untick "Set permissions"), with its signature.\n'
    )
    detail = {"file": shown_name, "status": "unreadable", "reasons": [why]}
    if write_report(root, agency, name, text, detail) is not None:
        root.audit.append("submission.unreadable", actor="gateway", agency=agency.id, file=shown_name)
    log.error("unreadable agency=%s file=%r: %s; the sender was told how to upload it again", agency.id, name, why)
    return Waiting(agency.id, name, why, soon=False)


def _report_text(job: Job, refused: Refused, now: datetime) -> str:
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
    advice = refused.advice or "Fix it and submit it again."
    lines += ["", f"The submission is kept encrypted in quarantine. {advice}"]
    return "\n".join(lines) + "\n"


def _detail(job: Job, refused: Refused) -> dict[str, object]:
    return {
        "file": job.shown,
        "agency": job.agency.id,
        "stage": refused.stage,
        "reasons": list(refused.reasons),
        "validation": refused.report.to_json() if refused.report is not None else None,
    }


def roll_back(root: Root, submission: str) -> list[str]:
    """Withdraw the packages an unfinished submission already published; keep any a recipient pulled."""
    withdrawn = []
    for delivery in root.journal.deliveries(submission).values():
        if delivery.status == ROLLED_BACK:
            continue
        if delivery.status == DEFERRED:  # never made: nothing to withdraw
            root.journal.rolled_back(submission, delivery.recipient)
            continue
        if root.journal.pulled_by_anyone(delivery.package, delivery.recipient):
            log.warning("kept agency=%s package=%s: pulled before the rollback", delivery.recipient, delivery.package)
            continue
        root.journal.rolled_back(submission, delivery.recipient)
        extensions = (package_suffix(delivery.method), ".manifest.json", ".manifest.json.sig")
        root.store.withdraw(delivery.recipient, (delivery.package + e for e in extensions))
        withdrawn.append(f"{delivery.recipient}/{delivery.package}")
    return withdrawn


def write_report(root: Root, agency: Agency, name: str, text: str, detail: Mapping[str, object]) -> Path | None:
    """Write the report beside the outbox (rejected/), never through a link; None if that is not possible."""
    stem = _own_name(name).removesuffix(".csv")
    try:
        with open_outbox(root.path, agency.id, create=True) as outbox, outbox.sub(REJECTED, create=True) as folder:
            gid = group_id(agency.unix_group)  # the sender's officers read it; private if the host has no such group
            folder.write(f"{stem}.report.txt", text.encode(), group=gid)
            folder.write(f"{stem}.report.json", json.dumps(detail, indent=2, ensure_ascii=False).encode(), group=gid)
    except (InputFileError, UsageError) as exc:
        log.error("no report agency=%s file=%r: %s", agency.id, name, exc.message)
        return None
    return root.path / OUTBOX / agency.id / REJECTED / f"{stem}.report.txt"
