"""The audit log: canonical JSON lines, each carrying the SHA-256 of the line before it.

Entries hold who, what, when and hashes: never a row's values, never a secret (callers guarantee it).
Everything lives in `state/`: `audit.jsonl` (the log), `audit.head` (seq and hash of the last entry,
kept outside the log), `audit.anchor` (the signed hash of the last entry a purge removed) and
`audit.lock` (the flock every writer takes; a separate file, so a purge may replace the log).

Threat-model limits: the chain and the head catch any edit, deletion, insertion or reordering made
without recomputing them. Someone who can write `state/` can recompute both; what they cannot make
without the gateway key is the signed `audit.genesis` (entry 1), the `audit.checkpoint` entries and the
purge anchor, and what they cannot reach is the witness each manifest carries (the log's seq and head
when it was sealed, signed with the manifest and held by the recipient). Checkpoints are mandatory:
with `Bounds`, the log signs one before the entries after the last would exceed them, and `verify`
fails when they do. What remains open: the entries after the newest checkpoint (within the bounds)
can be dropped or rewritten unless a manifest witnesses them.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import itertools
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.adapters.fsio import atomic_write_bytes, fsync_dir
from gateway.core import faults
from gateway.core.errors import GatewayError

AUDIT_FILE = "audit.jsonl"
HEAD_FILE = "audit.head"
ANCHOR_FILE = "audit.anchor"
LOCK_FILE = "audit.lock"
GENESIS = "0" * 64
CHECKPOINT = "audit.checkpoint"
GENESIS_EVENT = "audit.genesis"
SIGNED_POINTS = frozenset({CHECKPOINT, GENESIS_EVENT})
DELIVERED = "package.delivered"
DELIVERY_EVENTS = frozenset({DELIVERED, "submission.delivered"})
RESERVED = frozenset({"seq", "time", "event", "actor", "agency", "ref", "prev"})

Staged = tuple[str, str, str | None, str | None, Mapping[str, Any]]
"""One event for `append_all`: (event, actor, agency, ref, details)."""
Sign = Callable[[bytes], bytes]
"""Make a signature of the bytes with the gateway key."""
Check = Callable[[bytes, bytes], str | None]
"""Return the signer's fingerprint if the signature over the bytes is good and by a gateway key, else None."""

logger = logging.getLogger(__name__)
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REQUIRED = (("seq", int), ("time", str), ("event", str), ("actor", str), ("prev", str))
_VERIFY = "run `iom-gateway audit verify`"
_RESTORE = "restore state/ from a backup and find out who could write to it"


