"""Where one submission's time goes: a stopwatch with a lap per stage, for one log line.

Only durations are kept, never anything about the file's content. The stopwatch running for the
submission in hand is found through a context variable, so a stage marks its lap with `lap("seal")`
and needs no extra argument; where none runs (a test calling a stage directly, a helper thread),
`lap` does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

# settle: from the first sighting of the pair to its take (the daemon's wait); verify: open, lease,
# hash, the signature and who made it; validate: the marking, the period, Table 1; seal: every
# recipient's package written into its inbox; deliver: the journal's commit, the audit log, the outbox
# cleared. `refuse` is the time spent writing a refusal (report, quarantine) instead.
STAGES = ("settle", "verify", "validate", "seal", "deliver")


@dataclass(slots=True)
class Stopwatch:
    """Laps in seconds by stage; each lap is the time since the one before (or since the start)."""

    last: float
    laps: dict[str, float] = field(default_factory=dict)

    def lap(self, stage: str, now: float | None = None) -> None:
        """Charge the time since the last lap to `stage` (laps of one stage add up)."""
        now = time.monotonic() if now is None else now
        self.laps[stage] = self.laps.get(stage, 0.0) + max(0.0, now - self.last)
        self.last = now

    def line(self) -> str:
        """`settle_ms=.. verify_ms=.. ... deliver_ms=..` (then any other stage, e.g. `refuse_ms`)."""
        stages = [*STAGES, *sorted(set(self.laps) - set(STAGES))]
        return " ".join(f"{stage}_ms={self.laps.get(stage, 0.0) * 1000:.0f}" for stage in stages)


_running: ContextVar[Stopwatch | None] = ContextVar("stopwatch", default=None)


@contextmanager
def stopwatch(seen: float | None = None) -> Iterator[Stopwatch]:
    """Time one submission from now; `seen` (a `time.monotonic()` value, the same clock in every
    process of the machine) is when it was first seen, and the wait since is its settle lap."""
    now = time.monotonic()
    watch = Stopwatch(now, {"settle": max(0.0, now - seen) if seen is not None else 0.0})
    token = _running.set(watch)
    try:
        yield watch
    finally:
        _running.reset(token)


def lap(stage: str) -> None:
    """Charge the time since the last lap of the running stopwatch to `stage`; nothing if none runs."""
    watch = _running.get()
    if watch is not None:
        watch.lap(stage)


def laps() -> str:
    """The running stopwatch's `Stopwatch.line()`, or "" if none runs."""
    watch = _running.get()
    return watch.line() if watch is not None else ""
