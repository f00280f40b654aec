"""Durable states of submissions, deliveries and pulls (the journal seam; SQLite for now).

A submission moves  received -> sealing -> delivered -> done,  or  received -> rejecting -> rejected,
or to abandoned when its files vanish mid-flight. One whose deliveries are not all made (a recipient
with no active officer or no current password) moves sealing -> partial, stays in its outbox, and
goes partial -> sealing again once one of them can be made. Each (submission, recipient) delivery
moves sealing -> delivered -> purged, or rolled_back, or deferred -> sealing. Every state is
written before the side effect it announces ("record, then act"), so a restart knows what to finish or undo.

An audit event caused by a state change is staged in `audit_outbox` in the same transaction; the
pipeline appends it to the audit log and then clears it, so a crash never loses or doubles it.

Durability. Every commit survives the process being killed (SQLite's WAL is in the page cache at
once). Against a power cut, a commit is durable only when the WAL is synced: the connection syncs
it at every commit (synchronous=FULL), except for the commits of the hot path, which are "relaxed"
(synchronous=NORMAL for that commit: `_transaction(durable=False)`): begin, sealing, delivery_done,
done, release, audit_appended, heartbeats. A relaxed commit becomes durable with the next durable
one (the WAL is one sequence: syncing it syncs everything before). The durable commits are exactly
those that come before an act that must not outlive its record after a power cut:

- delivery_sealing, before a package is linked into an inbox: a restart must know to withdraw it;
- delivered, before the outbox copy is removed: after that, the journal is the only record;
- rejecting, before the file is quarantined and removed; partial, abandoned, rejected and every
  other commit that stages an audit event, before the event is appended to the (fsynced) audit log:
  the log must never hold an event the journal could forget it staged, or it would be staged and
  appended again. A package.delivered staged by the relaxed delivery_done is held back by
  `staged_audit(ready=True)` until its submission leaves "sealing" (by one of the durable commits),
  and then appended with the others in one write (`AuditLog.append_all`).

What a power cut can lose is therefore only relaxed progress since the last durable commit: an
attempt's count, a "done" after the outbox copy is gone (recovery redoes it), the removal of audit
events already appended (recovery finds them in the log by ref), a heartbeat.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.adapters import pg
from gateway.adapters.db import Cursor, Database, writing
from gateway.core.errors import Claimed, ClaimLost, GatewayError

if TYPE_CHECKING:
    from gateway.adapters.store import Fences
    from gateway.state.subjects import Entries

log = logging.getLogger(__name__)
# once-only work: taken by one node at a time (Journal.duty), or waited for in turn (Journal.exclusive)
DUTY_METRICS, DUTY_CHECKPOINT, DUTY_SEQUENCER, DUTY_PURGE, DUTY_RESCAN = 1, 2, 3, 4, 5
RECEIVED, SEALING, DELIVERED, DONE = "received", "sealing", "delivered", "done"
REJECTING, REJECTED, ABANDONED = "rejecting", "rejected", "abandoned"
PARTIAL = "partial"  # some deliveries are deferred: the submission waits in its outbox
IN_FLIGHT = (RECEIVED, SEALING, REJECTING)
PURGED, ROLLED_BACK, DEFERRED = "purged", "rolled_back", "deferred"
PACKAGE_DELIVERED = "package.delivered"  # the audit event delivery_done stages (relaxed)
MAIL_QUEUED, MAIL_SENT, MAIL_GAVE_UP = "queued", "sent", "gave_up"
_COLUMNS = "id, agency, name, sha256, status, officer, marking, period, rows, reason, attempts, sealed_at, stage"


@dataclass(frozen=True, slots=True)
class SubmissionRecord:
    id: str
    agency: str
    name: str
    sha256: str
    status: str
    officer: str | None
    marking: str | None
    period: str | None
    rows: int | None
    reason: str | None
    attempts: int
    sealed_at: str | None
    stage: str | None


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    submission: str
    recipient: str
    package: str
    method: str
    key_id: str
    status: str
    created: str
    expires: str


@dataclass(frozen=True, slots=True)
class DeferredDelivery:
    """A delivery that waits for the gateway's configuration (an officer, a password), and its submission."""

    submission: str
    agency: str
    name: str
    recipient: str
    since: str
    reason: str


@dataclass(frozen=True, slots=True)
class MailItem:
    """One message for [smtp.relay] to send: a package by e-mail, or a notice (never personal data).

    `id` is derived from what the message is about (kind, package or month, address), so queueing it
    again (a redo after a crash) queues nothing new: each is sent once.
    """

    id: str
    kind: str  # package, landed, rejected, late, key_expiry, relay_gave_up
    address: str
    subject: str
    body: str  # the text part: counts, names of agencies and months, never a cell's value
    officer: str | None = None
    agency: str | None = None  # the agency it is sent to (package, landed) or about (rejected, late)
    package: str | None = None
    sender: str | None = None  # the sending agency (package, landed)
    period: str | None = None
    attachment: str | None = None  # package: the inbox payload, or the spooled encrypted entity, by name
    status: str = MAIL_QUEUED
    attempts: int = 0
    created: str = ""
    error: str | None = None


_MAIL_COLUMNS = (
    "id, kind, address, subject, body, officer, agency, package, sender, period, attachment, status, attempts,"
    " created, error"
)


@dataclass(frozen=True, slots=True)
class StagedAudit:
    ref: str
    event: str
    actor: str
    agency: str | None
    details: dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


_claims_fd: dict[str, int] = {}  # one descriptor per process and file: closing any other would drop its locks


def _claims(path: str) -> int:
    """This process's descriptor on the claims file `path` (opened once, kept open)."""
    fd = _claims_fd.get(path)
    if fd is None:
        fd = _claims_fd[path] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    return fd


def _claim_byte(submission_id: str) -> int:
    return int(hashlib.sha256(submission_id.encode()).hexdigest()[:15], 16)