def canonical(entry: Mapping[str, Any]) -> bytes:
    """The one byte form an entry is hashed and stored in; raise TypeError/ValueError if it is not JSON."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def line_hash(line: bytes) -> str:
    """The SHA-256 (hex) of one log line without its newline: what the next entry's `prev` holds."""
    return hashlib.sha256(line).hexdigest()


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of `AuditLog.verify`: `ok`, or the first `problem` and the `step` that found it."""

    ok: bool
    entries: int
    checkpoints: int
    last_seq: int | None
    problem: str | None = None
    step: int | None = None
    witnesses: int = 0  # manifests checked against the log (step 9)


@dataclass(frozen=True, slots=True)
class Bounds:
    """How far the log may run past its newest signed checkpoint: `entries` at most, spanning `minutes`."""

    entries: int
    minutes: int


@dataclass(frozen=True, slots=True)
class Signer:
    """The gateway key as the log needs it: `sign` makes a signature, `key` names the key."""

    sign: Sign
    key: str


@dataclass(frozen=True, slots=True)
class Witness:
    """What one manifest, its gateway signature already checked, says about the log: when package
    `package` for `recipient` was sealed, the log ended at entry `seq` (0: it was empty) with hash `head`."""

    file: str
    package: str
    recipient: str
    seq: int
    head: str


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    raw: bytes
    entry: dict[str, Any]

    @property
    def seq(self) -> int:
        return int(self.entry["seq"])

    @property
    def hash(self) -> str:
        return line_hash(self.raw)

    @property
    def where(self) -> str:
        return f"entry {self.seq} (line {self.number})"


@dataclass(frozen=True, slots=True)
class _Anchor:
    seq: int
    hash: str
    key: str
    signature: str


class _Broken(Exception):
    """One failed verification step (internal: `verify` turns it into a Verdict)."""

    def __init__(self, step: int, problem: str) -> None:
        super().__init__(problem)
        self.step = step
        self.problem = problem


class AuditLog:
    """The tamper-evident audit log of one gateway root (`<root>/state/`)."""

    def __init__(
        self, root: Path, *, bounds: Bounds | None = None, signer: Callable[[], Signer | None] | None = None
    ) -> None:
        """`bounds` makes checkpoints mandatory: before an entry would take the entries after the newest
        checkpoint past them, the log signs one with what `signer` returns (None: no gateway key yet)."""
        self.folder = root / "state"
        self.path = self.folder / AUDIT_FILE
        self.head_path = self.folder / HEAD_FILE
        self.anchor_path = self.folder / ANCHOR_FILE
        self.lock_path = self.folder / LOCK_FILE
        self.bounds = bounds
        self.signer = signer
        self.appended = False  # this object appended entries that no checkpoint covers yet
        self._batch: list[tuple[int, str]] | None = None  # (seq, hash) written by `append_all`, not yet synced
        # the unsigned tail as last read: (seq, hash) of the newest line then, and the tail; the next
        # read parses only the lines written since (by this process or another)
        self._tail_memo: tuple[int, str, list[_Line]] | None = None

    # --- writing ---------------------------------------------------------------------------------

    def append(
        self, event: str, *, actor: str, agency: str | None = None, ref: str | None = None, **details: Any
    ) -> dict[str, Any]:
        """Record one event and return its entry; the line is fsynced and the head updated before this returns.

        `ref` (kept only when given) lets a caller find the entry again to make a retried step idempotent.
        A torn last line left by a killed writer is cut off first and recorded as `audit.repaired`.
        Raises ValueError if a detail uses a reserved key, TypeError/ValueError if one is not JSON;
        GatewayError if the log's last line is damaged.
        """
        _check_details(details)
        with self._writing():
            return self._append_locked(event, actor, agency, ref, details)

    def append_all(self, events: Sequence[Staged]) -> list[dict[str, Any]]:
        """Record several events in order, as `append` would each, with one fsync and one head update.

        One submission's events (a package.delivered per recipient, then submission.delivered) are
        one durable point rather than one each: nothing between them needs the earlier ones on disk,
        and a crash in between leaves them staged in the journal, which appends them again (the
        lines that did reach the log are recognised by their `ref`). Raises as `append` does.
        """
        for _, _, _, _, details in events:
            _check_details(details)
        if not events:
            return []
        with self._writing():
            written: list[tuple[int, str]] = []
            self._batch = written
            created = not self.path.exists()
            try:
                entries = [self._append_locked(e, actor, agency, ref, d) for e, actor, agency, ref, d in events]
            finally:
                self._batch = None
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                fsync_dir(self.folder)
            for _ in written:
                faults.reached("audit.append.written")
            self._write_head(*written[-1])
        return entries

    def checkpoint(self, sign: Sign, key: str) -> dict[str, Any] | None:
        """Append a signed `audit.checkpoint` covering the last entry, unless that entry is one; return it or None.

        The signature is over canonical({"covers_hash", "covers_seq"}); `key` names the signer.
        Raises whatever `sign` raises (CryptoError for an unusable gateway key); GatewayError for a damaged log.
        """
        with self._writing():
            return self._checkpoint_locked(sign, key)

    def genesis(self, sign: Sign, key: str) -> dict[str, Any] | None:
        """Begin an empty log with a signed `audit.genesis` entry; None (nothing written) once it has begun.

        The signature is over canonical({"event", "seq": 1, "time"}): whoever deletes or rebuilds the log
        cannot make another without the gateway key. Raises whatever `sign` raises.
        """
        with self._writing():
            if self._last_line() is not None or self.anchor_path.exists():
                return None
            now = _now()
            signature = base64.b64encode(sign(_genesis_signed(now))).decode("ascii")
            return self._write_entry(GENESIS_EVENT, "gateway", None, None, {"key": key, "signature": signature}, now)

    def witness(self) -> dict[str, Any]:
        """The seq and hash of the last entry now, as a manifest carries them: {"seq", "head"}.

        {"seq": 0, "head": GENESIS} for an empty log. Raises GatewayError for a damaged log.
        """
        with self._writing():
            seq, digest = self._tail()
        return {"seq": seq, "head": digest}

    def purge_before(self, cutoff: datetime, sign: Sign, key: str) -> int:
        """Remove the leading entries older than `cutoff` (never the last one); return how many went.

        The signed anchor (seq and hash of the last removed entry) is written first, then the shortened
        log replaces the old one, then `audit.purged` is appended. Raises ValueError for a naive
        `cutoff`; whatever `sign` raises; GatewayError for a damaged log.
        """
        _require_aware(cutoff)
        with self._writing():
            lines = self._read_lines()
            count = _expired(lines, cutoff)
            if count == 0:
                return 0
            through = lines[count - 1]
            anchored = {"hash": through.hash, "seq": through.seq}
            signature = base64.b64encode(sign(canonical(anchored))).decode("ascii")
            record = {**anchored, "time": _now(), "key": key, "signature": signature}
            atomic_write_bytes(self.anchor_path, canonical(record) + b"\n")
            faults.reached("audit.purge.anchored")
            atomic_write_bytes(self.path, b"".join(line.raw + b"\n" for line in lines[count:]))
            details = {"removed": count, "through_seq": through.seq}
            self._append_locked("audit.purged", "gateway", None, None, details)
        return count

    def repair(self) -> bool:
        """Undo what a crash can leave behind; return whether anything changed. Run at start-up only.

        Cuts off a torn last line (recorded as `audit.repaired`), finishes a purge interrupted after its
        anchor was written, and rewrites a head that is missing or names an earlier entry of this log.
        A head that contradicts the log is left for `verify` to report. Raises GatewayError for a
        damaged log.
        """
        if not self.path.exists():
            return False
        with self._locked():
            repaired = self._repair_tail()
            finished = self._finish_purge()
            return self._repair_head() or repaired or finished

    # --- reading ---------------------------------------------------------------------------------

    def entries(self) -> Iterator[dict[str, Any]]:
        """Yield the entries in order. A torn last line (a write cut short) is not an entry and is skipped.

        Raises GatewayError naming the line if a line is not a JSON object.
        """
        with self._locked(shared=True):
            try:
                handle = self.path.open("rb")
            except FileNotFoundError:
                return
            size = os.fstat(handle.fileno()).st_size
        with handle:
            read = 0
            for number, raw in enumerate(handle, start=1):
                read += len(raw)
                if read > size or not raw.endswith(b"\n"):
                    return
                yield _parse(raw[:-1], number).entry

    def find_ref(self, ref: str) -> dict[str, Any] | None:
        """Return the entry recorded with `ref`, or None. Raises GatewayError for a damaged log."""
        return next((entry for entry in self.entries() if entry.get("ref") == ref), None)

    def select(self, since: datetime | None = None, event: str | None = None) -> list[dict[str, Any]]:
        """Return the entries at or after `since` whose event is `event` or under it (`submission` → `submission.x`).

        Raises ValueError for a naive `since`; GatewayError for a damaged log.
        """
        if since is not None:
            _require_aware(since)
        return [
            entry
            for entry in self.entries()
            if (since is None or _entry_time(entry) >= since)
            and (event is None or entry.get("event") == event or str(entry.get("event")).startswith(event + "."))
        ]

    def expired(self, cutoff: datetime) -> int:
        """Count the entries `purge_before(cutoff, …)` would remove, changing nothing.

        Raises ValueError for a naive `cutoff`; GatewayError for a damaged log.
        """
        _require_aware(cutoff)
        with self._locked(shared=True):
            return _expired(self._read_lines(), cutoff)

    def verify(self, check: Check, *, witnesses: Sequence[Witness] = (), delivered: str | None = None) -> Verdict:
        """Check the log, stopping at the first failed step; never raises for a damaged or tampered log.

        `witnesses` are manifests whose gateway signature the caller checked; `delivered` says where,
        outside the log, a delivery is recorded (e.g. "the journal (3 deliveries)"), if anywhere.

        1. Every line is a JSON object in canonical form with seq, time, event, actor and prev, and the
           file ends with a newline (no torn or truncated last line).
        2. seq numbers run consecutively from 1, or from the anchor's seq + 1 after a purge (lines up to
           the anchor are allowed only as the leftovers of a purge interrupted by a crash).
        3. Every prev is the SHA-256 of the line before (the first: GENESIS, or the anchor's hash), and
           after an interrupted purge the anchor's entry hashes to the anchor's hash.
        4. Every checkpoint's signature verifies through `check`, by the key it names, and its
           covers_hash is the hash of entry covers_seq when that entry is still in the log.
        5. audit.head names the last entry's seq and hash (catches lines removed or added at the end);
           a missing head with a non-empty log fails, as does an empty log a head or anchor speaks of.
        6. If audit.anchor exists, its signature verifies through `check` by the key it names. (An
           anchor that cannot even be read fails this step at once: steps 2 and 3 need it.)
        7. An audit.genesis is entry 1 and its signature verifies through `check`; and the log begins
           with one (or after a signed anchor) if anything says the gateway delivered: a witness,
           `delivered`, or the log's own package.delivered or submission.delivered entries.
        8. With bounds: the entries after the newest checkpoint or genesis (all of them if there is
           none) are at most bounds.entries, and the first to the last span at most bounds.minutes.
        9. Every witness agrees with the log, earliest seq first: its entry is there with its hash
           (unless a purge removed it behind the anchor), and a package.delivered of that package to
           that recipient follows it.
        """
        with self._locked(shared=True):
            log = _read_optional(self.path) or b""
            head = _read_optional(self.head_path)
            anchor = _read_optional(self.anchor_path)
        evidence = _Evidence(self.bounds, tuple(witnesses), delivered)
        return _verify(log, head, anchor, check, evidence)

    # --- internals (callers hold the lock) -------------------------------------------------------

    @contextmanager
    def _locked(self, *, shared: bool = False) -> Iterator[None]:
        """Hold audit.lock; a shared hold on a root without state/ creates nothing and locks nothing."""
        if shared and not self.folder.exists():
            yield
            return
        if not self.folder.exists():
            self.folder.mkdir(mode=0o700, exist_ok=True)
            fsync_dir(self.folder.parent)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the lock exclusively with any torn tail already repaired."""
        with self._locked():
            self._repair_tail()
            yield

    def _append_locked(
        self, event: str, actor: str, agency: str | None, ref: str | None, details: Mapping[str, Any]
    ) -> dict[str, Any]:
        now = _now()
        if event not in SIGNED_POINTS:
            self._checkpoint_if_due(now)
        return self._write_entry(event, actor, agency, ref, details, now)

    def _write_entry(
        self, event: str, actor: str, agency: str | None, ref: str | None, details: Mapping[str, Any], now: str
    ) -> dict[str, Any]:
        seq, previous = self._tail()
        entry: dict[str, Any] = {"seq": seq + 1, "time": now, "event": event, "actor": actor, "agency": agency}
        if ref is not None:
            entry["ref"] = ref
        entry.update(details)
        entry["prev"] = previous
        line = canonical(entry)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if faults.armed():  # two writes, so a crash test can leave a torn line
                half = len(line) // 2
                _write_all(fd, line[:half])
                faults.reached("audit.append.partial")
                _write_all(fd, line[half:] + b"\n")
            else:
                _write_all(fd, line + b"\n")
            if self._batch is None:
                os.fsync(fd)
        finally:
            os.close(fd)
        self.appended = event not in SIGNED_POINTS
        if self._batch is not None:  # `append_all` syncs and updates the head once, at its end
            self._batch.append((seq + 1, line_hash(line)))
            return entry
        if created:
            fsync_dir(self.folder)
        faults.reached("audit.append.written")
        self._write_head(seq + 1, line_hash(line))
        return entry

    def _checkpoint_locked(self, sign: Sign, key: str) -> dict[str, Any] | None:
        last = self._last_line()
        if last is None or last.entry.get("event") == CHECKPOINT:
            return None
        covered = {"covers_hash": last.hash, "covers_seq": last.seq}
        signature = base64.b64encode(sign(canonical(covered))).decode("ascii")
        details = {**covered, "key": key, "signature": signature}
        return self._write_entry(CHECKPOINT, "gateway", None, None, details, _now())

    def _checkpoint_if_due(self, now: str) -> None:
        """Sign a checkpoint first if the entry about to be written at `now` would break the bounds.

        A gateway key that cannot sign (expired, missing) does not stop the entry: it is written, the
        failure is logged, and `verify` reports the unsigned stretch until the key signs again.
        """
        if self.bounds is None or self.signer is None:
            return
        tail = self._unsigned_tail(self.bounds.entries)
        if not tail:
            return
        age = _seconds_between(tail[0].entry, now)
        if len(tail) < self.bounds.entries and age is not None and age < self.bounds.minutes * 60:
            return
        try:
            signer = self.signer()
            if signer is not None:
                self._checkpoint_locked(signer.sign, signer.key)
        except GatewayError as exc:
            logger.error(
                "audit log: could not sign a checkpoint (%s): `audit verify` reports the entries after entry %d"
                " until the gateway key signs one",
                exc.message,
                tail[0].seq - 1,
            )

    def _unsigned_tail(self, limit: int) -> list[_Line]:
        """The entries after the newest checkpoint or genesis, oldest first: at most the last `limit`.

        Reads back from the end only as far as the newest line of the last call, by this process or
        another: a line with the same seq and hash has the same history before it (the chain)."""
        memo = self._tail_memo
        fresh: list[_Line] = []
        earlier: list[_Line] = []
        head: _Line | None = None  # the newest line of the log
        for raw in self._backwards():
            line = _parse(raw, None)
            head = head or line
            if memo is not None and (line.seq, line.hash) == memo[:2]:
                earlier = memo[2]
                break
            if line.entry.get("event") in SIGNED_POINTS:
                break
            fresh.append(line)
            if len(fresh) >= limit:
                break
        fresh.reverse()
        tail = (earlier + fresh)[-limit:]
        self._tail_memo = None if head is None else (head.seq, head.hash, tail)
        return tail

    def _backwards(self) -> Iterator[bytes]:
        """The log's lines, newest first, read from the end in blocks: the log may be large."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        with handle:
            position = handle.seek(0, os.SEEK_END)
            rest = b""
            while position > 0:
                step = min(65536, position)
                position -= step
                handle.seek(position)
                parts = (handle.read(step) + rest).split(b"\n")
                rest = parts[0]
                yield from (raw for raw in reversed(parts[1:]) if raw)
            if rest:
                yield rest

    def _tail(self) -> tuple[int, str]:
        """seq and hash of the last entry; the anchor's (or 0 and GENESIS) for an empty log."""
        last = self._last_line()
        if last is not None:
            return last.seq, last.hash
        raw = _read_optional(self.anchor_path)
        if raw is None:
            return 0, GENESIS
        try:
            anchor = _parse_anchor(raw)
        except _Broken as broken:
            raise GatewayError(f"{broken.problem}; {_VERIFY}") from None
        return anchor.seq, anchor.hash

    def _last_line(self) -> _Line | None:
        """The last line, parsed; None for an empty log. Callers have repaired a torn tail."""
        raw = next(self._backwards(), None)
        return None if raw is None else _parse(raw, None)

    def _read_lines(self) -> list[_Line]:
        """Every complete line, parsed; raise GatewayError naming the first that is not an entry."""
        data = _read_optional(self.path) or b""
        complete = data[: data.rfind(b"\n") + 1]
        return [_parse(raw, number) for number, raw in enumerate(complete.split(b"\n")[:-1], start=1)]

    def _repair_tail(self) -> bool:
        """Cut the log back to its last newline and record what was removed; False if it was whole."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            size = os.fstat(fd).st_size
            if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
                return False
            keep = _after_last_newline(fd, size)
            digest = hashlib.sha256()
            for offset in range(keep, size, 65536):
                digest.update(os.pread(fd, min(65536, size - offset), offset))
            os.ftruncate(fd, keep)
            os.fsync(fd)
        finally:
            os.close(fd)
        removed = {"removed_bytes": size - keep, "removed_sha256": digest.hexdigest()}
        logger.warning("audit log: removed a torn last line of %d bytes left by an interrupted write", size - keep)
        self._append_locked("audit.repaired", "gateway", None, None, removed)
        return True

    def _finish_purge(self) -> bool:
        """Drop the lines a crash left before the anchor's entry, if they chain to it; record the purge."""
        raw = _read_optional(self.anchor_path)
        lines = self._read_lines()
        if raw is None or not lines:
            return False
        try:
            anchor = _parse_anchor(raw)
        except _Broken:
            return False
        count = next((index + 1 for index, line in enumerate(lines[:-1]) if line.seq == anchor.seq), 0)
        if count == 0 or lines[count - 1].hash != anchor.hash:
            return False
        atomic_write_bytes(self.path, b"".join(line.raw + b"\n" for line in lines[count:]))
        logger.warning("audit log: finished a purge interrupted after its anchor was written")
        details = {"removed": count, "through_seq": anchor.seq, "resumed": True}
        self._append_locked("audit.purged", "gateway", None, None, details)
        return True

    def _repair_head(self) -> bool:
        """Rewrite a head that a crash left missing or behind the log; False if it is current or suspect."""
        last = self._last_line()
        if last is None:
            return False
        head = _read_optional(self.head_path)
        current = canonical({"hash": last.hash, "seq": last.seq}) + b"\n"
        if head == current:
            return False
        if head is not None:
            try:
                seq, digest = _parse_head(head)
            except _Broken:
                return False
            behind = [line for line in self._read_lines() if line.seq == seq and seq < last.seq]
            if not behind or behind[0].hash != digest:
                return False
        logger.warning("audit log: the head was missing or behind the log after a crash; rewrote it")
        self._write_head(last.seq, last.hash)
        return True

    def _write_head(self, seq: int, digest: str) -> None:
        atomic_write_bytes(self.head_path, canonical({"hash": digest, "seq": seq}) + b"\n")


# --- verification (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Evidence:
    """What steps 7-9 weigh besides the log: the bounds, the witnesses, where else a delivery is recorded."""

    bounds: Bounds | None
    witnesses: tuple[Witness, ...]
    delivered: str | None


def _verify(log: bytes, head: bytes | None, anchor_raw: bytes | None, check: Check, evidence: _Evidence) -> Verdict:
    """The nine steps of `AuditLog.verify` over the files' bytes."""
    lines: list[_Line] = []
    witnesses = len(evidence.witnesses)
    try:
        lines = _step1_lines(log)
        anchor = _parse_anchor(anchor_raw) if anchor_raw is not None else None
        _step2_sequence(lines, anchor)
        _step3_chain(lines, anchor)
        _step4_checkpoints(lines, check)
        _step5_head(lines, head, anchor)
        if anchor is not None:
            _step6_anchor(anchor, check)
        _step7_genesis(lines, anchor, check, _delivery_evidence(lines, evidence))
        _step8_bounds(lines, evidence.bounds)
        _step9_witnesses(lines, anchor, evidence.witnesses)
    except _Broken as broken:
        return _verdict(lines, broken.problem, broken.step, witnesses)
    return _verdict(lines, None, None, witnesses)


def _verdict(lines: Sequence[_Line], problem: str | None, step: int | None, witnesses: int) -> Verdict:
    checkpoints = sum(1 for line in lines if line.entry.get("event") == CHECKPOINT)
    last = lines[-1].seq if lines else None
    return Verdict(problem is None, len(lines), checkpoints, last, problem, step, witnesses)


def _step1_lines(log: bytes) -> list[_Line]:
    lines: list[_Line] = []
    raws = log.split(b"\n")
    for number, raw in enumerate(raws[:-1], start=1):
        after = f"line {number} (after entry {lines[-1].seq})" if lines else f"line {number}"
        try:
            line = _parse(raw, number)
        except GatewayError:
            raise _Broken(1, f"{after}: not a JSON audit entry: the line was edited, inserted or damaged") from None
        missing = [name for name, kind in _REQUIRED if not _is(line.entry.get(name), kind)]
        if missing or line.seq < 1 or not _HEX64.fullmatch(line.entry["prev"]):
            fields = ", ".join(missing) or "seq or prev"
            raise _Broken(1, f"{after}: {fields} missing or malformed: the line was edited or inserted")
        if _canonical_or_none(line.entry) != raw:
            raise _Broken(1, f"{line.where}: not in canonical form: the line was edited by hand")
        lines.append(line)
    if raws[-1]:
        after = f" after entry {lines[-1].seq}" if lines else ""
        raise _Broken(
            1,
            f"line {len(raws)}{after}: the last line is incomplete (no newline at the end): a write was cut short"
            " by a crash (the gateway removes it when it next starts) or the file was truncated",
        )
    return lines


def _step2_sequence(lines: Sequence[_Line], anchor: _Anchor | None) -> None:
    if not lines:
        return
    first = lines[0]
    start = anchor.seq + 1 if anchor is not None else 1
    if first.seq > start:
        after = " after the purge recorded in audit.anchor" if anchor is not None else ""
        raise _Broken(
            2, f"{first.where}: the log should begin with entry {start}{after}: entries before it were deleted"
        )
    for before, line in itertools.pairwise(lines):
        if line.seq != before.seq + 1:
            raise _Broken(
                2,
                f"{line.where}: expected entry {before.seq + 1} after entry {before.seq}:"
                " an entry was deleted, inserted or reordered here",
            )
    if anchor is not None and lines[-1].seq <= anchor.seq:
        raise _Broken(
            2,
            f"{lines[-1].where}: audit.anchor says entries through {anchor.seq} were purged, yet the log ends"
            " there: entries after it were deleted",
        )


def _step3_chain(lines: Sequence[_Line], anchor: _Anchor | None) -> None:
    for index, line in enumerate(lines):
        if index > 0:
            expected, source = lines[index - 1].hash, f"the SHA-256 of entry {lines[index - 1].seq}"
        elif line.seq == 1:
            expected, source = GENESIS, "the genesis value (64 zeros)"
        elif anchor is not None and line.seq == anchor.seq + 1:
            expected, source = anchor.hash, "the hash recorded in audit.anchor"
        else:
            continue  # the leftovers of an interrupted purge: they must chain into the anchor's entry
        if line.entry["prev"] != expected:
            raise _Broken(
                3, f"{line.where}: prev is not {source}: an entry was edited, deleted, inserted or reordered before it"
            )
    if anchor is not None and lines and lines[0].seq <= anchor.seq:
        anchored = lines[anchor.seq - lines[0].seq]
        if anchored.hash != anchor.hash:
            raise _Broken(
                3, f"{anchored.where}: does not hash to what audit.anchor records: it or the anchor was edited"
            )


def _step4_checkpoints(lines: Sequence[_Line], check: Check) -> None:
    first = lines[0].seq if lines else 0
    for line in lines:
        if line.entry["event"] != CHECKPOINT:
            continue
        entry = line.entry
        covers, digest, key = entry.get("covers_seq"), entry.get("covers_hash"), entry.get("key")
        malformed = _Broken(4, f"{line.where}: the checkpoint's covers_seq, covers_hash or key is malformed")
        if not (isinstance(covers, int) and isinstance(digest, str) and isinstance(key, str)):
            raise malformed
        if isinstance(covers, bool) or not 1 <= covers < line.seq:
            raise malformed
        signed = canonical({"covers_hash": digest, "covers_seq": covers})
        _require_signature(4, signed, entry.get("signature"), key, check, f"{line.where}: the checkpoint's")
        covered = lines[covers - first] if covers >= first else None
        if covered is not None and covered.hash != digest:
            raise _Broken(
                4,
                f"{line.where}: the checkpoint signed entry {covers} with another hash than {covered.where} has"
                " now: entries up to it were edited, inserted or deleted and the chain recomputed",
            )


def _step5_head(lines: Sequence[_Line], head: bytes | None, anchor: _Anchor | None) -> None:
    if not lines:
        if head is not None:
            raise _Broken(5, "the log is empty but audit.head names an entry: the log was deleted or emptied")
        if anchor is not None:
            raise _Broken(5, f"the log is empty but audit.anchor says entries through {anchor.seq} were purged")
        return
    last = lines[-1]
    if head is None:
        raise _Broken(
            5,
            f"audit.head is missing but the log ends with {last.where}: the head was deleted"
            " (or the gateway crashed on its very first write: it restores the head when it next starts)",
        )
    seq, digest = _parse_head(head)
    if seq > last.seq:
        raise _Broken(5, f"the log ends with {last.where} but audit.head names entry {seq}: entries were deleted")
    if seq < last.seq:
        raise _Broken(
            5,
            f"the log ends with {last.where} but audit.head names entry {seq}: entries were added after it, or"
            " the gateway crashed before updating the head (it repairs that when it next starts)",
        )
    if digest != last.hash:
        raise _Broken(
            5,
            f"{last.where} does not hash to what audit.head records: the last entry was edited, or entries"
            " were replaced and the chain recomputed",
        )


def _step6_anchor(anchor: _Anchor, check: Check) -> None:
    signed = canonical({"hash": anchor.hash, "seq": anchor.seq})
    _require_signature(6, signed, anchor.signature, anchor.key, check, "audit.anchor's")


def _step7_genesis(lines: Sequence[_Line], anchor: _Anchor | None, check: Check, delivered: str | None) -> None:
    for line in lines:
        if line.entry["event"] != GENESIS_EVENT:
            continue
        if line.seq != 1:
            raise _Broken(7, f"{line.where}: an audit.genesis can only be entry 1: it was moved or inserted here")
        key = line.entry.get("key")
        if not isinstance(key, str):
            raise _Broken(7, f"{line.where}: the genesis names no key: it was edited")
        signed = _genesis_signed(line.entry["time"])
        _require_signature(7, signed, line.entry.get("signature"), key, check, f"{line.where}: the genesis's")
    if anchor is not None or delivered is None:
        return  # after a purge the signed anchor is where the log begins (step 6)
    if lines and lines[0].entry["event"] == GENESIS_EVENT:
        return
    begins = f"the log's first entry ({lines[0].where}) is {lines[0].entry['event']!r}" if lines else "the log is empty"
    raise _Broken(
        7,
        f"{begins}, not the signed audit.genesis every root starts with, yet {delivered} shows the gateway"
        f" delivered packages: the log was deleted or rebuilt from scratch; {_RESTORE}",
    )


def _delivery_evidence(lines: Sequence[_Line], evidence: _Evidence) -> str | None:
    """What says this root delivered something, the hardest to erase first; None if nothing does."""
    if evidence.witnesses:
        return f"the manifest {evidence.witnesses[0].file!r}"
    if evidence.delivered is not None:
        return evidence.delivered
    own = next((line for line in lines if line.entry["event"] in DELIVERY_EVENTS), None)
    return None if own is None else f"the log's own {own.where} ({own.entry['event']})"


def _step8_bounds(lines: Sequence[_Line], bounds: Bounds | None) -> None:
    if bounds is None or not lines:
        return
    start = next((line for line in reversed(lines) if line.entry["event"] in SIGNED_POINTS), None)
    tail = [line for line in lines if start is None or line.seq > start.seq]
    if not tail:
        return
    since = f"the newest signed checkpoint ({start.where})" if start is not None else "the start of the log"
    why = (
        "checkpoints were removed, or the gateway could not sign them (its log says why; an expired key shows"
        " in `iom-gateway status`)"
    )
    if len(tail) > bounds.entries:
        raise _Broken(
            8,
            f"{len(tail)} entries follow {since}, more than [daemon] checkpoint_entries = {bounds.entries}"
            f" allows: {why}",
        )
    first, last = _time_or_none(tail[0].entry), _time_or_none(tail[-1].entry)
    if first is None or last is None:
        broken = tail[0] if first is None else tail[-1]
        raise _Broken(8, f"{broken.where}: its time is not a UTC time: it was edited")
    minutes = (last - first).total_seconds() / 60
    if minutes > bounds.minutes:
        raise _Broken(
            8,
            f"the entries after {since} span {minutes:.0f} minutes ({tail[0].where} to {tail[-1].where}), more"
            f" than [daemon] checkpoint_minutes = {bounds.minutes} allows: {why}",
        )


def _step9_witnesses(lines: Sequence[_Line], anchor: _Anchor | None, witnesses: Sequence[Witness]) -> None:
    by_seq = {line.seq: line for line in lines}
    delivered: dict[tuple[str, str], list[int]] = {}
    for line in lines:
        if line.entry["event"] == DELIVERED:
            key = (str(line.entry.get("package")), str(line.entry.get("agency")))
            delivered.setdefault(key, []).append(line.seq)
    for witness in sorted(witnesses, key=lambda w: (w.seq, w.file)):
        what = f"{witness.file!r} (package {witness.package} for {witness.recipient})"
        purged = anchor is not None and witness.seq <= anchor.seq
        if not purged and witness.seq > 0:
            _witnessed_entry(what, witness, by_seq.get(witness.seq), lines[-1] if lines else None)
        elif anchor is not None and witness.seq == anchor.seq and witness.head != anchor.hash:
            raise _Broken(
                9,
                f"{what}: sealed when the log ended at entry {witness.seq}, which audit.anchor records"
                " with another hash: the log was rewritten before it was purged",
            )
        seqs = delivered.get((witness.package, witness.recipient), [])
        if any(seq > witness.seq for seq in seqs) or (purged and not seqs):
            continue
        found = f"its package.delivered is entry {seqs[0]}, before that" if seqs else "no package.delivered of it"
        last = f"the log ends at entry {lines[-1].seq}" if lines else "the log is empty"
        raise _Broken(
            9,
            f"{what}: sealed when the log ended at entry {witness.seq}, but the log has {found} ({last}):"
            f" the delivery was removed from the log or the log was rewritten; {_RESTORE}",
        )


def _witnessed_entry(what: str, witness: Witness, entry: _Line | None, last: _Line | None) -> None:
    """Raise _Broken (step 9) unless `entry` is the witnessed one: there, with the hash the manifest holds."""
    if entry is None:
        ends = f"the log ends at entry {last.seq}" if last is not None else "the log is empty"
        raise _Broken(
            9,
            f"{what}: sealed when the log ended at entry {witness.seq}, but {ends}: entries were removed from"
            f" its end (or the log was rebuilt); {_RESTORE}",
        )
    if entry.hash != witness.head:
        raise _Broken(
            9,
            f"{what}: sealed when the log ended at entry {witness.seq} with hash {witness.head[:16]}..., but"
            f" {entry.where}, now {entry.entry['event']!r}, hashes to {entry.hash[:16]}...: the log was"
            f" rewritten at or before entry {witness.seq}; {_RESTORE}",
        )


def _require_signature(step: int, signed: bytes, signature: Any, key: str, check: Check, what: str) -> None:
    """Raise _Broken at `step` unless `signature` (base64) over `signed` is good and made by `key`."""
    try:
        blob = base64.b64decode(signature if isinstance(signature, str) else "", validate=True)
    except (binascii.Error, ValueError):
        blob = b""
    signer = check(signed, blob) if blob else None
    if signer is None:
        raise _Broken(
            step,
            f"{what} signature does not verify with a gateway key: it was forged or edited (or the key"
            " that made it is no longer in the gateway keyring: import it)",
        )
    if _compact(signer) != _compact(key):
        raise _Broken(step, f"{what} signature was made by {signer}, not by {key} as it says: it was edited")


# --- parsing ---------------------------------------------------------------------------------------


def _parse(raw: bytes, number: int | None) -> _Line:
    """One line as an entry; raise GatewayError naming the line if it is not a JSON object with a seq."""
    where = f"line {number}" if number is not None else "the last line"
    try:
        entry = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):  # a forged line may nest past the recursion limit
        entry = None
    if not isinstance(entry, dict) or not _is(entry.get("seq"), int):
        raise GatewayError(f"{where} of the audit log is not an audit entry: it is damaged or was edited; {_VERIFY}")
    return _Line(number or 0, raw, entry)


