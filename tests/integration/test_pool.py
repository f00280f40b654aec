"""The daemon's worker pool ([daemon] workers) as real processes: bursts spread over workers, each
file delivered exactly once per recipient, a killed worker or daemon costs nothing but a retry."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest

from gateway.state.root import FLUSH_LOCK, Root, flush_audit
from tests.integration.daemon_harness import (
    GOOD,
    ROUTE,
    Daemon,
    audit_entries,
    cli,
    drop,
    journal_rows,
    outbox_clear,
    packages,
    pull_raw,
    temp_files,
    wait_until,
)
from tests.integration.test_daemon import _release, _signed, delivered, variant

BURST = 60


@pytest.fixture
def root(routed_root: Path) -> Path:
    return routed_root


def _workers(root: Path, count: int) -> None:
    toml = root / "gateway.toml"
    toml.write_text(toml.read_text().replace("[vault]", f"workers = {count}\n\n[vault]", 1))


def _burst(root: Path, tmp_path: Path, count: int = BURST, first: int = 1000) -> Path:
    return _signed(root, tmp_path / "burst", [f"police-pool-{n:03d}-2026-10.csv" for n in range(count)], first)


def _started_workers(daemon: Daemon) -> list[int]:
    return [int(pid) for pid in re.findall(r"event=started worker pid=([0-9]+)", daemon.text())]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too: it only waits for its parent to reap it
    return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"


def _journal(root: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Submissions by status, and committed deliveries by recipient."""
    statuses = journal_rows(root, "SELECT status, COUNT(*) FROM submissions GROUP BY status")
    made = journal_rows(
        root, "SELECT recipient, COUNT(*) FROM deliveries WHERE status = 'delivered' GROUP BY recipient"
    )
    return {str(k): int(v) for k, v in statuses}, {str(k): int(v) for k, v in made}  # type: ignore[call-overload]


def _assert_exactly_once(root: Path, count: int, capsys: pytest.CaptureFixture[str]) -> None:
    statuses, made = _journal(root)
    assert statuses == {"done": count}
    assert made == dict.fromkeys(ROUTE, count)
    for recipient in ROUTE:
        assert len(packages(root, recipient)) == count
        assert len(list((root / "inbox" / recipient).glob("*.manifest.json.sig"))) == count
    entries = audit_entries(root)
    submissions = [e["submission"] for e in entries if e["event"] == "submission.delivered"]
    assert len(submissions) == count and len(set(submissions)) == count
    refs = [e["ref"] for e in entries if "ref" in e]
    assert len(refs) == len(set(refs)), "a staged audit event was appended twice"
    assert temp_files(root) == []
    capsys.readouterr()
    assert cli(root, "audit", "verify") == 0, capsys.readouterr().out


