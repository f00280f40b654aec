"""Many nodes, one root (issue 16, item 2): daemons sharing one root folder and one PostgreSQL journal deliver
a burst exactly once per recipient, also when one node is SIGKILLed mid-burst and another is paused with
SIGSTOP past its lease and then resumed; the audit log stays one chain that verifies; no temp file is left."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.adapters import pg
from gateway.adapters.store import FENCES
from gateway.state.journal import DUTY_METRICS
from tests.integration.daemon_harness import (
    ROUTE,
    Daemon,
    audit_entries,
    cli,
    journal_rows,
    outbox_clear,
    packages,
    pull_raw,
    run_once_process,
    temp_files,
    wait_until,
)
from tests.integration.pg_harness import Cluster, cluster, move_journal
from tests.integration.test_daemon import _release, _signed, delivered

pytestmark = pytest.mark.slow
BURST = 300
LEASE = 5  # [journal] lease_seconds: short, so that the take-overs below happen within the test


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    with cluster() as running:
        yield running


@pytest.fixture
def root(routed_root: Path, server: Cluster) -> Path:
    """The routed demo root on its own PostgreSQL journal; each node one process (the nodes are the parallelism)."""
    move_journal(routed_root, server)
    toml = routed_root / "gateway.toml"
    text = toml.read_text().replace("[vault]", "workers = 1\n\n[vault]", 1)
    toml.write_text(text + f"lease_seconds = {LEASE}\n")
    return routed_root


def _burst(root: Path, tmp_path: Path) -> Path:
    return _signed(root, tmp_path / "burst", [f"police-node-{n:03d}-2026-10.csv" for n in range(BURST)], 5000)


def _duty_holders(root: Path, duty: int) -> set[str]:
    """The sessions (by application name: the node's host:pid) holding the advisory lock of `duty`."""
    rows = journal_rows(
        root,
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objid::bigint = ?",
        (pg.DUTIES + duty,),
    )
    return {str(name) for (name,) in rows}


def _delivered_by(node: Daemon) -> int:
    return sum("event=processed" in line and "outcome=delivered" in line for line in node.text().splitlines())


def _exactly_once(root: Path) -> None:
    """Every file of the burst delivered once to each recipient: in the inbox, the journal and the audit log."""
    for recipient in ROUTE:
        assert len(packages(root, recipient)) == BURST, recipient
        assert len(list((root / "inbox" / recipient).glob("*.manifest.json.sig"))) == BURST, recipient
    assert journal_rows(root, "SELECT status, COUNT(*) FROM submissions GROUP BY status") == [("done", BURST)]
    made = journal_rows(root, "SELECT recipient, COUNT(*) FROM deliveries WHERE status = 'delivered' GROUP BY 1")
    assert sorted(made) == sorted((r, BURST) for r in ROUTE)
    entries = audit_entries(root)
    submissions = [e["submission"] for e in entries if e["event"] == "submission.delivered"]
    assert len(submissions) == BURST and len(set(submissions)) == BURST
    packaged = [(e["package"], e["agency"]) for e in entries if e["event"] == "package.delivered"]
    assert len(packaged) == BURST * len(ROUTE) and len(set(packaged)) == len(packaged)
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))  # one chain, in order
    assert cli(root, "audit", "verify") == 0


def _stop(*nodes: Daemon) -> None:
    for node in nodes:
        assert node.stop(timeout=60) == 0, node.text()
        assert "Traceback" not in node.text(), node.text()


def test_two_nodes_share_a_burst_and_deliver_each_file_exactly_once(root: Path, tmp_path: Path) -> None:
    staging = _burst(root, tmp_path)
    nodes = [Daemon(root).ready() for _ in range(2)]
    wait_until(lambda: len(_duty_holders(root, DUTY_METRICS)) == 1, 30, "one node to take the metrics file")
    names = {f"iom-gateway {socket.gethostname()}:{node.process.pid}" for node in nodes}
    assert _duty_holders(root, DUTY_METRICS) <= names  # one of the two nodes, alone
    assert len(_release(root, staging)) == BURST
    wait_until(lambda: outbox_clear(root, "police") and delivered(root, BURST), 600, f"{BURST} deliveries")
    _stop(*nodes)
    assert all(_delivered_by(node) > 0 for node in nodes), "both nodes took part"
    assert sum(_delivered_by(node) for node in nodes) == BURST
    _exactly_once(root)
    assert temp_files(root) == []
    assert _fenced(root) == []  # every claim let go took its fence folders with it