def _parse_anchor(raw: bytes) -> _Anchor:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        data = None
    fields = ("seq", int), ("hash", str), ("key", str), ("signature", str)
    if not isinstance(data, dict) or not all(_is(data.get(name), kind) for name, kind in fields):
        raise _Broken(6, "audit.anchor is not a JSON object with seq, hash, key and signature: it was edited")
    return _Anchor(data["seq"], data["hash"], data["key"], data["signature"])


def _parse_head(raw: bytes) -> tuple[int, str]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or not _is(data.get("seq"), int) or not _is(data.get("hash"), str):
        raise _Broken(5, "audit.head is not a JSON object with seq and hash: it was edited or damaged")
    return data["seq"], data["hash"]


def _is(value: Any, kind: type) -> bool:
    """isinstance, except that a bool is not an int."""
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _canonical_or_none(entry: Mapping[str, Any]) -> bytes | None:
    try:
        return canonical(entry)
    except ValueError:  # NaN or Infinity, which json.loads accepts but the log never holds
        return None


def _genesis_signed(time: str) -> bytes:
    """What a genesis signature is over (a checkpoint's and an anchor's have other keys: no reuse)."""
    return canonical({"event": GENESIS_EVENT, "seq": 1, "time": time})


def _time_or_none(entry: Mapping[str, Any]) -> datetime | None:
    try:
        return _entry_time(entry)
    except GatewayError:
        return None


