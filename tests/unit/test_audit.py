"""The audit log on disk: the chain, the head, checkpoints, purges, torn writes and every kind of tampering."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import multiprocessing
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.core import faults
from gateway.core.errors import GatewayError
from gateway.state import audit
from gateway.state.audit import GENESIS, AuditLog, Bounds, Verdict, canonical

KEY_ID = "GATEWAY-HMAC"
REPO = Path(__file__).resolve().parents[2]


def sign(data: bytes) -> bytes:
    return hmac.new(b"gateway secret", data, hashlib.sha256).digest()


def forge(data: bytes) -> bytes:
    return hmac.new(b"someone else", data, hashlib.sha256).digest()


def check(data: bytes, signature: bytes) -> str | None:
    return KEY_ID if hmac.compare_digest(sign(data), signature) else None


def sha(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Set the time the log stamps on the next entries (ISO, UTC)."""

    def set_time(when: str) -> None:
        monkeypatch.setattr(audit, "_now", lambda: when)

    return set_time


@pytest.fixture(autouse=True)
def _no_faults() -> Iterator[None]:
    yield
    faults.disarm()


def fill(log: AuditLog, count: int, event: str = "test.event") -> None:
    for number in range(count):
        log.append(event, actor="tester", agency="police", n=number)


def lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines()


def write(log: AuditLog, raw: list[bytes]) -> None:
    log.path.write_bytes(b"".join(line + b"\n" for line in raw))


def rechain(raw: list[bytes], *, renumber: bool = True) -> list[bytes]:
    """Recompute seq (if `renumber`) and prev for every line, as a careful forger would."""
    out: list[bytes] = []
    for index, line in enumerate(raw):
        entry = json.loads(line)
        if renumber:
            entry["seq"] = index + 1
        entry["prev"] = sha(out[-1]) if out else GENESIS
        out.append(canonical(entry))
    return out


def edited(line: bytes, **changes: Any) -> bytes:
    return canonical({**json.loads(line), **changes})


def set_head(log: AuditLog, line: bytes) -> None:
    log.head_path.write_bytes(canonical({"hash": sha(line), "seq": json.loads(line)["seq"]}) + b"\n")


def assert_broken(verdict: Verdict, step: int, *where: str) -> None:
    assert verdict.ok is False
    assert verdict.step == step, verdict.problem
    assert verdict.problem is not None
    for text in where:
        assert text in verdict.problem, verdict.problem


# --- the chain and the head -------------------------------------------------------------------------


def test_entries_chain_from_genesis_and_the_head_names_the_last(log: AuditLog) -> None:
    first = log.append("gateway.started", actor="gateway")
    second = log.append("submission.submitted", actor="police-do", agency="police", rows=3, recipients=["probation"])
    raw = lines(log)
    assert [json.loads(line) for line in raw] == [first, second]
    assert raw == [canonical(first), canonical(second)]
    assert first["seq"] == 1 and first["prev"] == GENESIS and first["agency"] is None and "ref" not in first
    assert second["seq"] == 2 and second["prev"] == sha(raw[0])
    assert second["time"].endswith("+00:00") and datetime.fromisoformat(second["time"]).tzinfo is not None
    assert json.loads(log.head_path.read_bytes()) == {"seq": 2, "hash": sha(raw[1])}
    assert list(log.entries()) == [first, second]
    assert log.verify(check) == Verdict(True, 2, 0, 2)


