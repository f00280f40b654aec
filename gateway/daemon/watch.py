"""The daemon: watch every outbox, take each file once it is complete, process it, carry on.

The only user of watchdog. Events only say "look at this outbox soon"; what is taken is decided by
a scan, so a lost event (inotify queue overflow, a network share) delays a file, never loses it:
a full scan runs at start-up and every `rescan_seconds`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

from gateway.access.check import refuse_open_state
from gateway.adapters.config import unsafe_fault_injection
from gateway.adapters.fsio import Folder
from gateway.core import faults
from gateway.core.errors import GatewayError, InputFileError, JournalUnavailable, UsageError
from gateway.core.model import Agency
from gateway.daemon.companion import Companion
from gateway.daemon.pool import Pool, Result, Task
from gateway.daemon.relay import Relay
from gateway.exchange.folders import Orphan, agency_folders, orphaned_folders
from gateway.exchange.health import late_agencies
from gateway.exchange.intake import OUTBOX, Pair, open_outbox, scan_outbox
from gateway.exchange.metrics import METRICS_SECONDS, write_metrics
from gateway.exchange.outcome import Deferred, Outcome, Rejected, Requested, Waiting
from gateway.exchange.process import now_utc, process_once, process_pair
from gateway.exchange.receipts import take_receipts
from gateway.exchange.recover import Recovery, recover
from gateway.governance.drops import take_requests
from gateway.state.journal import DUTY_CHECKPOINT, DUTY_METRICS, DUTY_RESCAN
from gateway.state.root import Root, flush_audit

log = logging.getLogger(__name__)
LOCK_FILE = "daemon.lock"
FAULT_COUNTS = "unsafe-fault-counts.json"
MAX_FAILED_STARTS = 3  # workers dying before they are ready this often in a row: the daemon works alone
ORPHAN_WAIT_SECONDS = 5.0  # a killed daemon's workers die with it (PR_SET_PDEATHSIG), a moment later
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HEARTBEAT_SECONDS = 30.0
OUTAGE_RETRY_SECONDS = (1.0, 60.0)  # a journal server that went away is tried again after 1 s, doubling to 60 s
INTAKE_LOOK_SECONDS = 5.0  # how soon an SMTP intake that exited is noticed (it starts again after RESTART_SECONDS)


# ----------------------------------------------------------------------------------------- settle


UNKNOWN = (0, -1, 0)  # no stat seen yet: differs from every real one


@dataclass(slots=True)
class _Seen:
    signature: tuple[int, int, int]  # inode, size, mtime_ns
    since: float  # last change or close: the settle time counts from here
    writing: bool
    first: float  # first event or sighting: the daemon's wait for the file counts from here
    closed: bool = False  # closed (or renamed in) since its last write: complete, as far as events tell
    untried: bool = False  # closed again since an early take was last offered for it
    missed: bool = False  # not in the last scan (it may have arrived after the scan began)


@dataclass(slots=True)
class Settler:
    """Decides when a file is complete: not open for writing (as far as events tell) and unchanged
    for `settle` seconds; or, sooner, closed since its last write, for an early take that only a
    verifying signature can turn into a verdict. Pure bookkeeping, driven by the clock values it is given."""

    settle: float
    _seen: dict[str, _Seen] = field(default_factory=dict)

    def writing(self, path: str, now: float) -> None:
        """An event says `path` was written to: the writer may still be at it."""
        seen = self._seen.get(path)
        if seen is not None:
            seen.writing, seen.closed, seen.missed = True, False, False
        else:
            self._seen[path] = _Seen(UNKNOWN, now, True, now)

    def closed(self, path: str, now: float) -> None:
        """An event says the writer closed `path` (or renamed it into place): it is whole if it stays so."""
        seen = self._seen.get(path)
        if seen is None:
            self._seen[path] = _Seen(UNKNOWN, now, False, now, closed=True, untried=True)
        else:
            seen.writing, seen.since, seen.closed, seen.untried, seen.missed = False, now, True, True, False

    def ready(self, path: str, signature: tuple[int, int, int], now: float) -> float:
        """Seconds until `path` may be taken (0 = now), given its current inode, size and mtime."""
        seen = self._seen.get(path)
        if seen is None:
            self._seen[path] = seen = _Seen(signature, now, False, now)
        seen.missed = False
        if seen.signature != signature:
            # the first look after an event keeps its time; a change since, the events told of (or
            # will): they keep deciding whether it is closed
            seen.since = now if seen.signature != UNKNOWN else seen.since
            seen.signature = signature
        if seen.writing:
            return self.settle
        return max(0.0, seen.since + self.settle - now)

    def early(self, *paths: str) -> bool:
        """Whether to take these files (a CSV and its signature) before they settle: each is closed
        since its last write, and one was closed again since an early take was last offered (the
        same bytes looked at twice would tell nothing new). Counts as offering it."""
        seen = [self._seen.get(path) for path in paths]
        if not all(s is not None and s.closed and not s.writing for s in seen):
            return False
        fresh = any(s is not None and s.untried for s in seen)
        for s in seen:
            if s is not None:
                s.untried = False
        return fresh

    def first(self, *paths: str) -> float | None:
        """When the last of these files was first seen: the daemon has had them all since then."""
        firsts = [seen.first for path in paths if (seen := self._seen.get(path)) is not None]
        return max(firsts) if firsts else None

    def gone(self, path: str) -> None:
        """An event says `path` was removed or renamed away."""
        self._seen.pop(path, None)

    def forget(self, folder: str, keep: set[str]) -> None:
        """Drop what is known about files in `folder` that the last two scans did not find (`keep`:
        what this one found): an event may tell of a file that arrived after the scan began."""
        prefix = folder.rstrip("/") + "/"
        for path in [p for p in self._seen if p.startswith(prefix) and p not in keep]:
            if self._seen[path].missed:
                del self._seen[path]
            else:
                self._seen[path].missed = True


def _signature(folder: Folder, name: str) -> tuple[int, int, int] | None:
    try:
        info = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


# ----------------------------------------------------------------------------------------- events


class _Events(FileSystemEventHandler):
    """Turns watchdog's events (from its thread) into "agency X has news" for the main loop."""

    def __init__(
        self, outbox: Path, settler: Settler, wake: Callable[[str], None], lock: threading.Lock, *, track_writes: bool
    ) -> None:
        self.outbox = outbox
        self.settler = settler
        self.wake = wake
        self.track_writes = track_writes  # the polling watcher reports no closes: settle time alone decides
        self.lock = lock

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        path = os.fsdecode(event.dest_path if kind == "moved" and event.dest_path else event.src_path)
        relative = Path(path).relative_to(self.outbox).parts if path.startswith(str(self.outbox)) else ()
        if not relative or kind in ("opened", "closed_no_write"):
            return
        if self.track_writes and not event.is_directory:
            with self.lock:
                if kind == "modified":  # not "created": that is also how a file renamed in may arrive
                    self.settler.writing(path, time.monotonic())
                elif kind == "closed":
                    self.settler.closed(path, time.monotonic())
                elif kind in ("moved", "deleted"):
                    if event.src_path:  # renamed away or removed: a file later given its name starts afresh
                        self.settler.gone(os.fsdecode(event.src_path))
                    if kind == "moved" and event.dest_path:  # renamed into place
                        self.settler.closed(path, time.monotonic())
        self.wake(relative[0])


