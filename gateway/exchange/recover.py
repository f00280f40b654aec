"""Restart: finish or roll back what a crash left in flight, and the re-packs a rotation staged."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from gateway.adapters.fsio import Folder, fsync_dir, idle_seconds, shown
from gateway.core.errors import GatewayError
from gateway.exchange.intake import OUTBOX, REJECTED, SIGNATURE_SUFFIXES, open_outbox
from gateway.exchange.refuse import roll_back
from gateway.state.journal import DEFERRED, DELIVERED, PARTIAL, RECEIVED, REJECTING, SEALING, SubmissionRecord
from gateway.state.root import INBOX, KEYS, QUARANTINE, STATE, Root, flush_audit

log = logging.getLogger(__name__)


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
    finished: list[str] = []
    abandoned: list[str] = []
    withdrawn: list[str] = []
    for record in root.journal.submissions(DELIVERED, REJECTING, RECEIVED, SEALING, PARTIAL):
        # one another node holds is in its hands now (the PostgreSQL journal)
        if not root.journal.try_claim(record.id, record.agency):
            continue
        try:
            _recover_one(root, record, finished, abandoned, withdrawn)
        finally:
            root.journal.unclaim()
    events += flush_audit(root)
    return Recovery(events, tuple(finished), tuple(abandoned), tuple(withdrawn), _remove_temp_files(root), repaired)


def _recover_one(
    root: Root, record: SubmissionRecord, finished: list[str], abandoned: list[str], withdrawn: list[str]
) -> None:
    """Finish or roll back one submission a crash left in flight (see `recover`)."""
    now = root.journal.submission(record.id)  # as it is now, claimed: another node may have ended it meanwhile
    if now is None or now.status != record.status:
        return
    record = now
    left = _outbox_copy(root, record)
    if record.status == PARTIAL:
        if left is None:
            _close_partial(root, record)
            finished.append(record.id)
    elif record.status == DELIVERED:
        if left is not None:
            _remove_copy(left, record.name)
        root.journal.done(record.id)
        finished.append(record.id)
    elif left is None and record.status == REJECTING:
        root.journal.rejected(
            record.id,
            ("submission.rejected", {"submission": record.id, "stage": record.stage, "file": shown(record.name)}),
        )
        finished.append(record.id)
    elif left is None:
        withdrawn.extend(roll_back(root, record.id) if record.status == SEALING else [])
        root.journal.abandoned(record.id, ("submission.abandoned", {"submission": record.id, "was": record.status}))
        abandoned.append(record.id)
    if left is not None:
        left[0].close()


def _close_partial(root: Root, record: SubmissionRecord) -> None:
    """A partial submission's file left its outbox: the deliveries made stand, the deferred ones never will be."""
    never = [d.recipient for d in root.journal.deliveries(record.id).values() if d.status == DEFERRED]
    root.journal.partial_closed(
        record.id,
        ("delivery.abandoned", {"submission": record.id, "recipients": never, "file": shown(record.name)}),
    )
    log.error(
        "abandoned deferred deliveries agency=%s file=%r recipients=%s: the file left the outbox before they could "
        "be made; ask the sender to submit it again if they still need it",
        record.agency,
        record.name,
        ",".join(never),
    )


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
    # on the PostgreSQL journal other nodes' writers are live: only a temp file idle past two leases is stale
    quiet = 2 * root.config.journal.lease_seconds if root.journal.leases else 0
    removed = _remove_fences(root, quiet)
    outboxes = root.path / OUTBOX
    if outboxes.is_dir():
        folders += [p / REJECTED for p in outboxes.iterdir() if not p.is_symlink() and (p / REJECTED).is_dir()]
    for folder in folders:
        for temp in [*folder.glob(".*.tmp"), *folder.glob(f".*{REPACK_SUFFIX}")]:
            if temp.is_file() and not temp.is_symlink() and idle_seconds(temp) >= quiet:
                temp.unlink()
                removed += 1
                log.info("removed stale temp file=%r", str(temp.relative_to(root.path)))
    return removed


def _remove_fences(root: Root, quiet: float) -> int:
    """Remove the fence folders (inbox/<agency>/.fences/<n>/) of claims no process holds now, and what is in them: a
    node killed before it let its claim go leaves one (with the temp files it was writing)."""
    removed = root.store.fences.sweep(root.journal.fence_live, quiet)
    if removed:
        log.info("removed stale fence folders=%d", removed)
    return removed
