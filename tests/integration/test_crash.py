"""The crash matrix: SIGKILL the real daemon at many points; after a restart every submission is
delivered exactly once to each recipient, or quarantined; the audit log verifies; no temp file is left.
On both journals: state/gateway.db, and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.daemon_harness import (
    GOOD,
    INVALID,
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

pytestmark = [pytest.mark.slow, pytest.mark.both_journals]
KILLED = -9


@pytest.fixture
def root(routed_root: Path) -> Path:
    return routed_root


def _statuses(root: Path) -> dict[str, str]:
    return {str(name): str(status) for name, status in journal_rows(root, "SELECT name, status FROM submissions")}


def _crash_then_recover(root: Path, fault: str, agency: str) -> None:
    crashed = Daemon(root, fault=fault)
    assert crashed.exited() == KILLED, f"fault {fault!r} was never reached:\n{crashed.text()}"
    survivor = Daemon(root).ready()
    wait_until(
        lambda: outbox_clear(root, agency) and set(_statuses(root).values()) <= {"done", "rejected"},
        60,
        f"the restarted daemon to finish: {survivor.text()}",
    )
    assert survivor.stop() == 0, survivor.text()
    assert "Traceback" not in crashed.text() + survivor.text()


def _assert_audit_intact(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cli(root, "audit", "verify") == 0, capsys.readouterr().out
    assert temp_files(root) == []


DELIVERY_POINTS = [
    "journal.sealing",  # verdict fixed, nothing written
    "deliver.payload.written",  # first payload written to its temp name, not yet linked
    "deliver.payload.written@2",  # second recipient's payload in temp
    "deliver.payload",  # first payload published, manifest not yet
    "deliver.manifest",  # manifest and signature published, delivery not committed
    "deliver.committed",  # committed in the journal, audit event staged but not appended
    "deliver.committed@2",
    "audit.append.partial@2",  # half of the first package.delivered line written
    "audit.append.partial@4",  # half of submission.delivered written
    "audit.append.written@3",  # appended and fsynced, head not yet updated
    "submission.delivered",  # every delivery committed, outbox copy not yet removed
    "finish.removed",  # outbox copy removed, journal not yet closed
]


@pytest.mark.parametrize("fault", DELIVERY_POINTS)
def test_a_kill_while_delivering_ends_in_exactly_one_package_per_recipient(
    root: Path, fault: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drop(root, "police", GOOD, GOOD.name, "police-do")
    _crash_then_recover(root, fault, "police")
    for recipient in ROUTE:
        assert len(packages(root, recipient)) == 1, f"{recipient}: {packages(root, recipient)}"
        assert len(list((root / "inbox" / recipient).glob("*.manifest.json.sig"))) == 1
        assert pull_raw(root, recipient, tmp_path / recipient) == [GOOD.read_bytes()]
    entries = audit_entries(root)
    delivered = [e for e in entries if e["event"] == "package.delivered"]
    assert sorted(str(e["agency"]) for e in delivered) == sorted(ROUTE)
    assert [e["event"] for e in entries].count("submission.delivered") == 1
    assert _statuses(root) == {GOOD.name: "done"}
    _assert_audit_intact(root, capsys)


REJECTION_POINTS = ["reject.quarantined", "reject.removed", "audit.append.partial@2"]


@pytest.mark.parametrize("fault", REJECTION_POINTS)
def test_a_kill_while_rejecting_ends_quarantined_once_with_its_report(
    root: Path, fault: str, capsys: pytest.CaptureFixture[str]
) -> None:
    drop(root, "probation", INVALID, INVALID.name, "probation-do")
    _crash_then_recover(root, fault, "probation")
    assert len(list((root / "quarantine" / "probation").glob("*.csv.*.gpg"))) == 1
    assert (root / "outbox" / "probation" / "rejected" / "probation-invalid-rows-2026-10.report.txt").is_file()
    assert not any((root / "inbox").rglob("*__probation__*"))
    assert [e["event"] for e in audit_entries(root)].count("submission.rejected") == 1
    assert _statuses(root) == {INVALID.name: "rejected"}
    _assert_audit_intact(root, capsys)


def test_a_file_that_kills_the_gateway_every_time_is_quarantined_not_retried_forever(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drop(root, "police", GOOD, GOOD.name, "police-do")
    for _ in range(3):
        assert Daemon(root, fault="journal.sealing").exited() == KILLED
    last = Daemon(root, fault="journal.sealing").ready()  # still armed: the fourth attempt must not reach it
    wait_until(lambda: outbox_clear(root, "police"), 30, "the file to be quarantined")
    assert last.stop() == 0, last.text()
    assert _statuses(root) == {GOOD.name: "rejected"}
    report = (root / "outbox" / "police" / "rejected" / "police-good-2026-10.report.txt").read_text()
    assert "stopped the gateway 3 times" in report
    assert not list((root / "inbox" / "probation").iterdir())  # what the killed attempts started was withdrawn
    _assert_audit_intact(root, capsys)
