"""One of the daemon's worker processes: `python -m gateway.daemon.worker --root DIR --parent PID`.

The daemon (daemon/pool.py) starts N of these. Each opens the root itself and reads tasks, one JSON
object per line on stdin ({"agency", "csv", "signature", "age"}: a ready pair of one outbox); it takes
each through `process_pair` and answers one JSON line ({"agency", "csv", "kind", "summary", "soon"}).
No pickle: names are JSON strings (a name that is not UTF-8 travels as its surrogate escapes).

It lives only as long as the daemon: the kernel kills it when the daemon dies (PR_SET_PDEATHSIG),
it ends at EOF on stdin (the daemon stopping, or reloading), and it ignores SIGTERM, SIGINT and
SIGHUP, which are the daemon's to act on (a Ctrl-C reaches the whole process group: the worker
finishes the file in hand, then sees EOF). It inherits the daemon's run lock, so while it lives no
other daemon can start on the root.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from gateway.adapters.config import unsafe_fault_injection
from gateway.core import faults
from gateway.core.errors import GatewayError, JournalUnavailable
from gateway.exchange.intake import Pair, open_outbox
from gateway.exchange.outcome import Deferred, Outcome, Waiting
from gateway.exchange.process import now_utc, process_pair
from gateway.state.root import Root

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1
READY = "ready"


def die_with_parent(parent: int) -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies; False if the parent is gone already."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    return os.getppid() == parent  # the daemon may have died before the prctl: then nobody would kill us


class _UtcFormatter(logging.Formatter):
    converter = time.gmtime  # type: ignore[assignment]  # typeshed's signature is narrower than the runtime's


def child_logging() -> None:
    """The daemon's key=value lines on the daemon's stderr (journald), with this worker's pid."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _UtcFormatter(
            "time=%(asctime)s level=%(levelname)s logger=%(name)s worker=%(process)d event=%(message)s",
            "%Y-%m-%dT%H:%M:%SZ",
        )
    )
    logger = logging.getLogger()
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logging.getLogger("gnupg").setLevel(logging.ERROR)


def take(root: Root, task: dict[str, Any]) -> dict[str, Any]:
    """Process one ready pair as the daemon itself would; return the answer line's fields."""
    answer: dict[str, Any] = {"agency": task["agency"], "csv": task["csv"], "kind": "none", "summary": ""}
    answer["soon"] = False
    agency = root.config.agencies.get(str(task["agency"]))
    if agency is None:
        return answer
    try:
        folder = open_outbox(root.path, agency.id)
    except GatewayError:  # gone or refused since the daemon looked: its next scan says so
        return answer
    pair = Pair(str(task["csv"]), None if task["signature"] is None else str(task["signature"]), float(task["age"]))
    seen = task.get("seen")
    try:
        with folder:
            outcome: Outcome | None = process_pair(
                root,
                agency,
                folder,
                pair,
                now_utc(),
                early=task.get("early") is True,
                seen=None if seen is None else float(seen),
            )
        root.journal.unclaim()  # a copy of the same bytes under another name may go on in another worker
    except JournalUnavailable as exc:  # its server went away: the file stays for the next try, and the daemon asks
        log.error("deferred agency=%s file=%r reason=%r", agency.id, pair.csv, exc.message)
        outcome = Deferred(agency.id, pair.csv, exc.message)
    if outcome is not None:
        soon = isinstance(outcome, Waiting) and outcome.soon
        answer |= {"kind": type(outcome).__name__, "summary": outcome.summary, "soon": soon}
    return answer


def arm_child_faults() -> None:
    """In a child of the daemon, arm the crash tests' faults if set: a `kill` takes the daemon down too.

    The daemon audited and logged them; hits are counted with the daemon's, in its file."""
    spec = unsafe_fault_injection()
    if spec is not None:
        faults.arm(spec, also_kill=os.getppid(), counts=os.environ.get(faults.COUNTS_ENV))


def child_of_daemon(prog: str, description: str, argv: list[str] | None) -> Path | None:
    """Parse a daemon child's `--root DIR --parent PID` and tie this process's life to the parent's;
    return the root, or None if the daemon is gone already (the child should exit)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--root", required=True, help="the gateway root the daemon serves")
    parser.add_argument("--parent", required=True, type=int, help="the daemon's pid: this process dies with it")
    args = parser.parse_args(argv)
    return Path(args.root) if die_with_parent(args.parent) else None


def main(argv: list[str] | None = None) -> int:
    """Serve the daemon's tasks until EOF on stdin; return the exit status."""
    path = child_of_daemon("gateway.daemon.worker", "A worker of `iom-gateway run`.", argv)
    if path is None:
        return 1
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    # answers go out on a private copy of stdout; anything else written to fd 1 lands in the log
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    child_logging()
    try:
        root = Root.open(path)
    except GatewayError as exc:
        log.error("worker cannot open the root: %s", exc.message.replace("\n", " "))
        return 1
    root.claiming = True  # another worker may hold a copy of the same bytes (the journal opens at the first task)
    arm_child_faults()
    answers.write(json.dumps({READY: os.getpid()}).encode() + b"\n")
    answers.flush()
    for line in sys.stdin.buffer:
        answer = take(root, json.loads(line))
        answers.write(json.dumps(answer).encode() + b"\n")
        answers.flush()
    root.journal.unclaim()
    if "db" in root.__dict__:  # not root.close(): the daemon checkpoints the audit log as it stops
        root.db.close()
    if "gateway.adapters.gpg" in sys.modules:
        from gateway.adapters.gpg import stop_agents  # noqa: PLC0415 (loaded only if a gpg ran)

        stop_agents()  # an agent this worker's gpg started (before the daemon's did) ends with it
    return 0


if __name__ == "__main__":
    sys.exit(main())