def test_an_empty_root_verifies_and_is_not_created(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    assert log.verify(check) == Verdict(True, 0, 0, None)
    assert list(log.entries()) == []
    assert not (tmp_path / "state").exists()


def test_files_are_private(log: AuditLog, clock: Callable[[str], None]) -> None:
    clock("2020-01-01T00:00:00+00:00")
    fill(log, 2)
    clock("2030-01-01T00:00:00+00:00")
    fill(log, 1)
    log.purge_before(datetime(2025, 1, 1, tzinfo=UTC), sign, KEY_ID)
    assert log.folder.stat().st_mode & 0o777 == 0o700
    for name in ("audit.jsonl", "audit.head", "audit.lock", "audit.anchor"):
        assert (log.folder / name).stat().st_mode & 0o777 == 0o600, name
    assert sorted(path.name for path in log.folder.iterdir()) == [
        "audit.anchor",
        "audit.head",
        "audit.jsonl",
        "audit.lock",
    ]


def test_reserved_and_unserialisable_details_are_refused_before_anything_is_written(log: AuditLog) -> None:
    fill(log, 1)
    with pytest.raises(ValueError, match="reserved keys prev, seq"):
        log.append("x", actor="a", seq=9, prev="0")
    with pytest.raises(TypeError):
        log.append("x", actor="a", when=datetime.now(UTC))
    with pytest.raises(ValueError):
        log.append("x", actor="a", ratio=float("nan"))
    assert len(lines(log)) == 1
    assert log.verify(check).ok


# --- tampering ------------------------------------------------------------------------------------


@pytest.fixture
def six(log: AuditLog) -> list[bytes]:
    """A log of six entries; returns its lines."""
    fill(log, 6)
    return lines(log)


def test_an_edited_middle_entry_breaks_the_chain_after_it(log: AuditLog, six: list[bytes]) -> None:
    six[2] = edited(six[2], agency="probation")
    write(log, six)
    assert_broken(log.verify(check), 3, "entry 4 (line 4)", "SHA-256 of entry 3", "edited")


def test_an_edited_first_entry_is_caught(log: AuditLog, six: list[bytes]) -> None:
    six[0] = edited(six[0], actor="someone")
    write(log, six)
    assert_broken(log.verify(check), 3, "entry 2 (line 2)", "SHA-256 of entry 1")


def test_an_edit_by_hand_that_leaves_the_canonical_form_is_caught_on_its_line(log: AuditLog, six: list[bytes]) -> None:
    six[2] = six[2].replace(b'"actor":', b'"actor": ')
    write(log, six)
    assert_broken(log.verify(check), 1, "entry 3 (line 3)", "canonical")


def test_a_line_that_is_not_json_is_named(log: AuditLog, six: list[bytes]) -> None:
    six[3] = b"garbage"
    write(log, six)
    assert_broken(log.verify(check), 1, "line 4 (after entry 3)")
    with pytest.raises(GatewayError, match=r"line 4 .*iom-gateway audit verify"):
        list(log.entries())


def test_an_edited_last_entry_is_caught_by_the_head(log: AuditLog, six: list[bytes]) -> None:
    six[-1] = edited(six[-1], n=99)
    write(log, six)
    assert_broken(log.verify(check), 5, "entry 6 (line 6)", "audit.head")


@pytest.mark.parametrize(("index", "where"), [(0, "entry 2 (line 1)"), (2, "entry 4 (line 3)")])
def test_a_deleted_entry_breaks_the_sequence(log: AuditLog, six: list[bytes], index: int, where: str) -> None:
    del six[index]
    write(log, six)
    assert_broken(log.verify(check), 2, where)


def test_a_deleted_last_entry_is_caught_by_the_head(log: AuditLog, six: list[bytes]) -> None:
    write(log, six[:-1])
    assert_broken(log.verify(check), 5, "entry 5 (line 5)", "names entry 6", "deleted")


def test_a_deleted_middle_entry_with_the_rest_renumbered_breaks_the_chain(log: AuditLog, six: list[bytes]) -> None:
    del six[2]
    write(log, [edited(line, seq=index + 1) for index, line in enumerate(six)])
    assert_broken(log.verify(check), 3, "entry 3 (line 3)", "SHA-256 of entry 2")


def test_an_inserted_well_formed_entry_breaks_the_sequence(log: AuditLog, six: list[bytes]) -> None:
    forged = edited(six[3], n=42, prev=sha(six[2]))  # a proper entry 4, chained to entry 3
    write(log, [*six[:3], forged, *six[3:]])
    assert_broken(log.verify(check), 2, "entry 4 (line 5)", "expected entry 5 after entry 4")


def test_an_inserted_entry_with_renumbering_breaks_the_chain(log: AuditLog, six: list[bytes]) -> None:
    forged = edited(six[3], n=42, prev=sha(six[2]))
    spliced = [*six[:3], forged, *six[3:]]
    write(log, [edited(line, seq=index + 1) for index, line in enumerate(spliced)])
    assert_broken(log.verify(check), 3, "entry 5 (line 5)", "SHA-256 of entry 4")


def test_an_inserted_entry_with_the_chain_recomputed_is_caught_by_the_head(log: AuditLog, six: list[bytes]) -> None:
    write(log, rechain([*six[:3], edited(six[3], n=42), *six[3:]]))
    assert_broken(log.verify(check), 5, "entry 7 (line 7)", "names entry 6")


def test_a_recomputed_chain_and_head_are_caught_by_a_checkpoint(log: AuditLog, six: list[bytes]) -> None:
    assert log.checkpoint(sign, KEY_ID) is not None
    fill(log, 2)
    forged = rechain([*six[:3], edited(six[3], n=42), *lines(log)[3:]])
    write(log, forged)
    set_head(log, forged[-1])  # the forger rewrites the head too: only the signature stands in the way
    assert_broken(log.verify(check), 4, "entry 8 (line 8)", "signed entry 6")


def test_a_checkpoint_moved_to_the_forgery_fails_its_signature(log: AuditLog, six: list[bytes]) -> None:
    assert log.checkpoint(sign, KEY_ID) is not None
    spliced = rechain([*six[:3], edited(six[3], n=42), *six[3:]])
    checkpoint = edited(lines(log)[-1], covers_seq=7, covers_hash=sha(spliced[-1]))
    forged = rechain([*spliced, checkpoint])
    write(log, forged)
    set_head(log, forged[-1])
    assert_broken(log.verify(check), 4, "entry 8 (line 8)", "signature does not verify")


def test_two_swapped_entries_are_caught(log: AuditLog, six: list[bytes]) -> None:
    six[2], six[3] = six[3], six[2]
    write(log, six)
    assert_broken(log.verify(check), 2, "entry 4 (line 3)", "expected entry 3 after entry 2")


def test_two_swapped_and_renumbered_entries_are_caught(log: AuditLog, six: list[bytes]) -> None:
    six[2], six[3] = six[3], six[2]
    write(log, [edited(line, seq=index + 1) for index, line in enumerate(six)])
    assert_broken(log.verify(check), 3, "entry 3 (line 3)", "SHA-256 of entry 2")


def test_a_truncated_last_line_is_caught(log: AuditLog, six: list[bytes]) -> None:
    log.path.write_bytes(log.path.read_bytes()[:-20])
    assert_broken(log.verify(check), 1, "line 6 after entry 5", "incomplete")


def test_an_entry_appended_by_hand_is_caught_by_the_head(log: AuditLog, six: list[bytes]) -> None:
    write(log, [*six, edited(six[-1], seq=7, prev=sha(six[-1]))])
    assert_broken(log.verify(check), 5, "entry 7 (line 7)", "names entry 6")


def test_a_missing_head_is_caught(log: AuditLog, six: list[bytes]) -> None:
    log.head_path.unlink()
    assert_broken(log.verify(check), 5, "audit.head is missing", "entry 6 (line 6)")


def test_an_emptied_log_is_caught(log: AuditLog, six: list[bytes]) -> None:
    log.path.write_bytes(b"")
    assert_broken(log.verify(check), 5, "the log is empty")


# --- torn writes and crashes ------------------------------------------------------------------------


def test_the_next_append_cuts_off_a_torn_line_and_records_it(log: AuditLog) -> None:
    fill(log, 2)
    torn = b'{"actor":"gateway","agency":null,"ev'
    with log.path.open("ab") as handle:
        handle.write(torn)
    assert_broken(log.verify(check), 1, "after entry 2")
    entry = log.append("after.crash", actor="gateway")
    repaired, appended = (json.loads(line) for line in lines(log)[2:])
    assert repaired["event"] == "audit.repaired" and repaired["seq"] == 3
    assert repaired["removed_bytes"] == len(torn) and repaired["removed_sha256"] == sha(torn)
    assert appended == entry and entry["seq"] == 4
    assert log.verify(check) == Verdict(True, 4, 0, 4)


def test_a_writer_killed_mid_line_leaves_a_torn_line_the_next_append_repairs(log: AuditLog) -> None:
    log.append("first", actor="tester")
    child = (
        "import sys\nfrom pathlib import Path\nfrom gateway.core import faults\n"
        "from gateway.state.audit import AuditLog\n"
        "faults.arm('audit.append.partial')\n"
        "AuditLog(Path(sys.argv[1])).append('second', actor='tester', n=2)\n"
    )
    root = str(log.folder.parent)
    result = subprocess.run([sys.executable, "-c", child, root], cwd=REPO, capture_output=True, timeout=60, check=False)
    assert result.returncode == -9, result.stderr
    assert not log.path.read_bytes().endswith(b"\n")
    assert_broken(log.verify(check), 1, "line 2 after entry 1", "incomplete")
    assert [entry["event"] for entry in log.entries()] == ["first"]
    log.append("third", actor="tester")
    assert [entry["event"] for entry in log.entries()] == ["first", "audit.repaired", "third"]
    assert log.verify(check).ok


def test_repair_rewrites_a_head_left_behind_by_a_crash(log: AuditLog) -> None:
    fill(log, 3)
    faults.arm("audit.append.written:enospc")  # fails after the line is durable, before the head
    with pytest.raises(OSError, match=r"injected at audit\.append\.written"):
        log.append("lost.head", actor="tester")
    faults.disarm()
    assert_broken(log.verify(check), 5, "entry 4 (line 4)", "names entry 3")
    assert log.repair() is True
    assert log.verify(check) == Verdict(True, 4, 0, 4)
    assert log.repair() is False


def test_repair_restores_a_missing_head_and_cuts_a_torn_tail(log: AuditLog) -> None:
    fill(log, 2)
    log.head_path.unlink()
    with log.path.open("ab") as handle:
        handle.write(b'{"seq":')
    assert log.repair() is True
    assert [entry["event"] for entry in log.entries()][-1] == "audit.repaired"
    assert log.verify(check).ok


def test_repair_leaves_a_head_that_contradicts_the_log(log: AuditLog, six: list[bytes]) -> None:
    write(log, six[:-1])  # the last entry deleted: the head is ahead, which no crash can cause
    assert log.repair() is False
    assert_broken(log.verify(check), 5, "names entry 6")
    original, six[3] = six[3], edited(six[3], n=7)  # the head is behind and names an entry the log no longer has
    write(log, six[:-1])
    set_head(log, original)
    assert log.repair() is False
    assert log.verify(check).ok is False


def test_repair_of_a_root_without_a_log_changes_nothing(tmp_path: Path) -> None:
    assert AuditLog(tmp_path).repair() is False
    assert not (tmp_path / "state").exists()


# --- reading --------------------------------------------------------------------------------------


def test_find_ref_returns_the_entry_recorded_with_it(log: AuditLog) -> None:
    log.genesis(sign, KEY_ID)  # a log that records deliveries must begin with one (step 7)
    log.append("a", actor="gateway")
    recorded = log.append("package.delivered", actor="gateway", agency="probation", ref="sub-1/probation")
    log.append("b", actor="gateway", ref="sub-2/police")
    assert recorded["ref"] == "sub-1/probation"
    assert log.find_ref("sub-1/probation") == recorded
    assert log.find_ref("sub-1") is None
    assert log.verify(check).ok


def test_select_filters_by_time_and_event_family(log: AuditLog, clock: Callable[[str], None]) -> None:
    clock("2026-10-01T09:00:00+00:00")
    log.append("submission.delivered", actor="gateway")
    clock("2026-10-02T09:00:00+00:00")
    log.append("submission.rejected", actor="gateway")
    log.append("submissions.other", actor="gateway")
    clock("2026-10-03T09:00:00+00:00")
    log.append("package.delivered", actor="gateway")
    log.append("submission", actor="gateway")

    def events(found: list[dict[str, Any]]) -> list[str]:
        return [entry["event"] for entry in found]

    assert events(log.select(None, "submission")) == ["submission.delivered", "submission.rejected", "submission"]
    since = datetime(2026, 10, 2, 9, tzinfo=UTC)
    assert events(log.select(since, None)) == [
        "submission.rejected",
        "submissions.other",
        "package.delivered",
        "submission",
    ]
    assert events(log.select(since, "package.delivered")) == ["package.delivered"]
    assert events(log.select(datetime(2026, 10, 4, tzinfo=UTC), None)) == []
    with pytest.raises(ValueError, match="no time zone"):
        log.select(datetime(2026, 10, 2), None)


# --- checkpoints ----------------------------------------------------------------------------------


def test_a_checkpoint_signs_the_last_entry_and_only_when_there_is_something_new(log: AuditLog) -> None:
    assert log.checkpoint(sign, KEY_ID) is None
    fill(log, 3)
    last = lines(log)[-1]
    made = log.checkpoint(sign, KEY_ID)
    assert made is not None and made["event"] == "audit.checkpoint" and made["seq"] == 4
    assert made["covers_seq"] == 3 and made["covers_hash"] == sha(last) and made["key"] == KEY_ID
    assert check(canonical({"covers_hash": sha(last), "covers_seq": 3}), base64.b64decode(made["signature"]))
    assert log.checkpoint(sign, KEY_ID) is None
    fill(log, 1)
    assert log.checkpoint(sign, KEY_ID) is not None
    assert log.verify(check) == Verdict(True, 6, 2, 6)


def test_a_checkpoint_the_verifier_does_not_accept_fails_step_4(log: AuditLog) -> None:
    fill(log, 2)
    log.checkpoint(forge, KEY_ID)
    assert_broken(log.verify(check), 4, "entry 3 (line 3)", "does not verify with a gateway key")


def test_a_checkpoint_that_names_another_key_than_its_signer_fails(log: AuditLog) -> None:
    fill(log, 2)
    log.checkpoint(sign, "SOME-OTHER-KEY")
    assert_broken(log.verify(check), 4, "entry 3 (line 3)", f"made by {KEY_ID}, not by SOME-OTHER-KEY")


def test_a_checkpoint_with_a_damaged_signature_fails(log: AuditLog) -> None:
    fill(log, 2)
    log.checkpoint(sign, KEY_ID)
    raw = lines(log)
    raw[-1] = edited(raw[-1], signature="not base64!")
    write(log, raw)
    assert_broken(log.verify(check), 4, "entry 3 (line 3)")


# --- purging --------------------------------------------------------------------------------------


@pytest.fixture
def aged(log: AuditLog, clock: Callable[[str], None]) -> AuditLog:
    """Three entries from January, two from March, then one from now."""
    clock("2026-01-15T10:00:00+00:00")
    fill(log, 3, "old.event")
    clock("2026-03-15T10:00:00+00:00")
    fill(log, 2, "newer.event")
    clock("2026-11-01T10:00:00+00:00")
    fill(log, 1, "current.event")
    return log


FEBRUARY = datetime(2026, 2, 1, tzinfo=UTC)


def test_purge_removes_the_old_prefix_and_anchors_the_rest(aged: AuditLog) -> None:
    third = lines(aged)[2]
    assert aged.expired(FEBRUARY) == 3
    assert aged.purge_before(FEBRUARY, sign, KEY_ID) == 3
    anchor = json.loads(aged.anchor_path.read_bytes())
    assert anchor["seq"] == 3 and anchor["hash"] == sha(third) and anchor["key"] == KEY_ID
    assert check(canonical({"hash": sha(third), "seq": 3}), base64.b64decode(anchor["signature"]))
    entries = list(aged.entries())
    assert [entry["seq"] for entry in entries] == [4, 5, 6, 7]
    assert entries[0]["prev"] == sha(third)
    assert entries[-1]["event"] == "audit.purged" and entries[-1]["removed"] == 3
    assert entries[-1]["through_seq"] == 3
    assert aged.expired(FEBRUARY) == 0 and aged.purge_before(FEBRUARY, sign, KEY_ID) == 0
    assert aged.verify(check) == Verdict(True, 4, 0, 7)
    assert not list(aged.folder.glob(".*tmp"))


def test_purge_stops_at_the_first_entry_that_is_not_expired(log: AuditLog, clock: Callable[[str], None]) -> None:
    for when in ("2026-01-01", "2026-03-01", "2026-01-02", "2026-01-03"):
        clock(f"{when}T00:00:00+00:00")
        fill(log, 1)
    assert log.purge_before(FEBRUARY, sign, KEY_ID) == 1
    assert [entry["seq"] for entry in log.entries()] == [2, 3, 4, 5]


def test_purge_never_removes_the_last_entry_and_can_run_again(aged: AuditLog) -> None:
    future = datetime(2100, 1, 1, tzinfo=UTC)
    assert aged.purge_before(FEBRUARY, sign, KEY_ID) == 3
    aged.checkpoint(sign, KEY_ID)
    assert aged.purge_before(future, sign, KEY_ID) == 4  # entries 4-7; the checkpoint (8) was the last
    assert [entry["event"] for entry in aged.entries()] == ["audit.checkpoint", "audit.purged"]
    assert json.loads(aged.anchor_path.read_bytes())["seq"] == 7
    assert aged.verify(check) == Verdict(True, 2, 1, 9)
    aged.append("later", actor="gateway")
    assert aged.verify(check).ok


def test_deleting_the_first_entry_after_the_anchor_is_caught(aged: AuditLog) -> None:
    aged.purge_before(FEBRUARY, sign, KEY_ID)
    write(aged, lines(aged)[1:])
    assert_broken(aged.verify(check), 2, "entry 5 (line 1)", "should begin with entry 4")


def test_an_anchor_moved_forward_over_deleted_entries_is_caught(aged: AuditLog) -> None:
    aged.purge_before(FEBRUARY, sign, KEY_ID)
    raw = lines(aged)
    write(aged, raw[1:])
    moved = {"hash": sha(raw[0]), "seq": 4}
    forged = {**moved, "time": "2026-11-01T10:00:00+00:00", "key": KEY_ID, "signature": "AAAA"}
    aged.anchor_path.write_bytes(canonical(forged) + b"\n")
    assert_broken(aged.verify(check), 6, "audit.anchor's signature does not verify")
    signed = {**forged, "signature": base64.b64encode(forge(canonical(moved))).decode()}
    aged.anchor_path.write_bytes(canonical(signed) + b"\n")
    assert_broken(aged.verify(check), 6, "audit.anchor's signature does not verify")


def test_a_damaged_anchor_is_caught(aged: AuditLog) -> None:
    aged.purge_before(FEBRUARY, sign, KEY_ID)
    aged.anchor_path.write_bytes(b"{}")
    assert_broken(aged.verify(check), 6, "audit.anchor is not")


def test_a_deleted_anchor_is_caught(aged: AuditLog) -> None:
    aged.purge_before(FEBRUARY, sign, KEY_ID)
    aged.anchor_path.unlink()
    assert_broken(aged.verify(check), 2, "entry 4 (line 1)", "should begin with entry 1")


def test_a_purge_interrupted_after_its_anchor_still_verifies_and_repair_finishes_it(aged: AuditLog) -> None:
    faults.arm("audit.purge.anchored:enospc")
    with pytest.raises(OSError, match="injected"):
        aged.purge_before(FEBRUARY, sign, KEY_ID)
    faults.disarm()
    assert aged.anchor_path.exists() and len(lines(aged)) == 6
    assert aged.verify(check) == Verdict(True, 6, 0, 6)
    raw = lines(aged)
    raw[1] = edited(raw[1], n=5)  # a leftover edited: it no longer chains into the anchored entry
    write(aged, raw)
    assert_broken(aged.verify(check), 3, "entry 3 (line 3)", "SHA-256 of entry 2")
    raw[1] = edited(raw[1], n=1)
    write(aged, raw)
    assert aged.repair() is True
    assert [entry["seq"] for entry in aged.entries()] == [4, 5, 6, 7]
    assert list(aged.entries())[-1] | {"time": ""} == {
        "seq": 7,
        "time": "",
        "event": "audit.purged",
        "actor": "gateway",
        "agency": None,
        "removed": 3,
        "through_seq": 3,
        "resumed": True,
        "prev": sha(lines(aged)[2]),
    }
    assert aged.verify(check).ok


def test_purge_needs_an_aware_cutoff(aged: AuditLog) -> None:
    with pytest.raises(ValueError, match="no time zone"):
        aged.purge_before(datetime(2026, 2, 1), sign, KEY_ID)
    with pytest.raises(ValueError, match="no time zone"):
        aged.expired(datetime(2026, 2, 1))


# --- concurrency ----------------------------------------------------------------------------------


def _append_many(root: str, worker: int) -> None:
    log = AuditLog(Path(root))
    for number in range(50):
        log.append("load.test", actor=f"worker-{worker}", n=number)


def test_four_processes_appending_at_once_give_one_unbroken_chain(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(tmp_path), worker)) for worker in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=60)
    assert [process.exitcode for process in workers] == [0, 0, 0, 0]
    log = AuditLog(tmp_path)
    entries = list(log.entries())
    assert [entry["seq"] for entry in entries] == list(range(1, 201))
    assert sorted((entry["actor"], entry["n"]) for entry in entries) == sorted(
        (f"worker-{worker}", number) for worker in range(4) for number in range(50)
    )
    assert log.verify(check) == Verdict(True, 200, 0, 200)