# ----------------------------------------------------------------------------------------- daemon


@dataclass
class Daemon:
    """`iom-gateway run`: one per root (a lock in state/), stopped by SIGTERM/SIGINT, reloaded by SIGHUP."""

    path: Path
    root: Root
    settler: Settler = field(init=False)
    _wake: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # the settler is shared with watchdog's thread
    _dirty: set[str] = field(default_factory=set)
    _stop: bool = False
    _reload: bool = False
    processed: int = 0
    errors: int = 0
    _ignored: set[tuple[str, str, str]] = field(default_factory=set)
    _refused: set[str] = field(default_factory=set)
    _orphans: frozenset[Orphan] = frozenset()  # the orphaned folders with files last warned about
    _late: frozenset[tuple[str, str]] = frozenset()  # (agency, month) already warned late about
    lock_fd: int | None = None  # the run lock (`exclusive`), which every worker inherits
    pool: Pool = field(init=False)
    intake: Companion = field(init=False)
    relay: Companion = field(init=False)
    _due: dict[str, float] = field(default_factory=dict)  # agency -> when to look again (a worker said wait)
    _starved: set[str] = field(default_factory=set)  # agencies with ready files no worker was free for
    _recovering: bool = False  # a worker died: drain the pool, then recover as at a restart
    _deferred: bool = False  # a file was deferred: is the journal still there? (`_ask_journal`)

    def __post_init__(self) -> None:
        self.settler = Settler(float(self.root.config.daemon.settle_seconds))
        self.pool = Pool(self.path, self.root.config.daemon.workers, self._wake.set, self.lock_fd)
        self.intake = Companion(self.path)
        self.relay = Companion(self.path, "gateway.daemon.relay", "mail relay")
        self.root.journal.claiming = True  # a worker may hold a copy of the same bytes (see Journal.claim)

    def run(self) -> int:
        """Recover, then watch and process until stopped; return the exit status (0 after a clean stop)."""
        previous = {number: signal.signal(number, self._on_stop) for number in STOP_SIGNALS}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_reload)
        try:
            return self._serve()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _serve(self) -> int:
        config = self.root.config.daemon
        log.info(
            "starting root=%r watcher=%s settle=%ss workers=%d pid=%d",
            str(self.path),
            config.watcher,
            config.settle_seconds,
            config.workers,
            os.getpid(),
        )
        _log_recovery(recover(self.root))
        self._sync_folders()
        run_id = self.root.journal.run_started("daemon", os.getpid())
        if self._parallel:
            self.pool.start()
        observer = self._observer()
        log.info("watching outboxes=%d", len(self.root.config.agencies))
        try:
            self._loop(run_id)
            self.pool.close(self._report)  # the files in the workers' hands are finished first
        finally:
            self.intake.stop()
            self.relay.stop()
            _stop_quietly(observer)
        self._checkpoint()
        try:
            self.root.journal.run_heartbeat(run_id, processed=self.processed, errors=self.errors, finished=True)
        except JournalUnavailable as exc:  # stopped while the journal's server was away: the run ends unrecorded
            log.warning("the run's end is not recorded: %s", exc.message)
        log.info("stopped processed=%d errors=%d", self.processed, self.errors)
        return 0

    def _observer(self) -> BaseObserver:
        config = self.root.config.daemon
        outbox = self.path / OUTBOX
        observer: BaseObserver = PollingObserver(timeout=config.poll_seconds)
        if config.watcher == "inotify":
            try:
                # full events: a file renamed in from outside the outbox is "moved" in (whole as it lands),
                # where the plain emitter says "created", as for a file just opened to be written
                observer = InotifyObserver(generate_full_events=True)
            except OSError as exc:  # e.g. the per-user inotify instance limit: poll rather than stop
                log.warning("inotify unavailable (%s): falling back to polling every %ss", exc, config.poll_seconds)
        events = _Events(
            outbox, self.settler, self._note, self._lock, track_writes=not isinstance(observer, PollingObserver)
        )
        observer.schedule(events, str(outbox), recursive=True)
        observer.start()
        return observer

    def _note(self, agency: str) -> None:
        self._dirty.add(agency)
        self._wake.set()

    def _on_stop(self, number: int, _frame: FrameType | None) -> None:
        log.info("stopping signal=%s: finishing the files in hand", signal.Signals(number).name)
        self._stop = True
        self._wake.set()

    def _on_reload(self, _number: int, _frame: FrameType | None) -> None:
        self._reload = True
        self._wake.set()

    def _loop(self, run_id: int) -> None:
        clock = _Clock()
        wait = 0.0
        while not self._stop:
            self._wake.wait(timeout=wait)
            self._wake.clear()
            try:
                wait = self._round(run_id, clock)
            except JournalUnavailable as exc:
                self._journal_lost(exc)
                wait = 0.0

    def _round(self, run_id: int, clock: _Clock) -> float:
        """One turn of the loop: take in results, process what is ready, the periodic work; how long to sleep."""
        if self._reload:
            self._reload = False
            self._reload_config()
        config = self.root.config.daemon
        self._collect()
        self._ask_journal()
        now = time.monotonic()
        self.intake.tend(self.root.config.smtp_intake is not None, now)
        self.relay.tend(self.root.config.smtp_relay is not None, now)
        if now >= clock.scan:  # the first at start; on the PostgreSQL journal the later ones by one node at a time
            if not clock.scan or self.root.journal.duty(DUTY_RESCAN):
                self._dirty.update(self.root.config.agencies)
                self._warn_orphans()
                self._warn_late()
            clock.scan = now + config.rescan_seconds
        for agency_id, due in list(self._due.items()):
            if due <= now:
                self._dirty.add(agency_id)
                del self._due[agency_id]
        wait = min(self._pass(), clock.scan - now, *(due - now for due in self._due.values()))
        self._ask_journal()
        if now >= clock.beat:
            self.root.journal.run_heartbeat(run_id, processed=self.processed, errors=self.errors)
            clock.beat = now + HEARTBEAT_SECONDS
        if now >= clock.checkpoint:  # on the PostgreSQL journal: by one node, the others' stand by
            if clock.checkpoint and self.root.journal.duty(DUTY_CHECKPOINT):
                self._checkpoint()
            clock.checkpoint = now + config.checkpoint_minutes * 60
        if now >= clock.metrics:
            if self.root.journal.duty(DUTY_METRICS):
                self._write_metrics()
            clock.metrics = now + METRICS_SECONDS
        wait = max(0.05, min(wait, clock.beat - now, clock.checkpoint - now, clock.metrics - now))
        if self.root.config.smtp_intake is not None or self.root.config.smtp_relay is not None:
            wait = min(wait, INTAKE_LOOK_SECONDS)  # an intake that exited is started again soon
        return wait

    def _ask_journal(self) -> None:
        """After a deferred file: raise JournalUnavailable if the journal's server is away (SQLite always answers)."""
        if self._deferred:
            self._deferred = False
            self.root.db.execute("SELECT 1").fetchall()

    def _journal_lost(self, exc: JournalUnavailable) -> None:
        """The journal's server went away (a restart, a failover, the network): take no work until it answers
        again, trying with back-off; the workers finish (or defer) the files in hand meanwhile. Then recover as
        at a restart (what was in flight is finished or undone by the journal's states), and look at every
        outbox again. Whatever transaction was in hand rolled back whole with the connection."""
        lost = time.monotonic()
        log.error("journal unreachable (%s): taking no work until it answers", exc.message)
        delay, most = OUTAGE_RETRY_SECONDS
        while not self._stop:
            self._wake.wait(timeout=delay)
            self._wake.clear()
            if self._stop:
                return
            try:
                self._collect()  # what the workers finish meanwhile (deferred: the journal is away)
                if self.pool.in_flight:
                    continue
                self.root.db.execute("SELECT 1").fetchall()  # is it back?
                _log_recovery(recover(self.root))
            except JournalUnavailable:
                delay = min(delay * 2, most)
                log.info("journal still unreachable: trying again in %.0f s", delay)
                continue
            log.info("journal reachable again after %.0f s: recovered, taking work", time.monotonic() - lost)
            self._dirty.update(self.root.config.agencies)
            return

    @property
    def _parallel(self) -> bool:
        """Whether ready files go to the worker pool (else the daemon processes them itself, in turn)."""
        return self.pool.size > 1 and self.pool.failed_starts < MAX_FAILED_STARTS

    def _collect(self) -> None:
        """Take in what the workers finished; after a worker died and the pool drained, recover."""
        for result in self.pool.results():
            self._report(result)
        if self.pool.failed_starts == MAX_FAILED_STARTS:
            log.error(
                "workers failed to start %d times (see their errors above): the daemon processes files itself, "
                "one at a time, until a reload (SIGHUP)",
                MAX_FAILED_STARTS,
            )
            self.pool.failed_starts += 1
        if self._recovering and self.pool.in_flight == 0:
            self._recovering = False
            _log_recovery(recover(self.root))  # what the dead worker left half-made is undone, as at a restart
            self._dirty.update(self.root.config.agencies)
            if self._parallel:
                self.pool.start()

    def _report(self, result: Result) -> None:
        """Count and log a worker's answer; say when to look at its outbox again."""
        agency = result.task.agency
        if result.died is not None:
            self.errors += 1
            self._recovering = True
            self._dirty.add(agency)
        else:
            retry = self._tally(result.kind, result.summary, result.soon)
            if retry is None:
                self._dirty.add(agency)  # the next ready file, or the one a duplicate name waited behind
            else:
                self._due[agency] = min(self._due.get(agency, float("inf")), time.monotonic() + retry)
        self._dirty |= self._starved  # a worker is free again
        self._starved.clear()

    def _tally(self, kind: str, summary: str, soon: bool) -> float | None:
        """Count and log one outcome (by its class name); return how soon to look again, if it waits.

        A deferred file may have met a journal server gone away: `_ask_journal` asks once the outcomes in hand
        are counted, so that the files after it are not each deferred in turn."""
        self._deferred = self._deferred or kind == "Deferred"
        retry = None
        if kind in ("Waiting", "Deferred"):
            retry = 1.0 if kind == "Waiting" and soon else float(self.root.config.daemon.rescan_seconds)
        if kind not in ("none", "Waiting"):
            self.processed += 1
            self.errors += kind in ("Rejected", "Deferred")
            log.info("%s", summary.replace("  ", " "))
        return retry

    def _pass(self) -> float:
        """Process every ready file of the outboxes with news; return how soon to look again."""
        agencies, self._dirty = self._dirty & set(self.root.config.agencies), set()
        soonest = float("inf")
        for agency_id in sorted(agencies):
            if self._stop:
                break
            delay = self._agency(agency_id)
            if delay is not None:
                soonest = min(soonest, delay)
                self._dirty.add(agency_id)  # look again: something is settling or waiting
        return soonest

    def _agency(self, agency_id: str) -> float | None:
        agency = self.root.config.agencies[agency_id]
        try:
            folder = open_outbox(self.path, agency_id)
        except UsageError:  # not there (yet): nothing to take
            return None
        except InputFileError as exc:
            if agency_id not in self._refused:  # once, not at every scan
                log.error("refused agency=%s outbox, never followed: %s", agency_id, exc.message)
            self._refused.add(agency_id)
            return None
        self._refused.discard(agency_id)
        with folder:
            return self._outbox(agency, folder)

    def _outbox(self, agency: Agency, folder: Folder) -> float | None:
        intake = scan_outbox(folder, time.time(), self.root.config.submissions.pairing_timeout_seconds)
        pending: float | None = None
        self._report_ignored(agency.id, intake.ignored)
        for pair in self._in_turn(intake.pairs):
            if self._stop:
                return pending
            if self.pool.busy((agency.id, pair.csv)):
                continue  # in a worker's hands: its answer wakes the loop
            if self._recovering or (self._parallel and self.pool.idle() is None):
                # no worker free (or draining): looked at again when one is; not offered an early take
                # now, which would spend it (a burst larger than the pool would then wait to settle)
                self._starved.add(agency.id)
                continue
            delay, early, seen = self._settled(folder, pair.csv, pair.signature)
            if delay > 0 and not early:
                pending = min(pending if pending is not None else delay, delay)
                continue
            if self._parallel and not self._dispatch(agency, pair, early, seen):
                self._starved.add(agency.id)  # it died meanwhile: looked at again when a worker is free
                continue
            if self._parallel:
                continue
            outcome = process_pair(self.root, agency, folder, pair, now_utc(), early=early, seen=seen)
            self.root.journal.unclaim()  # a worker started by a reload may take the same bytes next
            kind = "none" if outcome is None else type(outcome).__name__
            soon = isinstance(outcome, Waiting) and outcome.soon
            retry = self._tally(kind, "" if outcome is None else outcome.summary, soon)
            if retry is not None:
                pending = min(pending if pending is not None else retry, retry)
        for outcome in take_receipts(
            self.root, agency, folder, now_utc(), self.root.config.submissions.pairing_timeout_seconds
        ):
            if not isinstance(outcome, Waiting):
                self.processed += 1
                self.errors += isinstance(outcome, Rejected)
                log.info("%s", outcome.summary.replace("  ", " "))
        for outcome in take_request_drops(self.root, agency, folder, now_utc()):
            self.processed += 1
            self.errors += isinstance(outcome, Rejected)
            log.info("%s", outcome.summary.replace("  ", " "))
        present = {str(folder.path / p.csv) for p in intake.pairs}
        present |= {str(folder.path / p.signature) for p in intake.pairs if p.signature}
        with self._lock:
            self.settler.forget(str(folder.path), present)
        return pending

    def _in_turn(self, pairs: tuple[Pair, ...]) -> tuple[Pair, ...]:
        """The ready pairs in the order to take them: as scanned; on the PostgreSQL journal, where other nodes scan
        the same outbox, starting at a place of this node's own (by its pid), so that nodes taking a burst
        meet on the same file (one claims it, the others look again later) as seldom as chance allows."""
        if not pairs or not self.root.journal.leases:
            return pairs
        start = os.getpid() % len(pairs)
        return pairs[start:] + pairs[:start]

    def _dispatch(self, agency: Agency, pair: Pair, early: bool, seen: float | None) -> bool:
        """Hand a ready pair to a free worker; False if none is free."""
        return self.pool.submit(Task(agency.id, pair.csv, pair.signature, pair.age_seconds, early, seen))

    def _report_ignored(self, agency_id: str, ignored: tuple[tuple[str, str], ...]) -> None:
        """Log each file left alone once (not at every scan), and forget those that went away."""
        now = {(agency_id, name, why) for name, why in ignored}
        for _, name, why in sorted(now - self._ignored):
            log.info("ignored agency=%s file=%r reason=%r", agency_id, name, why)
        self._ignored = {item for item in self._ignored if item[0] != agency_id} | now

    def _settled(self, folder: Folder, csv: str, signature: str | None) -> tuple[float, bool, float | None]:
        """Seconds until the pair settles (0: take it), whether to take it early all the same (both
        closed since their last write; the signature must prove the rest), and when it was first seen."""
        now = time.monotonic()
        delay = 0.0
        names = [name for name in (csv, signature) if name is not None]
        paths = [str(folder.path / name) for name in names]
        for name, path in zip(names, paths, strict=True):
            stat = _signature(folder, name)
            if stat is None:
                return 1.0, False, None
            with self._lock:
                delay = max(delay, self.settler.ready(path, stat, now))
        with self._lock:
            early = signature is not None and delay > 0 and self.settler.early(*paths)
            return delay, early, self.settler.first(*paths)

    def _reload_config(self) -> None:
        try:
            fresh = Root.open(self.path)
        except GatewayError as exc:
            log.error(
                "reload refused: keeping the configuration in use; fix gateway.toml and send SIGHUP again: %s",
                exc.message.replace("\n", " "),
            )
            return
        self.root.close()
        self.root = fresh
        fresh.journal.claiming = True
        self.settler.settle = float(fresh.config.daemon.settle_seconds)
        self._dirty.update(fresh.config.agencies)
        # the workers finish the files in hand and make way for new ones that read the new gateway.toml
        self.pool.retire()
        self.intake.stop()  # started again at once, reading the new [smtp.intake]
        self.relay.stop()  # and [smtp.relay]
        self.pool.size = fresh.config.daemon.workers
        self.pool.failed_starts = 0
        if self._parallel:
            self.pool.start()
        log.info("reloaded agencies=%d workers=%d", len(fresh.config.agencies), fresh.config.daemon.workers)
        self._sync_folders()

    def _sync_folders(self) -> None:
        """Make the folders of every agency in gateway.toml that lack them (as `init` does), saying which;
        then warn about folders of agencies no longer there that hold files."""
        for found in agency_folders(self.path, self.root.config.agencies, create=True):
            if found.state == "made":
                log.info("made folder=%r for an agency in gateway.toml", found.folder)
            elif found.state == "refused":
                log.error("refused folder=%r: %s", found.folder, found.why)
        self._orphans = frozenset()  # after a start or a reload, say it again
        self._warn_orphans()

    def _warn_orphans(self) -> None:
        """Warn once about each orphaned agency folder holding files (again when what it holds changes)."""
        stranded = frozenset(o for o in orphaned_folders(self.path, self.root.config.agencies) if o.files)
        for orphan in sorted(stranded - self._orphans, key=lambda o: o.folder):
            agency = orphan.folder.split("/", 1)[1]
            log.warning(
                "orphaned folder=%r files=%d: agency %r is not in gateway.toml, so nothing there is taken or "
                "pulled; add the agency back (then SIGHUP), or move the files out and remove the folder",
                orphan.folder,
                orphan.files,
                agency,
            )
        self._orphans = stranded

    def _warn_late(self) -> None:
        """Warn once per month about each agency with nothing delivered once the due day has passed."""
        now = datetime.now(UTC)
        month = f"{now:%Y-%m}"
        try:
            late = {(agency, month) for agency in late_agencies(self.root, now)}
        except JournalUnavailable:
            raise
        except GatewayError as exc:
            log.error("late agencies not checked: %s", exc.message)
            return
        for agency, _ in sorted(late - self._late):
            log.warning(
                "late agency=%s period=%s: nothing delivered for the month and the due day (%d) has passed; "
                "ask its Designated Officer for the file",
                agency,
                month,
                self.root.config.submissions.due_day,
            )
        self._late |= late

    def _write_metrics(self) -> None:
        try:
            write_metrics(self.root, datetime.now(UTC))
        except JournalUnavailable:
            raise  # the node stops taking work (`_journal_lost`), not only the metrics
        except (GatewayError, OSError) as exc:  # monitoring fails alone: files go on being delivered
            log.error("metrics file not written: %s", getattr(exc, "message", None) or exc)

    def _checkpoint(self) -> None:
        try:
            entry = self.root.checkpoint_audit()
        except GatewayError as exc:  # an expired key defers every file too; the daemon goes on and says why
            log.error("audit checkpoint failed: %s", exc.message.replace("\n", " "))
            return
        if entry is not None:
            log.info("audit checkpoint seq=%s covers=%s", entry["seq"], entry["covers_seq"])