def _stopped(pid: int) -> bool:
    """Whether process `pid` is stopped (SIGSTOP): state T in /proc/PID/stat."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_one_node_killed_and_one_paused_past_its_lease_still_deliver_exactly_once(root: Path, tmp_path: Path) -> None:
    staging = _burst(root, tmp_path)
    killed, steady = Daemon(root).ready(), Daemon(root).ready()
    # the third package it publishes (its second file): paused with the payload in the inbox, the manifest not yet
    paused = Daemon(root, fault="deliver.payload@3:stop").ready()
    _release(root, staging)
    wait_until(lambda: delivered(root, BURST // 10), 300, "the first tenth")
    killed.process.send_signal(signal.SIGKILL)  # mid-file, most likely: its claim lapses and is taken over
    assert killed.exited() == -signal.SIGKILL
    wait_until(lambda: _stopped(paused.process.pid), 300, "the paused node to reach its pause")
    held = journal_rows(root, "SELECT submission FROM claims WHERE node LIKE ?", (f"%:{paused.process.pid}",))
    assert len(held) == 1, held  # the submission it was delivering when it stopped
    time.sleep(2 * LEASE + 1)  # its lease runs out, and its session if it sat in a transaction
    wait_until(  # another node takes it over and delivers it
        lambda: journal_rows(root, "SELECT status FROM submissions WHERE id = ?", held[0]) == [("done",)],
        300,
        "the paused node's submission delivered by another",
    )
    os.kill(paused.process.pid, signal.SIGCONT)
    wait_until(lambda: outbox_clear(root, "police") and delivered(root, BURST), 600, f"{BURST} deliveries")
    _stop(paused, steady)
    assert "taken over by another node" in paused.text(), paused.text()  # it resumed, and wrote nothing more
    time.sleep(2 * LEASE)  # what the killed node was writing is stale once idle past two leases
    swept = run_once_process(root)  # a node's recovery removes it
    assert swept.returncode == 0, swept.stderr
    assert temp_files(root) == []
    assert _fenced(root) == []  # the killed node's fence folders too
    _exactly_once(root)
    for recipient in ROUTE:  # and every package opens, its manifest and payload one whole
        assert len(pull_raw(root, recipient, tmp_path / recipient)) == BURST


def _published(root: Path) -> list[str]:
    """Every file in the recipients' inboxes (what a recipient could see or pull: the claims' fence folders
    are the gateway's own, 0700)."""
    return sorted(f"{r}/{p.name}" for r in ROUTE for p in (root / "inbox" / r).iterdir() if p.name != FENCES)


def _fenced(root: Path) -> list[str]:
    """What is in the claims' fence folders, in every recipient's inbox."""
    return sorted(str(p.relative_to(root)) for r in ROUTE for p in (root / "inbox" / r / FENCES).rglob("*"))


def test_a_node_paused_before_its_link_publishes_nothing_once_its_submission_was_withdrawn(
    root: Path, tmp_path: Path
) -> None:
    staging = _signed(root, tmp_path / "one", ["police-paused-2026-10.csv"], 7000)
    # paused with its first payload written and fsynced, in the instant before it is linked into the inbox
    paused = Daemon(root, fault="deliver.payload.written@1:stop").ready()
    (name,) = _release(root, staging)
    wait_until(lambda: _stopped(paused.process.pid), 120, "the node to reach its pause")
    held = journal_rows(root, "SELECT id, status FROM submissions")
    assert [status for _, status in held] == ["sealing"] and _published(root) == []
    for path in (root / "outbox" / "police" / (name + ".sig"), root / "outbox" / "police" / name):
        path.unlink()  # the sender takes the file back while the node is paused
    time.sleep(2 * LEASE + 1)  # its lease runs out, and its session if it sat in a transaction
    other = Daemon(root).ready()  # its recovery takes the submission over, and abandons it: the file is gone
    wait_until(
        lambda: journal_rows(root, "SELECT status FROM submissions") == [("abandoned",)],
        120,
        "the submission abandoned",
    )
    os.kill(paused.process.pid, signal.SIGCONT)
    wait_until(lambda: "taken over by another node" in paused.text(), 60, "the resumed node to find itself fenced")
    _stop(paused, other)
    assert _published(root) == []  # no package, manifest or signature: nothing without a delivery behind it
    assert journal_rows(root, "SELECT COUNT(*) FROM deliveries WHERE status = 'delivered'") == [(0,)]
    assert "outcome=delivered" not in paused.text() + other.text()
    assert temp_files(root) == []
    assert _fenced(root) == []
    assert cli(root, "audit", "verify") == 0
