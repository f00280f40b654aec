"""The daemon's bounded pool of worker processes (`[daemon] workers`): bursts use every core.

Validation and sealing are CPU-bound Python, so the workers are processes, not threads; they speak
JSON lines over pipes (daemon/worker.py), never pickle. The daemon keeps watching, scanning and
everything that must happen once (receipts, recovery, checkpoints) to itself and hands each ready
pair to an idle worker. What keeps delivery exactly-once:

- the pool never has the same (agency, file name) in flight twice;
- two names with the same bytes are one submission: the journal's claim (`Journal.claim`) makes a
  second worker wait for the first, and then it finds the submission done (a duplicate);
- the journal is SQLite in WAL with a busy timeout, every read-then-write a BEGIN IMMEDIATE
  transaction; staged audit events are appended under one lock (`flush_audit`).

A worker that dies (killed, or a crash in gpg's wake) is an outcome for its file alone: it is
logged, the pool drains (the other workers finish the files in hand), the daemon runs recovery as
at a restart (it removes what the dead worker left half-made), starts a new worker and tries the
file again; the journal's attempt count quarantines a file that keeps killing workers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from gateway.daemon.worker import READY

log = logging.getLogger(__name__)
STOP_WAIT_SECONDS = 600.0  # a file in hand is finished however long it takes; this is the bound


@dataclass(frozen=True, slots=True)
class Task:
    """A ready pair of one outbox, as the daemon's scan found it."""

    agency: str
    csv: str
    signature: str | None
    age_seconds: float
    early: bool = False  # both files closed since their last write: the signature may prove the rest
    seen: float | None = None  # when the daemon first saw the pair (time.monotonic: one clock per host)

    @property
    def key(self) -> tuple[str, str]:
        return self.agency, self.csv


@dataclass(frozen=True, slots=True)
class Result:
    """What became of a task: the outcome's class name ("none": it vanished), or `died` for a worker that died."""

    task: Task
    kind: str
    summary: str = ""
    soon: bool = False
    died: str | None = None


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    task: Task | None = None
    ready: bool = False
    retiring: bool = False  # a reload: it finishes its file, then its stdin closes

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Pool:
    """Up to `size` worker processes for the root at `path`; `wake` is called (from a reader thread)
    whenever a worker answers or dies. All other methods belong to the daemon's main thread."""

    path: Path
    size: int
    wake: Callable[[], None]
    lock_fd: int | None = None  # the run lock, inherited: no daemon starts while a worker lives
    _workers: dict[int, _Worker] = field(default_factory=dict)
    _events: queue.Queue[tuple[int, bytes | None]] = field(default_factory=queue.Queue)
    failed_starts: int = 0  # workers in a row that died before they were ready

    # ----------------------------------------------------------------------------------- dispatch

    def busy(self, key: tuple[str, str]) -> bool:
        """Whether the file (agency, name) is in a worker's hands now."""
        return any(w.task is not None and w.task.key == key for w in self._workers.values())

    @property
    def in_flight(self) -> int:
        return sum(w.task is not None for w in self._workers.values())

    @property
    def alive(self) -> int:
        return len(self._workers)

    def idle(self) -> _Worker | None:
        """A worker free for a task (starting one if fewer than `size` serve), or None if all are busy."""
        serving = [w for w in self._workers.values() if not w.retiring]
        free = next((w for w in serving if w.task is None), None)
        if free is None and len(serving) < self.size:
            free = self._start()
        return free

    def submit(self, task: Task) -> bool:
        """Hand `task` to an idle worker; False if none is free (or the file is in flight already)."""
        if self.busy(task.key):
            return False
        worker = self.idle()
        if worker is None:
            return False
        line = {
            "agency": task.agency,
            "csv": task.csv,
            "signature": task.signature,
            "age": task.age_seconds,
            "early": task.early,
            "seen": task.seen,
        }
        try:
            assert worker.process.stdin is not None  # noqa: S101 (a pipe: started so)
            worker.process.stdin.write(json.dumps(line).encode() + b"\n")
            worker.process.stdin.flush()
        except OSError:  # it died meanwhile: its reader reports it; the file waits for the next pass
            return False
        worker.task = task
        return True

    def start(self) -> None:
        """Start workers up to `size` now (rather than at the first file): a burst finds them warm."""
        while sum(not w.retiring for w in self._workers.values()) < self.size:
            self._start()

    def _start(self) -> _Worker:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.daemon.worker", "--root", str(self.path), "--parent", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=() if self.lock_fd is None else (self.lock_fd,),
        )
        worker = _Worker(process)
        self._workers[process.pid] = worker
        assert process.stdout is not None  # noqa: S101
        reader = threading.Thread(target=self._read, args=(process.pid, process.stdout), daemon=True)
        reader.start()
        log.info("started worker pid=%d", process.pid)
        return worker

    def _read(self, pid: int, stream: IO[bytes]) -> None:
        for line in stream:
            self._events.put((pid, line))
            self.wake()
        self._events.put((pid, None))
        self.wake()

    # ----------------------------------------------------------------------------------- results

    def results(self, timeout: float | None = None) -> list[Result]:
        """What the workers finished since the last call (waiting up to `timeout` for the first, if given)."""
        results: list[Result] = []
        try:
            event = self._events.get(timeout=timeout) if timeout is not None else self._events.get_nowait()
            while True:
                result = self._handle(*event)
                if result is not None:
                    results.append(result)
                event = self._events.get_nowait()
        except queue.Empty:
            return results

    def _handle(self, pid: int, line: bytes | None) -> Result | None:
        worker = self._workers.get(pid)
        if worker is None:
            return None
        if line is None:
            return self._ended(worker)
        message = json.loads(line)
        if READY in message:
            worker.ready = True
            self.failed_starts = 0
            return None
        task, worker.task = worker.task, None
        if worker.retiring:
            self._close(worker)
        if task is None:
            return None
        return Result(task, str(message["kind"]), str(message["summary"]), bool(message["soon"]))

    def _ended(self, worker: _Worker) -> Result | None:
        code = worker.process.wait()
        del self._workers[worker.pid]
        if not worker.ready:
            self.failed_starts += 1
        if worker.task is None:
            if not worker.retiring:
                log.error("worker pid=%d exited status=%s before it was asked to", worker.pid, _status(code))
            return None
        how = _status(code)
        log.error(
            "worker pid=%d died status=%s agency=%s file=%r: that file alone is tried again (a file that keeps "
            "stopping the gateway is quarantined)",
            worker.pid,
            how,
            worker.task.agency,
            worker.task.csv,
        )
        return Result(worker.task, "died", died=how)

    # ----------------------------------------------------------------------------------- lifetime

    def retire(self) -> None:
        """A reload: every worker finishes its file and exits; new ones (reading the new gateway.toml) take over."""
        for worker in list(self._workers.values()):
            worker.retiring = True
            if worker.task is None:
                self._close(worker)

    def close(self, report: Callable[[Result], None]) -> None:
        """Stop: let every worker finish the file in hand (each result goes to `report`), then exit."""
        self.retire()
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while self._workers:
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("workers=%d still busy after %ss: stopping anyway", len(self._workers), STOP_WAIT_SECONDS)
                return
            for result in self.results(timeout=left):
                report(result)

    def _close(self, worker: _Worker) -> None:
        stdin = worker.process.stdin
        if stdin is not None and not stdin.closed:
            with contextlib.suppress(OSError):  # a worker that died already: nothing to tell it
                stdin.close()


def _status(code: int) -> str:
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return str(code)
