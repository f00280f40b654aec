"""Process a submission. Only this module knows the order a submission flows in:
intake -> authenticate -> validate -> mark -> seal -> deliver -> record.

A submission is opened once (`fsio.OpenFile`) and every stage reads that one descriptor: the
signature check, the hash, the validator and every encryption each get a read of their own, and
each complete read must hash to what the first did. Nothing is read again by name, so a file
renamed in or written to while the gateway works on it is refused, never sealed.
"""

from __future__ import annotations

import errno
import hashlib
import logging
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime

from gateway.adapters.fsio import Folder, OpenFile, shown
from gateway.core import faults, timing
from gateway.core.errors import (
    ChangedError,
    Claimed,
    ConfigError,
    GatewayError,
    InputFileError,
    StorageError,
    UnreadableError,
    UsageError,
    VaultError,
)
from gateway.core.marking import Level, Marking, apply_marking
from gateway.core.model import Agency, Period
from gateway.exchange.authenticate import answers, corrects, intent, proven, signed_by, signer_key
from gateway.exchange.check import check_file as check_file  # noqa: PLC0414 (re-exported for its callers)
from gateway.exchange.deliver import (
    Preseal,
    Sealed,
    Unsealable,
    delivered_outcome,
    finish,
    package_base,
    plan,
    seal_all,
)
from gateway.exchange.intake import Job, Pair, open_outbox, scan_outbox, take
from gateway.exchange.outcome import Deferred, Delivered, Outcome, Refused, Waiting
from gateway.exchange.receipts import take_receipts
from gateway.exchange.refuse import duplicate, reject, unreadable
from gateway.state.journal import DEFERRED, DELIVERED, DONE, PARTIAL, SEALING, SubmissionRecord
from gateway.state.quality import QualityCounts
from gateway.state.root import Root, flush_audit
from gateway.state.subjects import Entries, index_key
from gateway.validate import Report, validate_stream

log = logging.getLogger(__name__)


MAX_ATTEMPTS = 3  # a file that stopped the gateway this often is quarantined instead of tried again


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
                root.journal.unclaim()  # on the PostgreSQL journal, other nodes may take what comes next
                if outcome is not None:
                    outcomes.append(outcome)
            outcomes += take_receipts(root, agency, folder, now, root.config.submissions.pairing_timeout_seconds)
    return outcomes


def process_pair(
    root: Root,
    agency: Agency,
    folder: Folder,
    pair: Pair,
    now: datetime,
    *,
    early: bool = False,
    seen: float | None = None,
) -> Outcome | None:
    """Take one submission through every stage; None if it vanished before it could be read.

    Never raises for a bad file (that is a Rejected outcome) nor for a full disk or a permission
    problem (Deferred: the file stays where it is and is tried again).

    `early`: the daemon saw both files closed since their last write but they have not settled yet.
    Then only a signature that verifies over the file proves it complete (`authenticate.proven`);
    anything less is Waiting (soon), with nothing written and no attempt counted, and the file is
    judged once it has settled. `seen`: when the daemon first saw the pair (`time.monotonic()`),
    for the timing line.
    """
    with timing.stopwatch(seen):
        return _take_pair(root, agency, folder, pair, now, early=early)