@dataclass(slots=True)
class _Clock:
    """When the daemon's periodic work is next due (time.monotonic()): 0, at once."""

    scan: float = 0.0
    beat: float = 0.0
    checkpoint: float = 0.0
    metrics: float = 0.0


def _stop_quietly(observer: BaseObserver) -> None:
    """Stop watchdog; events still arriving meanwhile make it log an ERROR that means nothing here."""
    watchdog_log = logging.getLogger("watchdog")
    level = watchdog_log.level
    watchdog_log.setLevel(logging.CRITICAL)
    try:
        observer.stop()
        observer.join(timeout=5)
    finally:
        watchdog_log.setLevel(level)


def _log_recovery(recovery: Recovery) -> None:
    if recovery.anything:
        log.warning(
            "recovered audit_events=%d finished=%d abandoned=%d withdrawn=%d temp_files=%d audit_repaired=%s",
            recovery.audit_events,
            len(recovery.finished),
            len(recovery.abandoned),
            len(recovery.withdrawn),
            recovery.temp_files,
            recovery.audit_repaired,
        )


# ----------------------------------------------------------------------------------------- entry points


@contextmanager
def exclusive(path: Path) -> Iterator[int]:
    """Hold the root's run lock: one daemon (or `run --once`) per root; raise GatewayError if taken.

    Yields the lock's descriptor: the daemon's workers inherit it, so the lock is held while any of
    them lives, and no new daemon can run beside an orphaned worker. A lock whose daemon is gone is
    waited for a moment (its workers are being killed with it).
    """
    state = path / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(state / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + ORPHAN_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                if _alive(holder) or time.monotonic() > deadline:
                    raise GatewayError(_held(path, holder)) from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield fd
    finally:
        os.close(fd)


def _alive(pid: str) -> bool:
    """Whether process `pid` (as the lock file says it) exists; True when that cannot be told."""
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _held(path: Path, holder: str) -> str:
    if _alive(holder):
        return (
            f"another `iom-gateway run` is already working on {str(path)!r} (pid {holder}): "
            "stop it first, or let it do the work"
        )
    return (
        f"the run lock of {str(path)!r} is still held, though its daemon (pid {holder}) is gone: one of its "
        f"workers lives on; find it with `fuser -v {str(path / 'state' / LOCK_FILE)!r}`, stop it, then start again"
    )


def arm_faults(root: Root) -> None:
    """Arm the crash tests' fault injection if its variable is set: loudly, and on the audit log."""
    spec = unsafe_fault_injection()
    if spec is None:
        return
    counts = root.path / "state" / FAULT_COUNTS
    counts.unlink(missing_ok=True)  # each armed run counts afresh
    os.environ[faults.COUNTS_ENV] = str(counts)  # the workers count in the same file
    faults.arm(spec, counts=str(counts))
    log.warning("unsafe fault injection armed spec=%r: a test setting, never for real data", spec)
    root.audit.append("unsafe.fault_injection", actor="admin", spec=spec)


def serve(path: Path) -> int:
    """Run the daemon on the root at `path` until SIGTERM/SIGINT (it checkpoints the audit log as it stops)."""
    refuse_open_state(path)  # keys/ or state/ open beyond the gateway user: name the fix, start nothing
    root = Root.open(path)
    with node(root) as lock:
        arm_faults(root)
        return Daemon(path, root, lock_fd=lock).run()


@contextmanager
def node(root: Root) -> Iterator[int | None]:
    """What lets this process work on the root: on SQLite, the run lock (`exclusive`: one daemon or `run --once`
    per root); on the PostgreSQL journal nothing, as any number of nodes share the root and the journal's
    claims keep each submission in one process's hands (state.journal.Lease). Yields the lock's descriptor."""
    if root.config.journal.url is not None:
        yield None
        return
    with exclusive(root.path) as fd:
        yield fd


def _send_mail_once(root: Root) -> None:
    """`run --once` has no relay process: what is queued is sent before it exits (what fails waits for the next)."""
    relay = root.config.smtp_relay
    if relay is None:
        return
    try:
        sender = Relay(root, relay)
        sender.check_health(time.monotonic())
        sender.send_due()
    except GatewayError as exc:
        log.error("relay cannot send: %s", exc.message.replace("\n", " "))


def take_request_drops(root: Root, agency: Agency, folder: Folder, now: datetime) -> list[Outcome]:
    """The information requests dropped into the agency's requests/ folder, registered or refused (each one
    an outcome for itself); what waits for its signature is left for the next pass."""
    try:
        dropped = take_requests(root, agency, folder, now, root.config.submissions.pairing_timeout_seconds)
    except GatewayError as exc:  # the gateway's own state (no key to quarantine with, a full disk): tried again
        log.error("requests of agency=%s not taken: %s", agency.id, exc.message)
        return []
    outcomes: list[Outcome] = []
    for item in dropped:
        if item.record is not None:
            record = item.record
            outcomes.append(Requested(agency.id, item.name, record.id, record.to_agency, record.due))
        elif item.reason is not None:
            outcomes.append(Rejected(agency.id, item.name, "request", (item.reason,), item.report))
    return outcomes


def run_once(path: Path) -> list[Outcome]:
    """Recover, then process what is in every outbox now, and return the outcomes; the audit log ends
    with a signed checkpoint (if the gateway key cannot sign, that is logged: `audit verify` says so)."""
    root = Root.open(path)
    with node(root):
        try:
            arm_faults(root)
            root.journal.claiming = root.journal.leases  # beside other nodes, it claims as they do
            _log_recovery(recover(root))
            run_id = root.journal.run_started("once", os.getpid())
            outcomes = process_once(root, now_utc())
            for agency in root.config.agencies.values():
                with contextlib.suppress(UsageError, InputFileError), open_outbox(root.path, agency.id) as folder:
                    outcomes += take_request_drops(root, agency, folder, now_utc())
            flush_audit(root)
            _send_mail_once(root)
            refused = sum(isinstance(o, Rejected | Deferred) for o in outcomes)
            root.journal.run_heartbeat(run_id, processed=len(outcomes), errors=refused, finished=True)
            return outcomes
        finally:
            root.close(checkpoint=True)
