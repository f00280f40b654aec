"""Fault injection for the crash tests: inert unless armed.

The CLI arms it from IOM_GATEWAY_UNSAFE_FAULT (read by config, audited and logged as unsafe). A
spec is a comma-separated list of `point[@n][:action]`: on the n-th time (default 1st) the code
reaches `point`, do `action`: `kill` (default) sends this process SIGKILL, as a power cut would;
`enospc` raises OSError(ENOSPC), as a full disk would; `stop` sends it SIGSTOP, as a node paused
(or cut off) there would be, until someone sends SIGCONT. Unknown points are simply never reached.
A fault fires in whichever process reaches its point; in a daemon's worker, `kill` takes the daemon
down first (its other workers follow it), so a crash test still means "the gateway was killed at X".
The daemon and its workers count the times a point is reached together (in the file COUNTS_ENV
names), so `@n` means the n-th time the gateway reached it, whichever process did.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import signal
from dataclasses import dataclass

_SPEC = re.compile(r"([a-z][a-z0-9_.-]*)(?:@([1-9][0-9]*))?(?::(kill|enospc|stop))?")


@dataclass(slots=True)
class _Fault:
    at: int
    action: str
    hits: int = 0


_armed: dict[str, _Fault] = {}
_also_kill: list[int] = []  # a worker's daemon: killed with it
_counts: list[str] = []  # the file the daemon and its workers count hits in
COUNTS_ENV = "IOM_GATEWAY_UNSAFE_FAULT_COUNTS"


def parse(spec: str) -> dict[str, tuple[int, str]]:
    """Read a spec into {point: (n, action)}; raise ValueError naming the malformed part."""
    faults: dict[str, tuple[int, str]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        match = _SPEC.fullmatch(part)
        if match is None:
            raise ValueError(f"fault {part!r} is not point[@n][:kill|enospc|stop]")
        faults[match[1]] = (int(match[2] or 1), match[3] or "kill")
    return faults


def arm(spec: str, *, also_kill: int | None = None, counts: str | None = None) -> None:
    """Arm the faults in `spec` for this process (a `kill` also kills process `also_kill`, if given;
    hits are counted in the file `counts`, shared with other processes, if given); raise ValueError
    if it is malformed."""
    _also_kill[:] = [] if also_kill is None else [also_kill]
    _counts[:] = [] if counts is None else [counts]
    _armed.clear()
    _armed.update({point: _Fault(at, action) for point, (at, action) in parse(spec).items()})


def disarm() -> None:
    _armed.clear()


def armed() -> bool:
    return bool(_armed)


def reached(point: str) -> None:
    """Mark that execution reached `point`; act if a fault is armed there (no-op otherwise)."""
    fault = _armed.get(point)
    if fault is None:
        return
    fault.hits = _shared_hit(_counts[0], point) if _counts else fault.hits + 1
    if fault.hits != fault.at:
        return
    if fault.action == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device (injected at {point})")
    if fault.action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    for pid in _also_kill:
        os.kill(pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _shared_hit(path: str, point: str) -> int:
    """Count one more hit of `point` in the shared counts file; return the count."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        text = os.pread(fd, 1 << 16, 0)
        counts: dict[str, int] = json.loads(text) if text else {}
        counts[point] = counts.get(point, 0) + 1
        data = json.dumps(counts).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        return counts[point]
    finally:
        os.close(fd)