def _take_pair(root: Root, agency: Agency, folder: Folder, pair: Pair, now: datetime, *, early: bool) -> Outcome | None:
    if pair.signature is None and pair.age_seconds < root.config.submissions.pairing_timeout_seconds:
        return Waiting(agency.id, pair.csv)
    try:
        source = folder.open_file(pair.csv)
    except UsageError:
        log.info("vanished agency=%s file=%r: removed before it was taken", agency.id, pair.csv)
        return None
    except UnreadableError:
        if early:  # nothing it says can be proven yet: a refusal only once it has settled
            return _unproven(agency, pair)
        return unreadable(root, agency, folder, pair.csv, now)
    except GatewayError as exc:
        log.warning("unreadable agency=%s file=%r reason=%r", agency.id, pair.csv, exc.message)
        return None
    submission = None
    try:
        with source:
            if _being_written(root, source, pair, early=early):
                return Waiting(agency.id, pair.csv, "still being written: taken once its writer closes it")
            waiting = _still_deferred(root, agency, pair, source)
            if waiting is not None:
                return waiting
            job = take(root, agency, folder, pair, source)
            if early and not proven(job):
                return _unproven(agency, pair)
            digest = source.hash()
            submission = _submission_id(agency.id, digest)
            record = root.journal.begin(submission, agency.id, _journal_name(pair.csv), digest)
            outcome = _attempt(root, job, record, now)
    except Claimed as claimed:  # another node has these bytes in hand (the PostgreSQL journal): its outcome
        log.info("waiting agency=%s file=%r reason=%r", agency.id, pair.csv, claimed.message)
        return Waiting(agency.id, pair.csv, "another node is processing these bytes", soon=False)
    except (OSError, StorageError, VaultError, ConfigError) as exc:
        reason = exc.message if isinstance(exc, GatewayError) else (exc.strerror or str(exc))
        code = "" if isinstance(exc, GatewayError) else errno.errorcode.get(exc.errno or 0, str(exc.errno))
        log.error("deferred agency=%s file=%r errno=%s reason=%r", agency.id, pair.csv, code, reason)
        _release(root, submission)
        return Deferred(agency.id, pair.csv, reason)
    timing.lap("deliver" if isinstance(outcome, Delivered) else "refuse")
    kind = type(outcome).__name__.lower()
    log.info("processed agency=%s file=%r outcome=%s", agency.id, pair.csv, kind)
    log.info("timing agency=%s file=%r outcome=%s %s", agency.id, pair.csv, kind, timing.laps())
    return outcome


def _unproven(agency: Agency, pair: Pair) -> Waiting:
    """An early take that proved nothing: said once (an early take is offered once per close), judged after settling."""
    why = "its signature does not verify (yet): judged once it has settled"
    log.info("waiting agency=%s file=%r reason=%r", agency.id, pair.csv, why)
    return Waiting(agency.id, pair.csv, why)


def _still_deferred(root: Root, agency: Agency, pair: Pair, source: OpenFile) -> Waiting | None:
    """A Waiting outcome if these are the bytes of a partial submission none of whose deferred
    deliveries can be made yet; None to take the file through the stages.

    The look is cheap (the journal, the registry, the vault and one read to hash the file; no gpg, no
    validation, nothing written), so a rescan of a file that waits for an officer costs little.
    """
    record = root.journal.partial_named(agency.id, _journal_name(pair.csv))
    if record is None:
        return None
    digest = hashlib.sha256()
    for chunk in source.chunks(compare=False):  # not the read that fixes the file's hash for the stages
        digest.update(chunk)
    if digest.hexdigest() != record.sha256:
        return None  # other bytes under the same name: a submission of their own
    routed = {r.id: r for r in root.config.recipients(agency)}
    waits = []
    for delivery in root.journal.deliveries(record.id).values():
        if delivery.status != DEFERRED:
            continue
        recipient = routed.get(delivery.recipient)
        if recipient is None or not isinstance(plan(root, recipient), Unsealable):
            return None  # it can be made now (or is no longer wanted): go on
        waits.append(delivery.recipient)
    if not waits:
        return None
    return Waiting(
        agency.id,
        pair.csv,
        f"delivered, except to {', '.join(waits)} (deferred: see `iom-gateway status`)",
        soon=False,
    )


def _being_written(root: Root, source: OpenFile, pair: Pair, *, early: bool = False) -> bool:
    """Whether a writer still has the file open (or, where that cannot be told, it changed too recently;
    for an early take the close the daemon saw tells instead, and the signature must prove the rest)."""
    active = source.writer_active()
    if active is None:
        return not early and pair.age_seconds < root.config.daemon.settle_seconds
    return active


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


def _attempt(root: Root, job: Job, record: SubmissionRecord, now: datetime) -> Outcome:
    if record.status == DELIVERED:  # delivered before a crash; only the outbox copy was left
        finish(root, record, job)
        return delivered_outcome(root, record)
    try:
        if record.attempts > MAX_ATTEMPTS:
            raise Refused(
                "intake",
                [
                    f"processing this file stopped the gateway {record.attempts - 1} times: it is kept in quarantine "
                    "for the admin, who will find the cause in the gateway's log; do not submit it again until then"
                ],
            )
        return _process(root, job, record, now)
    except Refused as refused:
        return reject(root, job, record, refused, now)
    except (StorageError, VaultError, ConfigError):
        raise  # the gateway's own state (disk, vault, an expired key), not the file: deferred, never quarantined
    except ChangedError as exc:
        return reject(root, job, record, Refused("intake", [exc.message]), now)
    except GatewayError as exc:
        return reject(root, job, record, Refused("seal", [exc.message]), now)