def _node() -> str:
    """This process, as a claim names its holder: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _gone(node: str) -> bool:
    """Whether the holder `node` (host:pid) is a process of this host that no longer exists: its claim is dead
    before its lease runs out (a node killed and restarted need not wait). A pid reused since is taken as alive."""
    host, _, pid = node.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")  # killed, not yet reaped: gone all the same


# A lease's times are the server's (clock_timestamp(), in UTC, as ISO 8601 text): nodes' clocks never meet in it.
_HELD = """SELECT node, until > to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS'), fence
    FROM claims WHERE submission = ? FOR UPDATE SKIP LOCKED"""
_TAKE = """UPDATE claims SET node = ?, fence = nextval('claim_fences'),
    until = to_char((clock_timestamp() + make_interval(secs => ?)) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS')
    WHERE submission = ? RETURNING fence"""
_DELIVERED_TO = "SELECT recipient FROM deliveries WHERE submission = ?"
_RENEW = """UPDATE claims
    SET until = to_char((clock_timestamp() + make_interval(secs => ?)) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS')
    WHERE submission = ? AND fence = ?"""


class Lease:
    """A claim on one submission in the PostgreSQL journal: held by one process (`node`, host:pid) until `until`,
    under a fencing number greater than every one given before.

    Taken with `SELECT … FOR UPDATE SKIP LOCKED` on the submission's claims row: a row another process is
    taking, renewing or writing under is skipped (Claimed), never waited on; one whose lease ran out, or whose
    holder was a process of this host that is gone, is taken over with a new fencing number. A thread renews
    it every third of the lease on a connection of its own.
    Every later write of this process checks, in its own transaction, that the row still shows its fencing
    number (`guard`, which also share-locks the row until that write commits, so no take-over can land inside
    it): once another process has taken the submission over, this one writes nothing more for it (ClaimLost).
    Its files are fenced too (adapters.store's "Fencing"): the claim's folders, inbox/<agency>/.fences/<fence>/,
    are made before the claim is committed, and a take-over removes the old claim's folders before committing
    its own, so the old holder can no longer publish or withdraw a package either.
    """

    def __init__(self, db: pg.Connection, submission: str, fence: int, seconds: int, fences: Fences) -> None:
        self.db, self.submission, self.fence, self.seconds, self.fences = db, submission, fence, seconds, fences
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name=f"lease-{submission[:12]}", daemon=True)
        self._renewer.start()
        db.guard = self.guard
        fences.current = fence

    @classmethod
    def take(cls, db: pg.Connection, submission: str, seconds: int, fences: Fences, sender: str) -> Lease:
        """Claim `submission` (from agency `sender`) for this process for `seconds`, its fence folders made in the
        inboxes of `sender`'s recipients and of any the submission was delivered to before; raise Claimed if
        another live process holds it."""
        made: int | None = None
        try:
            with writing(db, serial=False) as claims:
                claims.execute(
                    "INSERT INTO claims (submission, fence, node, until) VALUES (?, 0, '', '') ON CONFLICT DO NOTHING",
                    (submission,),
                )
                row = claims.execute(_HELD, (submission,)).fetchone()
                if row is None or (row[0] and row[0] != _node() and row[1] and not _gone(str(row[0]))):
                    holder = row[0] if row else "another node"
                    raise Claimed(f"submission {submission[:16]} is being processed by {holder}")
                if row[0]:  # not let go: its holder is gone or past its lease, and may yet wake up
                    fences.revoke(int(row[2]))
                agencies = list(fences.recipients(sender))
                if row[2]:  # claimed before: what it published may be withdrawn now, wherever the routes say
                    agencies += [r for (r,) in claims.execute(_DELIVERED_TO, (submission,)).fetchall()]
                fence = int(claims.execute(_TAKE, (_node(), seconds, submission)).fetchone()[0])
                made = fence
                fences.make(fence, agencies)
        except BaseException:
            if made is not None:
                fences.drop(made)
            raise
        return cls(db, submission, fence, seconds, fences)

    def guard(self, db: pg.Connection) -> None:
        """In a write transaction of this process: raise ClaimLost unless the claim is still this one."""
        held = db.execute(
            "SELECT 1 FROM claims WHERE submission = ? AND fence = ? FOR SHARE", (self.submission, self.fence)
        ).fetchone()
        if held is None:
            raise ClaimLost(
                f"submission {self.submission[:16]} was taken over by another node while this one was paused or cut"
                f" off longer than its lease ([journal] lease_seconds = {self.seconds}): this node writes nothing"
                " more for it"
            )

    def _renew(self) -> None:
        renewer: pg.Connection | None = None
        try:
            while not self._stop.wait(self.seconds / 3):
                try:
                    renewer = renewer or self.db.sibling()
                    renewer.execute(_RENEW, (self.seconds, self.submission, self.fence))
                except GatewayError as exc:  # the server away: the lease may run out; `guard` will tell
                    log.warning("lease of submission %s not renewed: %s", self.submission[:16], exc.message)
        finally:
            if renewer is not None:
                renewer.close()

    def release(self) -> None:
        """Let the submission go (so no other node waits for the lease to run out)."""
        self._stop.set()
        self._renewer.join()
        if self.db.guard == self.guard:
            self.db.guard = None
        if self.fences.current == self.fence:
            self.fences.current = None
        try:
            self.db.execute(
                "UPDATE claims SET node = '', until = '' WHERE submission = ? AND fence = ?",
                (self.submission, self.fence),
            )
        except GatewayError as exc:  # the lease runs out by itself (and its fence folder is swept then)
            log.warning("claim of submission %s not released: %s", self.submission[:16], exc.message)
            return
        self.fences.drop(self.fence)


class Journal:
    def __init__(
        self, connection: Database, *, claims: Path, lease_seconds: int = 30, fences: Fences | None = None
    ) -> None:
        self.db = connection
        self.fences = fences  # on PostgreSQL: the claims' folders in inbox/<agency>/.fences/ (Lease)
        self._claims = str(claims)  # the file whose byte-range locks are the claims (`claim`)
        self._claimed: int | None = None  # the byte of the claims file this process holds, if any
        self._lease: Lease | None = None  # on PostgreSQL: the claim this process holds, if any
        self.lease_seconds = lease_seconds
        # only the daemon and its workers claim (each lets go after every file); one-shot commands
        # hold the run lock or touch no submission, and must never wait on a claim
        self.claiming = False

    @property
    def leases(self) -> bool:
        """Whether claims are leases in the journal (PostgreSQL: nodes on many hosts) rather than locks."""
        return isinstance(self.db, pg.Connection)

    def claim(self, submission_id: str, agency: str) -> None:
        """Hold the submission for this process, waiting while another process (a worker) holds it.

        Two names with the same bytes are one submission: two workers taking them at once must not
        both seal it. On SQLite the claim is a POSIX record lock on one byte of `state/claims.lock`,
        which the kernel drops when its process dies, so a killed worker never leaves a submission
        claimed. On PostgreSQL it is a lease (`Lease`): raises Claimed while another live process,
        of this node or another, holds it. A process holds one claim at a time: taking one releases the last.
        """
        if not self.claiming:
            return
        self.unclaim()
        if isinstance(self.db, pg.Connection):
            assert self.fences is not None  # noqa: S101 (given by the root for every PostgreSQL journal)
            self._lease = Lease.take(self.db, submission_id, self.lease_seconds, self.fences, agency)
            return
        fd = _claims(self._claims)
        byte = _claim_byte(submission_id)
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, byte)
        self._claimed = byte

    def try_claim(self, submission_id: str, agency: str) -> bool:
        """Claim the submission unless another live process holds it (then False); always True on SQLite, where
        the one daemon's recovery runs with no worker holding a claim."""
        if not self.leases or not self.claiming:
            return True
        try:
            self.claim(submission_id, agency)
        except Claimed:
            return False
        return True

    def fence_live(self, fence: int) -> bool:
        """Whether a claim with fencing number `fence` is held and its lease has not run out (its folder is in use)."""
        if not isinstance(self.db, pg.Connection):
            return False
        row = self.db.execute(
            "SELECT 1 FROM claims WHERE fence = ? AND node <> ''"
            """ AND until > to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS')""",
            (fence,),
        ).fetchone()
        return row is not None

    def duty(self, number: int) -> bool:
        """Whether this node is the one doing the once-only work `number` (DUTY_*) now: on the PostgreSQL journal,
        the node holding its advisory lock, taken over when that node's session ends; on SQLite, the one daemon."""
        return pg.duty(self.db, number) if isinstance(self.db, pg.Connection) else True

    def sequencer(self) -> AbstractContextManager[None]:
        """Hold the audit sequencer: on the PostgreSQL journal, one node at a time appends staged events to the
        log (the chain stays one, in order); on SQLite, the flush lock file does it alone."""
        return self.exclusive(DUTY_SEQUENCER)

    def exclusive(self, number: int) -> AbstractContextManager[None]:
        """Wait for, then hold, the once-only work `number` (DUTY_*) for the block: on the PostgreSQL journal an
        advisory lock among every node's processes; on SQLite nothing (one host: the caller's own locks)."""
        return pg.exclusive(self.db, number) if isinstance(self.db, pg.Connection) else nullcontext()

    def unclaim(self) -> None:
        """Release this process's claim (see `claim`), if it holds one."""
        if self._claimed is not None:
            fcntl.lockf(_claims(self._claims), fcntl.LOCK_UN, 1, self._claimed)
            self._claimed = None
        if self._lease is not None:
            lease, self._lease = self._lease, None
            lease.release()

    def _transaction(self, *, durable: bool = True) -> AbstractContextManager[Database]:
        """One write transaction (read-then-write safe across processes); `durable=False` commits it without
        syncing the WAL (see the module's "Durability"). Raises StorageError."""
        return writing(self.db, durable=durable)

    def relaxed(self) -> AbstractContextManager[Database]:
        """A transaction committed without syncing the WAL, for what the next durable commit may carry
        (the quality counts written before a submission's seal or refusal). Raises StorageError."""
        return self._transaction(durable=False)

    def _write(self, sql: str, parameters: tuple[Any, ...], *, durable: bool = True) -> Cursor:
        with self._transaction(durable=durable) as db:
            return db.execute(sql, parameters)

    def _stage(self, ref: str, event: str, actor: str, agency: str | None, details: Mapping[str, Any]) -> None:
        entry = json.dumps({"event": event, "actor": actor, "agency": agency, "details": dict(details)})
        self.db.execute(
            "INSERT INTO audit_outbox (ref, entry, created) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (ref, entry, _now()),
        )

    # ------------------------------------------------------------------------------- submissions

    def submission(self, submission_id: str) -> SubmissionRecord | None:
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM submissions WHERE id = ?",  # noqa: S608 (a constant column list)
            (submission_id,),
        ).fetchone()
        return None if row is None else SubmissionRecord(*row)

    def submissions(self, *statuses: str) -> list[SubmissionRecord]:
        """Submissions in any of `statuses`, oldest first."""
        marks = ",".join("?" * len(statuses))
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM submissions WHERE status IN ({marks}) ORDER BY created, id",  # noqa: S608 (only ?s)
            statuses,
        ).fetchall()
        return [SubmissionRecord(*row) for row in rows]

    def begin(self, submission_id: str, agency: str, name: str, sha256: str) -> SubmissionRecord:
        """Record that an attempt at this submission starts, before anything is done with it.

        A finished submission keeps its state (a second copy is a duplicate); a rejected or
        abandoned one starts afresh; one in flight counts another attempt, so a file that kills
        the gateway every time is recognised and quarantined instead of looping. In the daemon, claims
        the submission first (see `claim`): an attempt in another live process is waited for, never counted.
        """
        self.claim(submission_id, agency)
        now = _now()
        with self._transaction(durable=False) as db:  # the upsert's columns named by table (PostgreSQL needs it)
            db.execute(
                "INSERT INTO submissions (id, agency, name, sha256, status, attempts, created, updated)"
                " VALUES (?, ?, ?, ?, 'received', 1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET"
                "  attempts = CASE WHEN submissions.status IN ('received', 'sealing', 'rejecting')"
                "   THEN submissions.attempts + 1 ELSE 1 END,"
                "  name = CASE WHEN submissions.status IN ('delivered', 'done') THEN submissions.name"
                "   ELSE excluded.name END,"
                "  status = CASE WHEN submissions.status IN ('rejected', 'abandoned', 'rejecting') THEN 'received'"
                "   ELSE submissions.status END,"
                "  updated = excluded.updated",
                (submission_id, agency, name, sha256, now, now),
            )
        record = self.submission(submission_id)
        assert record is not None  # noqa: S101 (just written in this connection)
        return record

    def sealing(
        self,
        submission_id: str,
        *,
        officer: str,
        marking: str,
        period: str,
        rows: int,
        sealed_at: str,
        index: Entries | None = None,
    ) -> SubmissionRecord:
        """Fix what the packages will say, before the first is written; keep what an earlier attempt fixed.
        With `index`, record who is in the file for subject access (keyed hashes) in the same transaction.

        Relaxed: the first delivery_sealing, before any package is written, makes it durable."""
        with self._transaction(durable=False) as db:
            if index is not None:
                index.write(db, submission_id)
            db.execute(
                "UPDATE submissions SET status = 'sealing', officer = ?, marking = ?, period = ?, rows = ?,"
                " sealed_at = ?, updated = ? WHERE id = ? AND status = 'received'",
                (officer, marking, period, rows, sealed_at, _now(), submission_id),
            )
            # a partial submission going on with its deferred deliveries keeps what it fixed
            db.execute(
                "UPDATE submissions SET status = 'sealing', updated = ? WHERE id = ? AND status = 'partial'",
                (_now(), submission_id),
            )
        record = self.submission(submission_id)
        assert record is not None  # noqa: S101
        return record

    def delivered(self, submission_id: str, audit: tuple[str, Mapping[str, Any]]) -> None:
        """Every delivery of the submission is committed: only the outbox copy remains to be removed."""
        event, details = audit
        with self._transaction() as db:
            db.execute(
                "UPDATE submissions SET status = 'delivered', updated = ? WHERE id = ? AND status = 'sealing'",
                (_now(), submission_id),
            )
            record = self.submission(submission_id)
            self._stage(f"{submission_id}:delivered", event, record.officer or "gateway", record.agency, details)  # type: ignore[union-attr]

    def partial(self, submission_id: str) -> None:
        """Some deliveries are deferred: the submission stays in its outbox until they are made."""
        self._write(
            "UPDATE submissions SET status = 'partial', updated = ? WHERE id = ? AND status = 'sealing'",
            (_now(), submission_id),
        )

    def named(self, agency: str, name: str) -> SubmissionRecord | None:
        """The latest submission of `agency` recorded under the file name `name`, if any."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM submissions WHERE agency = ? AND name = ?"  # noqa: S608 (a constant column list)
            " ORDER BY updated DESC, rowid DESC LIMIT 1",
            (agency, name),
        ).fetchone()
        return None if row is None else SubmissionRecord(*row)

    def partial_named(self, agency: str, name: str) -> SubmissionRecord | None:
        """The partial submission of `agency` whose file is called `name`, if any (a cheap look before reading it)."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM submissions WHERE agency = ? AND name = ? AND status = 'partial'"  # noqa: S608
            " ORDER BY updated DESC LIMIT 1",
            (agency, name),
        ).fetchone()
        return None if row is None else SubmissionRecord(*row)

    def partial_closed(self, submission_id: str, audit: tuple[str, Mapping[str, Any]]) -> None:
        """The file of a partial submission left its outbox: its deferred deliveries can never be made
        (no plaintext is kept anywhere else); the deliveries made stand."""
        event, details = audit
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET status = 'rolled_back' WHERE submission = ? AND status = 'deferred'",
                (submission_id,),
            )
            db.execute(
                "UPDATE submissions SET status = 'done', updated = ? WHERE id = ? AND status = 'partial'",
                (_now(), submission_id),
            )
            record = self.submission(submission_id)
            self._stage(f"{submission_id}:closed", event, "gateway", record.agency if record else None, details)

    def release(self, submission_id: str) -> None:
        """The attempt ended in an error that was caught and logged: do not count it as a crash."""
        self._write(
            "UPDATE submissions SET attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END"
            " WHERE id = ? AND status IN ('received', 'sealing')",
            (submission_id,),
            durable=False,
        )

    def done(self, submission_id: str) -> None:
        """Close a delivered submission whose outbox copy is gone (relaxed: recovery would redo it)."""
        self._write(
            "UPDATE submissions SET status = 'done', updated = ? WHERE id = ? AND status = 'delivered'",
            (_now(), submission_id),
            durable=False,
        )

    def rejecting(self, submission_id: str, stage: str, reason: str) -> bool:
        """Record the verdict before quarantining; False if the submission was already delivered."""
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE submissions SET status = 'rejecting', stage = ?, reason = ?, updated = ?"
                " WHERE id = ? AND status IN ('received', 'sealing', 'rejecting', 'partial')",
                (stage, reason, _now(), submission_id),
            ).rowcount
        return changed == 1

    def rejected(
        self, submission_id: str, audit: tuple[str, Mapping[str, Any]], mail: tuple[MailItem, ...] = ()
    ) -> None:
        event, details = audit
        with self._transaction() as db:
            db.execute(
                "UPDATE submissions SET status = 'rejected', updated = ? WHERE id = ? AND status = 'rejecting'",
                (_now(), submission_id),
            )
            record = self.submission(submission_id)
            agency = record.agency if record else None
            self._stage(
                f"{submission_id}:rejected:{record.attempts if record else 0}", event, "gateway", agency, details
            )
            self._queue(mail)

    def abandoned(self, submission_id: str, audit: tuple[str, Mapping[str, Any]]) -> None:
        event, details = audit
        with self._transaction() as db:
            db.execute("UPDATE submissions SET status = 'abandoned', updated = ? WHERE id = ?", (_now(), submission_id))
            db.execute(
                "UPDATE deliveries SET status = 'rolled_back' WHERE submission = ? AND status != 'purged'",
                (submission_id,),
            )
            record = self.submission(submission_id)
            self._stage(f"{submission_id}:abandoned", event, "gateway", record.agency if record else None, details)

    def quarantined(self, file: str, agency: str, submission_id: str, key: str) -> None:
        self._write(
            "INSERT INTO quarantine (file, agency, submission, key, created) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (file) DO UPDATE SET created = excluded.created, key = excluded.key, status = 'kept'",
            (file, agency, submission_id, key, _now()),
        )

    # ------------------------------------------------------------------------------- deliveries

    def deliveries(self, submission_id: str) -> dict[str, DeliveryRecord]:
        rows = self.db.execute(
            "SELECT submission, recipient, package, method, key_id, status, created, expires FROM deliveries"
            " WHERE submission = ?",
            (submission_id,),
        ).fetchall()
        return {row[1]: DeliveryRecord(*row) for row in rows}

    def delivery_sealing(
        self,
        submission_id: str,
        recipient: str,
        *,
        package: str,
        method: str,
        key_id: str,
        expires: str,
        signed_by: str,
    ) -> None:
        """Record the plan before the payload is written (a redo finds it and keeps its key id)."""
        self._write(
            "INSERT INTO deliveries (submission, recipient, package, method, key_id, status, created, expires,"
            " signed_by) VALUES (?, ?, ?, ?, ?, 'sealing', ?, ?, ?) ON CONFLICT (submission, recipient) DO UPDATE SET"
            " method = excluded.method, key_id = excluded.key_id, signed_by = excluded.signed_by, status = 'sealing',"
            " created = CASE WHEN deliveries.status = 'deferred' THEN excluded.created ELSE deliveries.created END,"
            " expires = excluded.expires, reason = NULL"
            " WHERE deliveries.status IN ('sealing', 'rolled_back', 'deferred')",
            (submission_id, recipient, package, method, key_id, _now(), expires, signed_by),
        )

    def delivery_deferred(
        self,
        submission_id: str,
        recipient: str,
        *,
        package: str,
        method: str,
        reason: str,
        audit: tuple[str, Mapping[str, Any]],
    ) -> bool:
        """Record that the delivery to `recipient` cannot be made yet, and why; stage its audit event.

        True only when it becomes deferred now (not when it already was): the admin is told once.
        """
        event, details = audit
        now = _now()
        with self._transaction() as db:
            changed = db.execute(
                "INSERT INTO deliveries (submission, recipient, package, method, key_id, status, created, expires,"
                " reason) VALUES (?, ?, ?, ?, '', 'deferred', ?, '', ?) ON CONFLICT (submission, recipient) DO UPDATE"
                " SET status = 'deferred', key_id = '', created = excluded.created, expires = '',"
                " reason = excluded.reason WHERE deliveries.status IN ('sealing', 'rolled_back')",
                (submission_id, recipient, package, method, now, reason),
            ).rowcount
            if changed:
                self._stage(f"{submission_id}:{recipient}:deferred:{now}", event, "gateway", recipient, details)
        return changed == 1

    def delivery_dropped(self, submission_id: str, recipient: str) -> None:
        """A deferred delivery to an agency that is no longer a recipient (the route changed): never made."""
        self._write(
            "UPDATE deliveries SET status = 'rolled_back'"
            " WHERE submission = ? AND recipient = ? AND status = 'deferred'",
            (submission_id, recipient),
        )

    def deferred(self) -> list[DeferredDelivery]:
        """Every delivery waiting for the gateway's configuration, oldest first."""
        rows = self.db.execute(
            "SELECT d.submission, s.agency, s.name, d.recipient, d.created, COALESCE(d.reason, '') FROM deliveries d"
            " JOIN submissions s ON s.id = d.submission WHERE d.status = 'deferred' ORDER BY d.created, d.recipient"
        ).fetchall()
        return [DeferredDelivery(*row) for row in rows]

    def delivery_done(
        self,
        submission_id: str,
        recipient: str,
        audit: tuple[str, Mapping[str, Any]],
        mail: tuple[MailItem, ...] = (),
    ) -> None:
        """The payload, manifest and signature are published: commit the delivery, stage its audit
        event and queue its `mail` (the package by e-mail, or its notices).

        Relaxed: lost to a power cut, the delivery is still "sealing" and the redo adopts what was published."""
        event, details = audit
        with self._transaction(durable=False) as db:
            db.execute(
                "UPDATE deliveries SET status = 'delivered' WHERE submission = ? AND recipient = ?"
                " AND status = 'sealing'",
                (submission_id, recipient),
            )
            self._stage(f"{submission_id}:{recipient}:delivered", event, "gateway", recipient, details)
            self._queue(mail)

    def rolled_back(self, submission_id: str, recipient: str) -> None:
        """Record that a delivery is being withdrawn, before its files are removed."""
        self._write(
            "UPDATE deliveries SET status = 'rolled_back'"
            " WHERE submission = ? AND recipient = ? AND status != 'purged'",
            (submission_id, recipient),
        )

    def unpulled_deliveries(self, recipient: str) -> list[DeliveryRecord]:
        """Packages delivered to `recipient` that nobody there has pulled yet, oldest first."""
        rows = self.db.execute(
            "SELECT submission, recipient, package, method, key_id, status, created, expires FROM deliveries d"
            " WHERE d.recipient = ? AND d.status = 'delivered'"
            " AND NOT EXISTS (SELECT 1 FROM pulls p WHERE p.package = d.package AND p.agency = d.recipient)"
            " ORDER BY created",
            (recipient,),
        ).fetchall()
        return [DeliveryRecord(*row) for row in rows]

    def repack_ready(self, delivery: DeliveryRecord, key_id: str, signed_by: str, files: list[str]) -> None:
        """Every new file of a re-encrypted package is written beside the old: record it, then swap them in."""
        self._write(
            "INSERT INTO repacks (submission, recipient, key_id, signed_by, files) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (submission, recipient) DO UPDATE"
            " SET key_id = excluded.key_id, signed_by = excluded.signed_by, files = excluded.files",
            (delivery.submission, delivery.recipient, key_id, signed_by, json.dumps(files)),
        )

    def repacks(self) -> list[tuple[str, str, str, str, list[str]]]:
        rows = self.db.execute("SELECT submission, recipient, key_id, signed_by, files FROM repacks").fetchall()
        return [(str(r[0]), str(r[1]), str(r[2]), str(r[3]), json.loads(r[4])) for r in rows]

    def repack_done(self, submission_id: str, recipient: str, key_id: str, signed_by: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET key_id = ?, signed_by = ? WHERE submission = ? AND recipient = ?",
                (key_id, signed_by, submission_id, recipient),
            )
            db.execute("DELETE FROM repacks WHERE submission = ? AND recipient = ?", (submission_id, recipient))

    # ------------------------------------------------------------------------------- mail to send

    def _queue(self, items: tuple[MailItem, ...]) -> None:
        now = _now()
        self.db.executemany(
            "INSERT INTO mail_out (id, kind, address, subject, body, officer, agency, package, sender,"
            " period, attachment, created, due) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                (
                    m.id,
                    m.kind,
                    m.address,
                    m.subject,
                    m.body,
                    m.officer,
                    m.agency,
                    m.package,
                    m.sender,
                    m.period,
                    m.attachment,
                    now,
                    now,
                )
                for m in items
            ],
        )

    def mail_queue(self, items: tuple[MailItem, ...]) -> None:
        """Queue messages not caused by a state change (admin notices); one already queued is kept as it is."""
        if items:
            with self._transaction():
                self._queue(items)

    def mail_due(self, now: str, limit: int = 200) -> list[MailItem]:
        """Queued messages due by `now` (ISO UTC), oldest first."""
        rows = self.db.execute(
            f"SELECT {_MAIL_COLUMNS} FROM mail_out WHERE status = 'queued' AND due <= ?"  # noqa: S608 (constant)
            " ORDER BY created, id LIMIT ?",
            (now, limit),
        ).fetchall()
        return [MailItem(*row) for row in rows]

    def mail_next_due(self) -> str | None:
        row = self.db.execute("SELECT MIN(due) FROM mail_out WHERE status = 'queued'").fetchone()
        return None if row is None else row[0]

    def mail(self, *statuses: str) -> list[MailItem]:
        """Messages in any of `statuses` (all if none given), oldest first."""
        wanted = statuses or (MAIL_QUEUED, MAIL_SENT, MAIL_GAVE_UP)
        marks = ", ".join("?" for _ in wanted)
        rows = self.db.execute(
            f"SELECT {_MAIL_COLUMNS} FROM mail_out WHERE status IN ({marks}) ORDER BY created, id",  # noqa: S608
            wanted,
        ).fetchall()
        return [MailItem(*row) for row in rows]

    def mail_sent(self, ids: tuple[str, ...], audit: tuple[str, Mapping[str, Any]]) -> None:
        """The relay took the message (its 250 after DATA): never send these again. Durable, at once."""
        event, details = audit
        with self._transaction() as db:
            db.executemany(
                "UPDATE mail_out SET status = 'sent', sent = ?, attempts = attempts + 1, error = NULL"
                " WHERE id = ? AND status = 'queued'",
                [(_now(), i) for i in ids],
            )
            rest = {k: v for k, v in details.items() if k != "agency"}  # the entry's own field
            self._stage(f"mail:{ids[0]}:sent", event, "gateway", details.get("agency"), rest)

    def mail_retry(self, ids: tuple[str, ...], error: str, due: str) -> None:
        """A temporary failure (4xx, no connection): try again at `due`."""
        self._write_many(
            "UPDATE mail_out SET attempts = attempts + 1, error = ?, due = ? WHERE id = ? AND status = 'queued'",
            [(error, due, i) for i in ids],
        )

    def mail_gave_up(
        self, ids: tuple[str, ...], error: str, audit: tuple[str, Mapping[str, Any]], alert: tuple[MailItem, ...]
    ) -> None:
        """Stop trying these (a 5xx, or retried for too long), stage the event and queue the admins' `alert`."""
        event, details = audit
        with self._transaction() as db:
            db.executemany(
                "UPDATE mail_out SET status = 'gave_up', attempts = attempts + 1, error = ?"
                " WHERE id = ? AND status = 'queued'",
                [(error, i) for i in ids],
            )
            rest = {k: v for k, v in details.items() if k != "agency"}
            self._stage(f"mail:{ids[0]}:gave_up", event, "gateway", details.get("agency"), rest)
            self._queue(alert)

    def mail_waiting_for(self, attachment: str) -> int:
        """How many queued messages still attach `attachment` (a spooled file goes once none do)."""
        row = self.db.execute(
            "SELECT COUNT(*) FROM mail_out WHERE status = 'queued' AND attachment = ?", (attachment,)
        ).fetchone()
        return int(row[0])

    def mail_purged(self, package: str, agency: str) -> None:
        """Forget the messages about a package purged from `agency`'s inbox (one not yet sent is never sent)."""
        self._write("DELETE FROM mail_out WHERE package = ? AND agency = ?", (package, agency))

    def mail_forget(self, before: str) -> int:
        """Forget the messages sent or given up that were queued before `before` (their audit events stay)."""
        return self._write("DELETE FROM mail_out WHERE status != 'queued' AND created < ?", (before,)).rowcount

    def _write_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._transaction() as db:
            db.executemany(sql, rows)

    # ------------------------------------------------------------------------------- audit outbox

    def staged_audit(self, *, ready: bool = False) -> list[StagedAudit]:
        """Audit events recorded with a state change and not yet appended to the log, oldest first.

        With `ready`, only those durably staged (see "Durability"): a package.delivered waits while
        its submission is still sealing, staged by a relaxed commit; it goes with the submission's end.
        """
        rows = self.db.execute("SELECT ref, entry FROM audit_outbox ORDER BY created, rowid").fetchall()
        staged = []
        sealing: dict[str, bool] = {}
        for ref, text in rows:
            entry = json.loads(text)
            if ready and entry["event"] == PACKAGE_DELIVERED:
                submission = str(ref).split(":", 1)[0]
                if submission not in sealing:
                    record = self.submission(submission)
                    sealing[submission] = record is not None and record.status == SEALING
                if sealing[submission]:
                    continue
            staged.append(StagedAudit(ref, entry["event"], entry["actor"], entry["agency"], entry["details"]))
        return staged

    def audit_appended(self, *refs: str) -> None:
        """Let staged events go once they are on the audit log (relaxed: a lost removal is found by ref)."""
        with self._transaction(durable=False) as db:
            db.executemany("DELETE FROM audit_outbox WHERE ref = ?", [(ref,) for ref in refs])

    # ------------------------------------------------------------------------------- pulls, keys, runs

    def pulled(self, package: str, agency: str, puller: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM pulls WHERE package = ? AND agency = ? AND puller = ?", (package, agency, puller)
        ).fetchone()
        return row is not None

    def pulled_by_anyone(self, package: str, agency: str) -> bool:
        """Whether anyone at `agency` has pulled its copy of `package` (each recipient's has the same name)."""
        row = self.db.execute("SELECT 1 FROM pulls WHERE package = ? AND agency = ?", (package, agency)).fetchone()
        return row is not None

    def record_pull(self, package: str, agency: str, puller: str) -> None:
        self._write(
            "INSERT INTO pulls (package, agency, puller, pulled) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (package, agency, puller) DO UPDATE SET pulled = excluded.pulled",
            (package, agency, puller, _now()),
        )

    def current_gateway_key(self) -> str | None:
        row = self.db.execute("SELECT fingerprint FROM gateway_keys WHERE status = 'current'").fetchone()
        return None if row is None else str(row[0])

    def gateway_key_expires(self, fingerprint: str) -> str | None:
        row = self.db.execute("SELECT expires FROM gateway_keys WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def live_packages(
        self, key_id_like: str | None = None, signed_by: str | None = None, expiring_after: str = ""
    ) -> int:
        """Packages still in an inbox (or being made) sealed with a key/password id containing
        `key_id_like`, or signed by the gateway key `signed_by` (and expiring after `expiring_after`)."""
        if signed_by is not None:
            row = self.db.execute(
                "SELECT COUNT(*) FROM deliveries WHERE status IN ('sealing', 'delivered') AND signed_by = ?"
                " AND expires >= ?",
                (signed_by, expiring_after),
            ).fetchone()
        else:  # matched here, not by instr() (SQLite's) or strpos() (PostgreSQL's): the same SQL runs on both
            rows = self.db.execute("SELECT key_id FROM deliveries WHERE status IN ('sealing', 'delivered')").fetchall()
            return sum(1 for (key_id,) in rows if (key_id_like or "") in str(key_id))
        return int(row[0])

    def quarantine_purged(self, file: str) -> None:
        self._write("UPDATE quarantine SET status = 'purged' WHERE file = ?", (file,))

    def quarantined_with(self, key: str) -> int:
        row = self.db.execute("SELECT COUNT(*) FROM quarantine WHERE key = ? AND status = 'kept'", (key,)).fetchone()
        return int(row[0])

    def gateway_keys(self) -> list[tuple[str, str, str | None, str]]:
        """Every gateway key ever used: (fingerprint, created, expires, status)."""
        rows = self.db.execute("SELECT fingerprint, created, expires, status FROM gateway_keys ORDER BY created")
        return [(str(r[0]), str(r[1]), r[2], str(r[3])) for r in rows.fetchall()]

    def add_gateway_key(self, fingerprint: str, expires: str | None) -> None:
        with self._transaction() as db:
            db.execute("UPDATE gateway_keys SET status = 'retired' WHERE status = 'current'")
            db.execute(
                "INSERT INTO gateway_keys (fingerprint, created, expires, status) VALUES (?, ?, ?, 'current')",
                (fingerprint, _now(), expires),
            )

    # ------------------------------------------------------------------------------- questions for status

    def unpulled(self, recipient: str) -> int:
        """Packages delivered to `recipient` that nobody there has pulled yet."""
        row = self.db.execute(
            "SELECT COUNT(*) FROM deliveries d WHERE d.recipient = ? AND d.status = 'delivered'"
            " AND NOT EXISTS (SELECT 1 FROM pulls p WHERE p.package = d.package AND p.agency = d.recipient)",
            (recipient,),
        ).fetchone()
        return int(row[0])

    def agencies_holding(self, signed_by: str) -> set[str]:
        """Agencies where someone has pulled (here, or on their own machine and sent a receipt) a package
        signed by the gateway key `signed_by`: they can verify that key's manifests."""
        rows = self.db.execute(
            "SELECT DISTINCT d.recipient FROM deliveries d WHERE d.signed_by = ?"
            " AND (EXISTS (SELECT 1 FROM pulls p WHERE p.package = d.package AND p.agency = d.recipient)"
            " OR EXISTS (SELECT 1 FROM receipts r WHERE r.package = d.package AND r.agency = d.recipient))",
            (signed_by,),
        ).fetchall()
        return {str(row[0]) for row in rows}

    def count_since(self, status: str, since: str) -> int:
        row = self.db.execute(
            "SELECT COUNT(*) FROM submissions WHERE status = ? AND updated >= ?", (status, since)
        ).fetchone()
        return int(row[0])

    def in_flight(self) -> int:
        row = self.db.execute(
            "SELECT COUNT(*) FROM submissions WHERE status IN ('received', 'sealing', 'rejecting')"
        ).fetchone()
        return int(row[0])

    def agencies_with(self, period: str, statuses: tuple[str, ...]) -> set[str]:
        """Agencies with a submission for `period` in one of `statuses`."""
        marks = ",".join("?" * len(statuses))
        rows = self.db.execute(
            f"SELECT DISTINCT agency FROM submissions WHERE period = ? AND status IN ({marks})",  # noqa: S608 (only ?s)
            (period, *statuses),
        ).fetchall()
        return {str(row[0]) for row in rows}

    def last_run(self) -> dict[str, object] | None:
        row = self.db.execute(
            "SELECT mode, pid, started, heartbeat, finished, processed, errors FROM runs ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else dict(zip(row.keys(), tuple(row), strict=True))

    def deliveries_expired(self, now: str) -> list[DeliveryRecord]:
        """Delivered packages whose expiry has passed, oldest first."""
        rows = self.db.execute(
            "SELECT submission, recipient, package, method, key_id, status, created, expires FROM deliveries"
            " WHERE status = 'delivered' AND expires < ? ORDER BY expires",
            (now,),
        ).fetchall()
        return [DeliveryRecord(*row) for row in rows]

    def deliveries_made(self) -> int:
        """Deliveries ever committed (still in an inbox, or purged since)."""
        row = self.db.execute("SELECT COUNT(*) FROM deliveries WHERE status IN ('delivered', 'purged')").fetchone()
        return int(row[0])

    def live_key_ids(self) -> set[str]:
        """Key and password ids a package still in an inbox (or being made) was sealed with."""
        rows = self.db.execute("SELECT DISTINCT key_id FROM deliveries WHERE status IN ('sealing', 'delivered')")
        return {str(row[0]) for row in rows.fetchall()}

    def purged(self, submission_id: str, recipient: str) -> None:
        self._write(
            "UPDATE deliveries SET status = 'purged' WHERE submission = ? AND recipient = ? AND status = 'delivered'",
            (submission_id, recipient),
        )

    def run_started(self, mode: str, pid: int) -> int:
        now = _now()
        with self._transaction() as db:  # RETURNING's row is read before the commit (SQLite requires it)
            row = db.execute(
                "INSERT INTO runs (mode, pid, started, heartbeat) VALUES (?, ?, ?, ?) RETURNING id",
                (mode, pid, now, now),
            ).fetchone()
        return int(row[0])

    def run_heartbeat(self, run: int, *, processed: int, errors: int, finished: bool = False) -> None:
        now = _now()
        self._write(
            "UPDATE runs SET heartbeat = ?, processed = ?, errors = ?, finished = CASE WHEN ? THEN ? ELSE finished END"
            " WHERE id = ?",
            (now, processed, errors, finished, now, run),
            durable=False,
        )

    def sent_package(self, agency: str, package: str) -> str | None:
        """The package name `agency` sent and had delivered, given as that name or its submission id; None if none."""
        row = self.db.execute(
            "SELECT d.package FROM deliveries d JOIN submissions s ON s.id = d.submission"
            " WHERE s.agency = ? AND (d.package = ? OR d.submission = ?) AND d.status IN ('delivered', 'purged')"
            " LIMIT 1",
            (agency, package, package),
        ).fetchone()
        return None if row is None else str(row[0])

    def delivery_of(self, package: str, recipient: str) -> tuple[DeliveryRecord, str] | None:
        """The delivery of `package` to `recipient` and its plaintext's SHA-256 (the submission's), or None."""
        row = self.db.execute(
            "SELECT d.submission, d.recipient, d.package, d.method, d.key_id, d.status, d.created, d.expires,"
            " s.sha256 FROM deliveries d JOIN submissions s ON s.id = d.submission"
            " WHERE d.package = ? AND d.recipient = ?",
            (package, recipient),
        ).fetchone()
        return None if row is None else (DeliveryRecord(*tuple(row)[:8]), row[8])

    def unreceipted(self, before: str) -> list[DeliveryRecord]:
        """Live packages delivered before `before` that no officer of their agency has receipted, oldest first."""
        rows = self.db.execute(
            "SELECT submission, recipient, package, method, key_id, status, created, expires FROM deliveries d"
            " WHERE d.status = 'delivered' AND d.created < ?"
            " AND NOT EXISTS (SELECT 1 FROM receipts r WHERE r.package = d.package AND r.agency = d.recipient)"
            " ORDER BY created",
            (before,),
        ).fetchall()
        return [DeliveryRecord(*row) for row in rows]

    def receipted(self) -> list[DeliveryRecord]:
        """Live packages that an officer of their agency has receipted."""
        rows = self.db.execute(
            "SELECT submission, recipient, package, method, key_id, status, created, expires FROM deliveries d"
            " WHERE d.status = 'delivered'"
            " AND EXISTS (SELECT 1 FROM receipts r WHERE r.package = d.package AND r.agency = d.recipient)"
            " ORDER BY created",
        ).fetchall()
        return [DeliveryRecord(*row) for row in rows]