def test_a_forged_line_nested_past_the_recursion_limit_is_reported_not_raised(log: AuditLog, six: list[bytes]) -> None:
    six[1] = b"[" * 100_000 + b"]" * 100_000
    write(log, six)
    assert_broken(log.verify(check), 1, "line 2 (after entry 1)")


# --- mandatory checkpoints: the writer keeps within the bounds ----------------------------------------

SIGNER = audit.Signer(sign, KEY_ID)


def bounded(tmp_path: Path, entries: int = 3, minutes: int = 60, signer: audit.Signer | None = SIGNER) -> AuditLog:
    return AuditLog(tmp_path, bounds=Bounds(entries, minutes), signer=lambda: signer)


def test_the_log_signs_a_checkpoint_before_an_entry_would_exceed_checkpoint_entries(tmp_path: Path) -> None:
    log = bounded(tmp_path, entries=3)
    log.genesis(sign, KEY_ID)
    fill(log, 7)
    assert [e["event"] for e in log.entries()] == [
        "audit.genesis",
        *["test.event"] * 3,
        "audit.checkpoint",
        *["test.event"] * 3,
        "audit.checkpoint",
        "test.event",
    ]
    assert log.appended is True and log.verify(check).ok
    assert log.checkpoint(sign, KEY_ID) is not None and log.appended is False


