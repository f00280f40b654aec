"""The audit log: append-only JSON lines, each carrying the SHA-256 of the line before it.

Entries hold who, what, when and hashes: never a row's values, never a secret.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.fsio import fsync_dir

AUDIT_FILE = "audit.jsonl"
GENESIS = "0" * 64


def canonical(entry: Mapping[str, Any]) -> bytes:
    """The one byte form an entry is hashed and stored in."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class AuditLog:
    """Appends events to `state/audit.jsonl` durably, chaining each to the last."""

    def __init__(self, root: Path) -> None:
        self.path = root / "state" / AUDIT_FILE

    def append(self, event: str, *, actor: str, agency: str | None = None, **details: Any) -> dict[str, Any]:
        """Record one event and return it; the line is fsynced before this returns."""
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # read the tail and append as one step across processes
            sequence, previous = self._tail()
            entry = {
                "seq": sequence + 1,
                "time": datetime.now(UTC).isoformat(timespec="seconds"),
                "event": event,
                "actor": actor,
                "agency": agency,
                **details,
                "prev": previous,
            }
            os.write(fd, canonical(entry) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if sequence == 0:
            fsync_dir(self.path.parent)
        return entry

    def _tail(self) -> tuple[int, str]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return 0, GENESIS
        with self.path.open("rb") as handle:
            handle.seek(max(0, self.path.stat().st_size - 65536))
            last = handle.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
        return int(json.loads(last)["seq"]), hashlib.sha256(last).hexdigest()