def _seconds_between(entry: Mapping[str, Any], now: str) -> float | None:
    """Seconds from the entry's time to `now` (ISO); None if either is not a UTC time."""
    then = _time_or_none(entry)
    try:
        later = datetime.fromisoformat(now)
    except ValueError:
        return None
    if then is None or later.tzinfo is None:
        return None
    return (later - then).total_seconds()


def _compact(fingerprint: str) -> str:
    return "".join(fingerprint.split()).upper()


# --- small helpers ---------------------------------------------------------------------------------


def _check_details(details: Mapping[str, Any]) -> None:
    reserved = sorted(RESERVED & details.keys())
    if reserved:
        raise ValueError(f"audit details may not use the reserved keys {', '.join(reserved)}")
    canonical(details)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()} has no time zone: audit times are compared in UTC")


def _entry_time(entry: Mapping[str, Any]) -> datetime:
    try:
        moment = datetime.fromisoformat(str(entry["time"]))
    except (KeyError, ValueError):
        moment = None
    if moment is None or moment.tzinfo is None:
        raise GatewayError(f"audit entry {entry.get('seq')} has no valid time: {_VERIFY}")
    return moment


def _expired(lines: Sequence[_Line], cutoff: datetime) -> int:
    """How many leading entries are older than `cutoff`; never the last one."""
    count = 0
    for line in lines[:-1]:
        if _entry_time(line.entry) >= cutoff:
            break
        count += 1
    return count


def _read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _after_last_newline(fd: int, size: int) -> int:
    """The offset just after the last newline before `size` (0 if there is none)."""
    position = size
    while position > 0:
        step = min(65536, position)
        position -= step
        cut = os.pread(fd, step, position).rfind(b"\n")
        if cut >= 0:
            return position + cut + 1
    return 0