def test_two_writers_of_one_log_keep_the_bound_between_them(tmp_path: Path) -> None:
    # each remembers the unsigned tail it last read (a worker process each, in the daemon): what the
    # other wrote since must count, and so must the other's checkpoint
    first, second = bounded(tmp_path, entries=3), bounded(tmp_path, entries=3)
    first.genesis(sign, KEY_ID)
    for turn in range(9):
        (first if turn % 3 else second).append("test.event", actor="t", n=turn)
    events = [e["event"] for e in first.entries()]
    assert events == ["audit.genesis", *(["test.event"] * 3 + ["audit.checkpoint"]) * 2, *["test.event"] * 3]
    assert first.verify(check).ok


def test_the_log_signs_a_checkpoint_before_an_entry_would_span_more_than_checkpoint_minutes(
    tmp_path: Path, clock: Callable[[str], None]
) -> None:
    log = bounded(tmp_path, entries=100, minutes=60)
    clock("2026-11-01T10:00:00+00:00")
    log.genesis(sign, KEY_ID)
    fill(log, 2)
    clock("2026-11-01T10:59:59+00:00")
    fill(log, 1)
    clock("2026-11-01T11:00:00+00:00")
    fill(log, 1)
    events = [(e["event"], e["time"][11:19]) for e in log.entries()][1:]
    assert events == [
        ("test.event", "10:00:00"),
        ("test.event", "10:00:00"),
        ("test.event", "10:59:59"),
        ("audit.checkpoint", "11:00:00"),
        ("test.event", "11:00:00"),
    ]
    assert log.verify(check).ok