@pytest.mark.slow
def test_a_burst_is_shared_by_two_workers_and_delivered_exactly_once(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _workers(root, 2)
    staging = _burst(root, tmp_path)
    daemon = Daemon(root).ready()
    assert "workers=2" in daemon.text()
    workers = _started_workers(daemon)
    assert len(workers) == 2 and os.getpid() not in workers
    assert len(_release(root, staging)) == BURST
    wait_until(lambda: outbox_clear(root, "police") and delivered(root, BURST), 300, f"{BURST} deliveries")
    assert daemon.stop(30) == 0
    log = daemon.text()
    took = re.findall(r"worker=([0-9]+) event=processed agency=police file='police-pool-", log)
    assert len(took) == BURST
    assert {int(pid) for pid in took} == set(workers), "both workers should have taken files"
    assert f"event=stopped processed={BURST} errors=0" in log
    assert "Traceback" not in log and "level=ERROR" not in log
    assert not any(_alive(pid) for pid in workers), "the workers outlived the daemon"
    _assert_exactly_once(root, BURST, capsys)


@pytest.mark.slow
def test_a_worker_killed_mid_burst_costs_a_retry_and_the_daemon_carries_on(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _workers(root, 2)
    staging = _burst(root, tmp_path, 30)
    daemon = Daemon(root).ready()
    victim = _started_workers(daemon)[0]
    _release(root, staging)
    wait_until(lambda: delivered(root, 3), 60, "the first deliveries")
    os.kill(victim, signal.SIGKILL)
    daemon.wait_log(f"event=worker pid={victim} died status=SIGKILL")
    wait_until(lambda: outbox_clear(root, "police") and delivered(root, 30), 300, "the rest")
    assert daemon.process.poll() is None, "the daemon must outlive its worker"
    assert len(_started_workers(daemon)) == 3  # a new worker took the dead one's place
    assert daemon.stop(30) == 0
    assert "Traceback" not in daemon.text()
    _assert_exactly_once(root, 30, capsys)


@pytest.mark.slow
def test_the_daemon_killed_mid_burst_takes_its_workers_with_it_and_a_restart_finishes_exactly_once(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _workers(root, 2)
    staging = _burst(root, tmp_path, 30)
    daemon = Daemon(root).ready()
    workers = _started_workers(daemon)
    _release(root, staging)
    wait_until(lambda: delivered(root, 3), 60, "the first deliveries")
    daemon.process.kill()
    assert daemon.exited() == -signal.SIGKILL
    wait_until(lambda: not any(_alive(pid) for pid in workers), 10, "the workers to die with the daemon")
    survivor = Daemon(root).ready()
    wait_until(lambda: outbox_clear(root, "police") and delivered(root, 30), 300, "the rest")
    assert survivor.stop(30) == 0
    assert "Traceback" not in survivor.text()
    _assert_exactly_once(root, 30, capsys)


@pytest.mark.slow
def test_the_same_bytes_under_two_names_in_one_burst_are_delivered_once(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _workers(root, 2)
    staging = tmp_path / "twins"
    names = [f"police-twin-{n}-2026-10.csv" for n in range(2)]
    _signed(root, staging, names, 1)
    (staging / names[1]).write_bytes(variant(1))  # the same bytes as the first, and its signature
    (staging / (names[1] + ".sig")).write_bytes((staging / (names[0] + ".sig")).read_bytes())
    daemon = Daemon(root).ready()
    _release(root, staging)
    wait_until(lambda: outbox_clear(root, "police"), 60, "both files to be taken")
    assert daemon.stop(30) == 0
    for recipient in ROUTE:
        assert len(packages(root, recipient)) == 1
    events = [e["event"] for e in audit_entries(root)]
    assert events.count("submission.delivered") == 1
    assert events.count("submission.duplicate") == 1
    assert pull_raw(root, "probation", tmp_path / "p") == [variant(1)]
    capsys.readouterr()
    assert cli(root, "audit", "verify") == 0


@pytest.mark.slow
def test_sighup_restarts_the_workers_with_the_new_configuration(root: Path) -> None:
    _workers(root, 2)
    daemon = Daemon(root).ready()
    before = _started_workers(daemon)
    toml = root / "gateway.toml"
    toml.write_text(toml.read_text().replace("workers = 2", "workers = 1"))
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_log("event=reloaded agencies=")
    assert "workers=1" in daemon.text().rsplit("event=reloaded", 1)[1]
    wait_until(lambda: not any(_alive(pid) for pid in before), 10, "the old workers to exit")
    toml.write_text(toml.read_text().replace("workers = 1", "workers = 2"))
    daemon.process.send_signal(signal.SIGHUP)
    wait_until(lambda: len(_started_workers(daemon)) == 4, 10, "two new workers")
    after = _started_workers(daemon)[2:]
    assert set(after).isdisjoint(before)
    drop(root, "police", GOOD, GOOD.name, "police-do")
    wait_until(lambda: delivered(root) and outbox_clear(root, "police"), 30, "the delivery")
    # the worker logs the file after clearing it from the outbox: under load, a moment later
    wait_until(lambda: "event=processed agency=police" in daemon.text(), 10, "the worker's log line")
    assert re.search(rf"worker=({after[0]}|{after[1]}) event=processed agency=police", daemon.text())
    assert daemon.stop() == 0


@pytest.mark.parametrize("value", ["0", "65", '"x"', "true", "2.5"])
def test_workers_out_of_range_is_a_config_error_naming_the_setting(
    root: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = root / "gateway.toml"
    toml.write_text(toml.read_text().replace("[vault]", f"workers = {value}\n\n[vault]", 1))
    capsys.readouterr()
    assert cli(root, "status") == 1
    err = capsys.readouterr().err
    assert "daemon.workers must be a whole number from 1 to 64" in err
    assert "Traceback" not in err


def _stage(root: Root, ref: str) -> None:
    root.db.execute(
        "INSERT INTO audit_outbox (ref, entry, created) VALUES (?, ?, '2026-10-01T00:00:00+00:00')",
        (ref, json.dumps({"event": "test.staged", "actor": "gateway", "agency": None, "details": {"n": 1}})),
    )


def test_a_flusher_that_died_between_appending_and_clearing_is_not_appended_twice(root: Path) -> None:
    with Root.open(root) as opened:
        _stage(opened, "t:1")
        opened.audit.append("test.staged", actor="gateway", ref="t:1", n=1)  # the dead flusher's append...
        (root / "state" / FLUSH_LOCK).write_text("t:1")  # ... and the name it left in the lock file
        _stage(opened, "t:2")
        assert flush_audit(opened) == 1  # t:2 only
        refs = [e.get("ref") for e in opened.audit.entries()]
        assert refs.count("t:1") == 1 and refs.count("t:2") == 1
        assert opened.journal.staged_audit() == []
        assert (root / "state" / FLUSH_LOCK).read_text() == ""  # nothing in hand any more


def test_without_the_name_in_the_lock_file_a_staged_event_is_appended(root: Path) -> None:
    with Root.open(root) as opened:
        _stage(opened, "t:3")
        assert flush_audit(opened) == 1
        assert flush_audit(opened) == 0
        assert [e.get("ref") for e in opened.audit.entries()].count("t:3") == 1


@pytest.mark.slow
def test_one_worker_means_the_daemon_takes_files_itself(root: Path) -> None:
    _workers(root, 1)
    daemon = Daemon(root).ready()
    drop(root, "police", GOOD, GOOD.name, "police-do")
    wait_until(lambda: delivered(root) and outbox_clear(root, "police"), 30, "the delivery")
    assert daemon.stop() == 0
    log = daemon.text()
    assert "workers=1" in log and "started worker" not in log
    assert re.search(r"logger=gateway.exchange.process event=processed agency=police", log)  # no worker= field
