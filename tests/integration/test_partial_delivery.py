"""Partial recipients: a recipient the gateway cannot seal for (no active officer, no current password)
defers only its own delivery. The others get their packages; the file stays in its outbox (no plaintext
anywhere else) until the admin fixes the cause, and the next pass makes the delivery and clears it.
The sender is never blamed for the gateway's configuration."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.admin.oversight import status
from gateway.exchange.outcome import Delivered, Rejected
from gateway.exchange.process import process_once
from gateway.state.quality import QualityCounts
from gateway.state.root import Root
from tests.conftest import REPO
from tests.integration.daemon_harness import (
    GOOD,
    Daemon,
    audit_entries,
    cli,
    cli_output,
    copy_of,
    drop,
    make_template,
    outbox_clear,
    remove_root,
    wait_until,
)
from tests.integration.gpg_helpers import gpg, new_officer

pytestmark = pytest.mark.slow
NAME = "police-good-2026-10.csv"


@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    """Police routes to probation (OpenPGP, officers registered), council (OpenPGP, every officer
    revoked) and shelter (AES-ZIP, a new agency with no password in the vault yet)."""
    path = make_template('\n[agencies.shelter]\nname = "Demo Night Shelter"\nkind = "housing"\ndelivery = "aes-zip"\n')
    toml = path / "gateway.toml"
    toml.write_text(toml.read_text().replace('route = ["probation", "housing"]', 'route = ["probation", "council"]'))
    for officer in Root.open(path).registry.all("council"):
        assert cli(path, "officers", "revoke", officer.id, "--yes") == 0
    yield path
    remove_root(path)


@pytest.fixture
def root(template: Path) -> Iterator[Path]:
    with copy_of(template) as path:
        yield path


def _route(root: Path, *recipients: str) -> None:
    toml = root / "gateway.toml"
    route = ", ".join(f'"{r}"' for r in recipients)
    toml.write_text(re.sub(r'route = \["probation", "council"\]', f"route = [{route}]", toml.read_text()))


def packages(root: Path, agency: str) -> list[Path]:
    """The payloads in `agency`'s inbox (none if its folder was never made)."""
    inbox = root / "inbox" / agency
    return sorted(p for p in inbox.iterdir() if p.name.endswith((".csv.gpg", ".zip"))) if inbox.is_dir() else []


def _events(root: Path, event: str) -> list[dict[str, object]]:
    return [e for e in audit_entries(root) if e["event"] == event]


def _add_council_officer(root: Path) -> Path:
    """Register a new council DO whose key was made with plain gpg; return its GnuPG home."""
    home = root.parent / "council-new"
    fingerprint = new_officer(home, "Cora Council", "cora@council.invalid")
    key = root.parent / "cora.asc"
    key.write_bytes(gpg(home, "--armor", "--export", fingerprint).stdout)
    args = ["--agency", "council", "--role", "DO", "--name", "Cora Council", "--email", "cora@council.invalid"]
    assert cli(root, "officers", "add", *args, "--key", str(key), "--id", "council-cora") == 0
    return home


def _arrived(root: Path) -> str:
    """When the quality counts say the one submission of 2026-10 arrived."""
    (counted,) = QualityCounts(Root.open(root).journal).between("2026-10", "2026-10")
    return counted.received


def _needs(root: Path) -> list[str]:
    """What status says needs the admin now, bar agencies late for the month (which depends on the calendar)."""
    return [line for line in status(Root.open(root), datetime.now(UTC)).attention if "has not submitted" not in line]