def test_a_key_that_cannot_sign_does_not_stop_an_entry_and_verify_then_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def expired() -> audit.Signer:
        raise GatewayError("the gateway key expired: run `iom-gateway keys rotate --gateway`")

    log = AuditLog(tmp_path, bounds=Bounds(2, 60), signer=expired)
    fill(log, 4)
    assert [e["event"] for e in log.entries()] == ["test.event"] * 4
    assert "could not sign a checkpoint (the gateway key expired" in caplog.text
    assert_broken(log.verify(check), 8, "4 entries follow the start of the log", "checkpoint_entries = 2")


def test_no_signer_yet_means_no_checkpoint(tmp_path: Path) -> None:
    log = bounded(tmp_path, entries=1, signer=None)  # `init` before the gateway key exists
    fill(log, 2)
    assert [e["event"] for e in log.entries()] == ["test.event"] * 2


# --- step 7: the signed genesis -----------------------------------------------------------------------


def test_the_genesis_is_entry_1_signed_and_written_only_on_an_empty_log(log: AuditLog) -> None:
    made = log.genesis(sign, KEY_ID)
    assert made is not None and made["seq"] == 1 and made["prev"] == GENESIS and made["key"] == KEY_ID
    signed = canonical({"event": "audit.genesis", "seq": 1, "time": made["time"]})
    assert check(signed, base64.b64decode(made["signature"])) == KEY_ID
    assert log.genesis(sign, KEY_ID) is None
    fill(log, 1)
    assert log.verify(check) == Verdict(True, 2, 0, 2)