def _process(root: Root, job: Job, record: SubmissionRecord, now: datetime) -> Outcome:
    # bytes authenticated when they arrived (a partial submission, a redo after a crash) are judged
    # as of then: the signature must still verify over them, but its age counts to that moment
    arrived = _parse_time(record.sealed_at, now) if record.status in (PARTIAL, SEALING) else now
    officer = signed_by(root, job, now, authenticated_at=arrived)
    timing.lap("verify")
    # only after authentication: an unsigned drop must not learn what was delivered before
    if record.status == DONE:
        return duplicate(root, job, record.id)
    marking, period = intent(root, job, now)
    corrected = corrects(root, job)
    answered = answers(root, job, record.id)
    # encrypt while validating; a refused file's outputs are discarded unread when the block is left
    with Preseal.start(root, record.id, job, _expected_base(root, job, record, marking, period)) as prepared:
        report = _validate(root, job, record.id, period, now, corrected)
        timing.lap("validate")
        prepared.planned()  # the SAR key is in the vault, which the ZIP thread may be opening
        fixed = root.journal.sealing(
            record.id,
            officer=officer,
            marking=marking.token,
            period=str(period),
            rows=report.rows,
            sealed_at=now.isoformat(timespec="seconds"),
            index=Entries(index_key(root), report.subjects or ()),  # who is in it, as keyed hashes only
        )
        faults.reached("journal.sealing")
        officer = fixed.officer or officer  # the officer these bytes were first authenticated for
        # a redo after a crash keeps what the first attempt fixed, so package names and manifests match
        marking = _fixed_marking(root, fixed.marking, marking)
        period = Period.parse(fixed.period) if fixed.period else period
        sealed = Sealed(
            job.agency,
            officer,
            marking,
            period,
            report,
            digest=fixed.sha256,
            size=job.source.length or 0,
            at=_parse_time(fixed.sealed_at, now),
            gateway=root.gateway_key(),  # one key signs every package and manifest of the submission
            signer=signer_key(job),
            corrects=corrected,
            request=answered,
        )
        sealing = seal_all(root, record.id, job, sealed, prepared)
    timing.lap("seal")
    packages = list(sealing.packages)
    if sealing.deferred:  # the file stays in its outbox until every delivery is made
        root.journal.partial(record.id)
        flush_audit(root)
        return Delivered(
            job.agency.id,
            job.pair.csv,
            record.id,
            officer,
            marking.token,
            report.rows,
            tuple(packages),
            tuple((d.recipient, d.reason) for d in sealing.deferred),
        )
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
    finish(root, replace(fixed, status=DELIVERED), job)
    return Delivered(job.agency.id, job.pair.csv, record.id, officer, marking.token, report.rows, tuple(packages))


def _expected_base(root: Root, job: Job, record: SubmissionRecord, marking: Marking, period: Period) -> str:
    """The package name `journal.sealing` will fix, known before validation: what an earlier attempt
    fixed (a redo, a partial submission going on), else this attempt's marking and period. Should it
    differ after all, what was prepared for it is not used (`Preseal.payload`)."""
    if record.status in (SEALING, PARTIAL):
        marking = _fixed_marking(root, record.marking, marking)
        period = Period.parse(record.period) if record.period else period
    return package_base(marking, job.agency, period, record.id)


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


def _validate(root: Root, job: Job, submission: str, period: Period, now: datetime, corrects: str | None) -> Report:
    """Table 1 and the ownership matrix over a complete read of the one open file; its counts are kept
    for the quality scorecard whatever the outcome."""
    stream = job.source.stream()
    report = validate_stream(
        stream,
        job.source.length or 0,
        job.folder.path / job.shown,
        job.agency,
        root.config,
        root.standard,
        period=period,
        today=now.date(),
        subjects=True,
    )
    QualityCounts(root.journal).record(submission, job.agency.id, report, now, corrects)
    if not report.valid:
        raise Refused("validate", [f"{sum(report.counts.values())} row error(s) against Table 1"], report)
    if not OpenFile.read_through(stream):  # a valid report reads to the end; never seal what it did not see
        raise Refused("validate", ["the validator did not read the whole file: submit it again"])
    return report


def now_utc() -> datetime:
    """The current time, in UTC: the one clock the daemon reads."""
    return datetime.now(UTC)