def test_a_recipient_without_an_officer_waits_while_the_others_get_their_packages(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drop(root, "police", GOOD, NAME, "police-do")
    code, out = cli_output(root, capsys, "run", "--once")
    assert code == 0, out
    assert "to probation; deferred for council (council has no active officer to encrypt to" in out
    assert "the file stays in the outbox until then" in out
    assert [p.parent.name for p in packages(root, "probation")] == ["probation"]
    assert packages(root, "council") == []
    outbox = root / "outbox" / "police"
    assert sorted(p.name for p in outbox.iterdir() if p.is_file()) == [NAME, NAME + ".sig"]
    assert not (outbox / "rejected").exists()  # no report: the sender did nothing wrong
    (deferral,) = _events(root, "delivery.deferred")
    assert deferral["agency"] == "council" and deferral["sender"] == "police"
    assert deferral["reason"] == "no_active_officer" and "officers add --agency council" in str(deferral["fix"])
    assert [e["agency"] for e in _events(root, "package.delivered")] == ["probation"]
    assert _events(root, "submission.rejected") == [] and _events(root, "submission.delivered") == []

    # status shows which delivery waits, since when, why and the fix; it needs action: exit 1
    code, out = cli_output(root, capsys, "status")
    assert code == 1
    assert re.search(r"(?m)^  - police/police-good-2026-10\.csv to council since \S+: council has no active", out)
    assert "its delivery to council is deferred" in out
    code, text = cli_output(root, capsys, "status", "--json")
    assert code == 1
    health = json.loads(text)
    (deferred,) = health["deferred"]
    assert (deferred["agency"], deferred["file"], deferred["recipient"]) == ("police", NAME, "council")
    assert "officers add --agency council" in deferred["reason"] and deferred["file_in_outbox"] is True
    assert any("to council deferred since" in line for line in health["attention"])

    # taken again: nothing new is made or logged, and no attempt is counted towards quarantine
    for _ in range(4):
        code, out = cli_output(root, capsys, "run", "--once")
        assert code == 0 and "delivered, except to council" in out
    assert len(_events(root, "delivery.deferred")) == 1
    assert len(_events(root, "package.delivered")) == 1
    assert (outbox / NAME).exists()

    first = packages(root, "probation")[0].read_bytes()
    arrived = _arrived(root)
    home = _add_council_officer(root)
    time.sleep(1.1)  # the counts' time is to the second: going on later must not move when the file arrived
    code, out = cli_output(root, capsys, "run", "--once")
    assert code == 0, out
    assert "delivered police/police-good-2026-10.csv" in out and "to probation, council" in out
    assert "deferred" not in out
    assert outbox_clear(root, "police") and packages(root, "probation")[0].read_bytes() == first  # made once
    (package,) = packages(root, "council")
    decrypted = gpg(home, "--decrypt", str(package), check=False)  # (the gateway's signing key is not in home)
    assert b"DECRYPTION_OKAY" in decrypted.stderr and decrypted.stdout == GOOD.read_bytes()
    assert [e["agency"] for e in _events(root, "package.delivered")] == ["probation", "council"]
    (whole,) = _events(root, "submission.delivered")
    assert whole["recipients"] == ["probation", "council"]
    assert len(_events(root, "delivery.deferred")) == 1
    assert status(Root.open(root), datetime.now(UTC)).deferred == [] and _needs(root) == []
    assert cli(root, "audit", "verify") == 0 and _arrived(root) == arrived  # the scorecard's timeliness


def test_an_aes_zip_recipient_without_a_password_waits_for_one(
    root: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _route(root, "probation", "shelter")
    drop(root, "police", GOOD, NAME, "police-do")
    code, out = cli_output(root, capsys, "run", "--once")
    assert code == 0 and "deferred for shelter (shelter (AES-ZIP) has no current password in the vault" in out
    assert len(packages(root, "probation")) == 1 and packages(root, "shelter") == []
    (deferral,) = _events(root, "delivery.deferred")
    assert deferral["agency"] == "shelter" and deferral["reason"] == "no_password"
    assert (root / "outbox" / "police" / NAME).exists()

    secret = tmp_path / "shelter-password"
    secret.write_text("Correct-Horse-Battery-Staple-42\n")
    secret.chmod(0o600)
    assert cli(root, "keys", "import", "--agency", "shelter", "--password-file", str(secret)) == 0
    code, out = cli_output(root, capsys, "run", "--once")
    assert code == 0 and "to probation, shelter" in out, out
    assert outbox_clear(root, "police")
    assert [p.suffix for p in packages(root, "shelter")] == [".zip"]
    assert len(_events(root, "delivery.deferred")) == 1 and len(_events(root, "submission.delivered")) == 1


def test_a_late_retry_is_judged_by_when_the_bytes_arrived_but_must_still_verify(root: Path) -> None:
    drop(root, "police", GOOD, NAME, "police-do")
    gateway = Root.open(root)
    (first,) = process_once(gateway, datetime.now(UTC))
    assert isinstance(first, Delivered) and first.deferred
    _add_council_officer(root)
    other = GOOD.read_bytes().replace(b"Ashcroft", b"Ashcraft")
    drop(root, "police", other, "police-other-2026-10.csv", "police-do")
    later = datetime.now(UTC) + timedelta(days=5)  # beyond signature_max_age_hours = 72
    outcomes = {o.name: o for o in process_once(Root.open(root), later)}
    retried, fresh = outcomes[NAME], outcomes["police-other-2026-10.csv"]
    assert isinstance(retried, Delivered) and not retried.deferred
    assert [p.parent.name for p in retried.packages] == ["probation", "council"]
    # a signature first seen now is still held to its age
    assert isinstance(fresh, Rejected) and "older than the accepted 72 hours" in fresh.reasons[0]


def test_changed_bytes_under_the_name_of_a_partial_submission_are_a_submission_of_their_own(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drop(root, "police", GOOD, NAME, "police-do")
    assert cli(root, "run", "--once") == 0
    other = GOOD.read_bytes().replace(b"Ashcroft", b"Ashcraft")
    drop(root, "police", other, NAME, "police-do")  # replaced, signed again
    code, out = cli_output(root, capsys, "run", "--once")
    assert code == 0 and "deferred for council" in out
    assert len(packages(root, "probation")) == 2 and len(_events(root, "delivery.deferred")) == 2
    # the first submission's bytes left the outbox: the run's recovery closed its deferral, once
    (closed,) = _events(root, "delivery.abandoned")
    assert closed["recipients"] == ["council"] and closed["file"] == NAME
    (waiting,) = Root.open(root).journal.deferred()  # the second one waits
    assert waiting.recipient == "council" and waiting.submission != closed["submission"]
    code, out = cli_output(root, capsys, "status")
    assert code == 1 and "its delivery to council is deferred" in out and "left the outbox" not in out
    # the sender takes the file back: status says the deferral cannot be made; the next run closes it
    for name in (NAME + ".sig", NAME):
        (root / "outbox" / "police" / name).unlink()
    code, out = cli_output(root, capsys, "status")
    assert code == 1 and "its file has left the outbox: the next restart closes it" in out, out
    assert cli(root, "run", "--once") == 0
    assert len(_events(root, "delivery.abandoned")) == 2 and Root.open(root).journal.deferred() == []
    assert len(packages(root, "probation")) == 2  # what was delivered stands


def test_a_revoked_recipient_officer_after_a_partial_delivery_defers_only_what_is_not_made(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drop(root, "police", GOOD, NAME, "police-do")
    assert cli(root, "run", "--once") == 0
    for officer in Root.open(root).registry.all("probation"):  # probation's package is already made
        assert cli(root, "officers", "revoke", officer.id, "--yes") == 0
    _add_council_officer(root)
    code, out = cli_output(root, capsys, "run", "--once")
    assert code == 0 and "to probation, council" in out, out
    assert outbox_clear(root, "police")
    assert len(packages(root, "council")) == 1 and len(_events(root, "delivery.deferred")) == 1


def test_a_kill_between_deliveries_ends_with_each_made_once(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _route(root, "probation", "council", "housing")
    drop(root, "police", GOOD, NAME, "police-do")
    environment = os.environ | {"IOM_GATEWAY_UNSAFE_FAULT": "deliver.committed@1"}  # after probation's
    argv = [sys.executable, "-m", "gateway", "--root", str(root), "run", "--once"]
    killed = subprocess.run(argv, env=environment, cwd=REPO, capture_output=True, timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr.decode(errors="replace")
    assert cli(root, "run", "--once") == 0  # recovers, then defers council, delivers housing
    assert len(packages(root, "probation")) == 1 and len(packages(root, "housing")) == 1
    assert len(_events(root, "delivery.deferred")) == 1
    _add_council_officer(root)
    # killed again: after council's package is committed, before the file leaves the outbox
    environment["IOM_GATEWAY_UNSAFE_FAULT"] = "submission.delivered@1"
    killed = subprocess.run(argv, env=environment, cwd=REPO, capture_output=True, timeout=120, check=False)
    assert killed.returncode == -9, killed.stderr.decode(errors="replace")
    assert cli(root, "run", "--once") == 0
    assert outbox_clear(root, "police")
    for agency in ("probation", "council", "housing"):
        assert len(packages(root, agency)) == 1, agency
    assert [e["agency"] for e in _events(root, "package.delivered")] == ["probation", "housing", "council"]
    assert len(_events(root, "submission.delivered")) == 1 and len(_events(root, "delivery.deferred")) == 1
    assert cli(root, "audit", "verify") == 0


def test_the_daemon_alerts_once_rescans_quietly_and_delivers_once_an_officer_is_registered(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = Daemon(root).ready()
    try:
        drop(root, "police", GOOD, NAME, "police-do")
        daemon.wait_log("deferred delivery agency=police")
        wait_until(lambda: len(packages(root, "probation")) == 1, 30, "probation's package")
        time.sleep(5)  # rescan_seconds = 2: the file is looked at again, quietly
        assert daemon.text().count("deferred delivery agency=police") == 1
        assert re.search(r"level=ERROR.*deferred delivery", daemon.text()), daemon.text()
        assert len(_events(root, "delivery.deferred")) == 1
        code, out = cli_output(root, capsys, "status")  # beside the daemon: no lock is taken
        assert code == 1 and "to council since" in out
        _add_council_officer(root)
        wait_until(lambda: outbox_clear(root, "police"), 30, "council's delivery and the outbox cleared")
        assert len(packages(root, "council")) == 1 and len(packages(root, "probation")) == 1
    finally:
        assert daemon.stop() == 0, daemon.text()
    assert len(_events(root, "delivery.deferred")) == 1 and len(_events(root, "submission.delivered")) == 1
    assert "Traceback" not in daemon.text()