def test_a_log_that_records_deliveries_needs_a_signed_genesis(log: AuditLog) -> None:
    fill(log, 2)
    assert log.verify(check).ok  # nothing says this root ever delivered
    assert_broken(log.verify(check, delivered="the journal (2 deliveries)"), 7, "the journal (2 deliveries)")
    log.append("package.delivered", actor="gateway", agency="probation", package="P")
    assert_broken(log.verify(check), 7, "first entry (entry 1 (line 1)) is 'test.event'", "entry 3 (line 3)")


def test_an_empty_log_with_a_witness_or_deliveries_elsewhere_fails_step_7(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    witness = audit.Witness("inbox/probation/P.manifest.json", "P", "probation", 17, "ab" * 32)
    assert_broken(log.verify(check, witnesses=[witness]), 7, "the log is empty", "inbox/probation/P.manifest.json")
    assert_broken(log.verify(check, delivered="the journal (1 deliveries)"), 7, "the log is empty")


def test_a_forged_or_moved_genesis_fails_step_7(log: AuditLog) -> None:
    log.genesis(forge, KEY_ID)
    log.append("package.delivered", actor="gateway", agency="probation", package="P")
    assert_broken(log.verify(check), 7, "entry 1 (line 1): the genesis's signature does not verify")
    raw = lines(log)
    write(log, rechain([raw[1], raw[0]]))
    set_head(log, lines(log)[-1])
    assert_broken(log.verify(check), 7, "entry 2 (line 2): an audit.genesis can only be entry 1")


def test_a_purged_genesis_leaves_the_signed_anchor_as_the_start(aged: AuditLog) -> None:
    aged.purge_before(FEBRUARY, sign, KEY_ID)
    assert aged.verify(check, delivered="the journal (1 deliveries)").ok


# --- step 8: the entries after the newest checkpoint stay within the bounds ---------------------------


def test_entries_past_checkpoint_entries_after_the_newest_checkpoint_fail_step_8(tmp_path: Path) -> None:
    log = bounded(tmp_path, entries=3)
    log.genesis(sign, KEY_ID)
    fill(log, 6)
    assert log.verify(check).ok
    kept = [line for line in lines(log) if json.loads(line)["event"] != "audit.checkpoint"]
    forged = rechain(kept)  # the forger drops the checkpoints; chain and head recomputed
    write(log, forged)
    set_head(log, forged[-1])
    assert_broken(log.verify(check), 8, "6 entries follow the newest signed checkpoint (entry 1 (line 1))", "= 3")
    assert AuditLog(tmp_path).verify(check).ok  # without bounds, step 8 has nothing to hold it to


def test_entries_spanning_more_than_checkpoint_minutes_fail_step_8(
    tmp_path: Path, clock: Callable[[str], None]
) -> None:
    clock("2026-11-01T10:00:00+00:00")
    fill(AuditLog(tmp_path), 1)  # written without bounds, as a forger would
    clock("2026-11-01T11:00:01+00:00")
    fill(AuditLog(tmp_path), 1)
    assert_broken(bounded(tmp_path).verify(check), 8, "span 60 minutes (entry 1 (line 1) to entry 2 (line 2))")


# --- step 9: witnesses ----------------------------------------------------------------------------


@pytest.fixture
def sealed(tmp_path: Path) -> tuple[AuditLog, audit.Witness]:
    """Genesis, two entries, then package P sealed for probation (its witness) and delivered."""
    log = AuditLog(tmp_path)
    log.genesis(sign, KEY_ID)
    fill(log, 2)
    stamp = log.witness()
    assert stamp == {"seq": 3, "head": sha(lines(log)[-1])}
    log.append("package.delivered", actor="gateway", agency="probation", package="P")
    fill(log, 2)
    return log, audit.Witness("probation/P.manifest.json", "P", "probation", stamp["seq"], stamp["head"])


def test_a_witness_that_agrees_with_the_log_passes(sealed: tuple[AuditLog, audit.Witness]) -> None:
    log, witness = sealed
    assert log.verify(check, witnesses=[witness]) == Verdict(True, 6, 0, 6, witnesses=1)


def test_a_witness_of_an_entry_rewritten_since_fails_step_9(sealed: tuple[AuditLog, audit.Witness]) -> None:
    log, witness = sealed
    raw = lines(log)
    forged = rechain([raw[0], edited(raw[1], n=7), *raw[2:]])
    write(log, forged)
    set_head(log, forged[-1])
    assert_broken(
        log.verify(check, witnesses=[witness]),
        9,
        "'probation/P.manifest.json' (package P for probation): sealed when the log ended at entry 3 with hash",
        "entry 3 (line 3), now 'test.event', hashes to",
    )


def test_a_witness_past_the_end_of_a_truncated_log_fails_step_9(sealed: tuple[AuditLog, audit.Witness]) -> None:
    log, witness = sealed
    write(log, lines(log)[:2])
    set_head(log, lines(log)[-1])
    assert_broken(log.verify(check, witnesses=[witness]), 9, "entry 3, but the log ends at entry 2")


def test_a_delivery_removed_after_its_witness_fails_step_9(sealed: tuple[AuditLog, audit.Witness]) -> None:
    log, witness = sealed
    raw = lines(log)
    forged = rechain([line for line in raw if json.loads(line)["event"] != "package.delivered"])
    write(log, forged)
    set_head(log, forged[-1])
    assert_broken(log.verify(check, witnesses=[witness]), 9, "no package.delivered of it (the log ends at entry 5)")
    other = audit.Witness("housing/P.manifest.json", "P", "housing", 3, witness.head)
    write(log, raw)
    set_head(log, raw[-1])
    assert_broken(log.verify(check, witnesses=[witness, other]), 9, "'housing/P.manifest.json'", "no package")


def test_the_earliest_witness_is_named_first(sealed: tuple[AuditLog, audit.Witness]) -> None:
    log, witness = sealed
    later = audit.Witness("z-later.manifest.json", "Q", "probation", 5, sha(lines(log)[4]))
    write(log, lines(log)[:1])
    set_head(log, lines(log)[-1])
    assert_broken(log.verify(check, witnesses=[later, witness]), 9, "'probation/P.manifest.json'", "entry 3")


def test_a_witness_purged_behind_the_signed_anchor_still_counts(log: AuditLog, clock: Callable[[str], None]) -> None:
    clock("2026-01-15T10:00:00+00:00")
    log.genesis(sign, KEY_ID)
    stamp = log.witness()
    log.append("package.delivered", actor="gateway", agency="probation", package="P")
    clock("2026-11-01T10:00:00+00:00")
    fill(log, 1)
    assert log.purge_before(FEBRUARY, sign, KEY_ID) == 2
    purged = audit.Witness("P.manifest.json", "P", "probation", stamp["seq"], stamp["head"])
    assert log.verify(check, witnesses=[purged]).ok
    assert_broken(log.verify(check, witnesses=[replace(purged, seq=2)]), 9, "audit.anchor records with another hash")


def test_an_empty_log_witnesses_seq_0_and_a_later_delivery_agrees(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    stamp = log.witness()
    assert stamp == {"seq": 0, "head": GENESIS}
    log.append("package.delivered", actor="gateway", agency="probation", package="P")
    witness = audit.Witness("P.manifest.json", "P", "probation", 0, GENESIS)
    assert_broken(log.verify(check, witnesses=[witness]), 7, "'P.manifest.json'")  # still no genesis
