"""The daemon as a real subprocess: files taken only when complete, hostile timing, signals, a full disk."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.daemon_harness import (
    GOOD,
    ROUTE,
    Daemon,
    audit_entries,
    cli,
    drop,
    home,
    outbox_clear,
    packages,
    pull_raw,
    temp_files,
    wait_until,
)
from tests.integration.gpg_helpers import gpg

SURNAMES = ["Ashcroft", "O'Connell", "Smith-Jones", "Chaudhry", "Adeyemi", "Whitfield", "Mistry", "Byrne"]


@pytest.fixture
def root(routed_root: Path) -> Path:
    return routed_root


def variant(number: int) -> bytes:
    """A valid submission with different bytes (identical bytes would be a duplicate)."""
    return GOOD.read_bytes().replace(
        b"Attends weekly appointments", f"Attends weekly appointments ({number})".encode(), 1
    )


def _signed(root: Path, staging: Path, names: list[str], first: int) -> Path:
    """Distinct valid files, each signed by police-do with plain gpg, waiting in `staging`."""
    staging.mkdir()
    for number, name in enumerate(names, first):
        (staging / name).write_bytes(variant(number))
        gpg(home(root, "police-do"), "--yes", "--output", f"{staging / name}.sig", "--detach-sign", str(staging / name))
    return staging


def _release(root: Path, staging: Path) -> list[str]:
    """Rename every staged pair into police's outbox as fast as possible, signature first."""
    names = sorted(p.name for p in staging.glob("*.csv"))
    for name in names:
        os.replace(staging / (name + ".sig"), root / "outbox" / "police" / (name + ".sig"))
        os.replace(staging / name, root / "outbox" / "police" / name)
    return names


def delivered(root: Path, count: int = 1) -> bool:
    return all(len(list((root / "inbox" / r).glob("*.manifest.json.sig"))) >= count for r in ROUTE)


def test_a_dropped_file_is_delivered_and_sigterm_exits_0_promptly(root: Path, tmp_path: Path) -> None:
    daemon = Daemon(root).ready()
    drop(root, "police", GOOD, GOOD.name, "police-do")
    wait_until(lambda: delivered(root) and outbox_clear(root, "police"), 30, "the delivery")
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 5
    log = daemon.text()
    assert "event=processed agency=police file='police-good-2026-10.csv' outcome=delivered" in log
    assert "event=stopped processed=1 errors=0" in log
    assert all(line.startswith("time=") and " level=" in line for line in log.splitlines())
    assert not any(name in log for name in SURNAMES)
    assert pull_raw(root, "probation", tmp_path / "p") == [GOOD.read_bytes()]


def test_a_slow_writer_is_waited_for_even_across_pauses_longer_than_the_settle_time(root: Path, tmp_path: Path) -> None:
    data = variant(1)
    name = "police-slow-2026-10.csv"
    staging = tmp_path / name
    staging.write_bytes(data)
    signature = root / "outbox" / "police" / (name + ".sig")
    gpg(home(root, "police-do"), "--yes", "--output", str(signature), "--detach-sign", str(staging))
    daemon = Daemon(root).ready()
    chunks = [data[i : i + len(data) // 4 + 1] for i in range(0, len(data), len(data) // 4 + 1)]
    with (root / "outbox" / "police" / name).open("wb") as writer:
        for chunk in chunks:
            writer.write(chunk)
            writer.flush()
            time.sleep(1.5)  # settle_seconds is 1: only the open file tells the daemon to wait
            assert not list((root / "inbox" / "probation").iterdir()), "taken before the writer closed it"
    wait_until(lambda: delivered(root) and outbox_clear(root, "police"), 30, "the delivery")
    assert daemon.stop() == 0
    assert "outcome=rejected" not in daemon.text()
    assert pull_raw(root, "probation", tmp_path / "p") == [data]


def test_a_file_replaced_while_settling_is_delivered_once_as_its_final_bytes(root: Path, tmp_path: Path) -> None:
    daemon = Daemon(root).ready()
    first, final = variant(2), variant(3)
    name = "police-replaced-2026-10.csv"
    # a first export whose signature is for other bytes: nothing proves it complete, so it settles
    # (a file whose signature verifies is taken at once: it could not be replaced while settling)
    (tmp_path / name).write_bytes(variant(9))
    outbox = root / "outbox" / "police"
    gpg(
        home(root, "police-do"), "--yes", "--output", str(outbox / f"{name}.sig"), "--detach-sign", str(tmp_path / name)
    )
    (outbox / name).write_bytes(first)
    drop(root, "police", final, name, "police-do")  # renamed over both at once
    wait_until(lambda: delivered(root) and outbox_clear(root, "police"), 30, "the delivery")
    time.sleep(1.5)  # anything else would have been delivered by now
    assert daemon.stop() == 0
    for recipient in ROUTE:
        assert len(packages(root, recipient)) == 1
    assert pull_raw(root, "probation", tmp_path / "p") == [final]
    assert "outcome=rejected" not in daemon.text()


def test_a_file_deleted_before_it_is_taken_is_nothing_lost_and_the_daemon_goes_on(root: Path, tmp_path: Path) -> None:
    daemon = Daemon(root).ready()
    gone = drop(root, "police", variant(4), "police-gone-2026-10.csv", "police-do")
    gone.unlink()
    drop(root, "police", variant(5), "police-next-2026-10.csv", "police-do")
    wait_until(lambda: delivered(root), 30, "the next file's delivery")
    daemon.wait_log("police-gone-2026-10.csv.sig' reason='a signature without its CSV")  # after pairing_timeout
    assert daemon.stop() == 0
    assert pull_raw(root, "probation", tmp_path / "p") == [variant(5)]
    assert (root / "outbox" / "police" / "police-gone-2026-10.csv.sig").exists()  # left for the agency to see


def test_the_outbox_folder_removed_and_recreated_is_watched_again(root: Path, tmp_path: Path) -> None:
    daemon = Daemon(root).ready()
    shutil.rmtree(root / "outbox" / "police")
    time.sleep(0.3)
    (root / "outbox" / "police").mkdir(mode=0o700)
    drop(root, "police", GOOD, GOOD.name, "police-do")
    wait_until(lambda: delivered(root) and outbox_clear(root, "police"), 30, "the delivery")
    assert daemon.stop() == 0
    assert pull_raw(root, "probation", tmp_path / "p") == [GOOD.read_bytes()]


def test_a_full_disk_defers_the_file_and_delivers_it_once_when_space_returns(root: Path, tmp_path: Path) -> None:
    daemon = Daemon(root, fault="deliver.payload.written:enospc").ready()
    drop(root, "police", GOOD, GOOD.name, "police-do")
    daemon.wait_log("errno=ENOSPC")
    assert (root / "outbox" / "police" / GOOD.name).exists()  # nothing lost
    wait_until(lambda: delivered(root) and outbox_clear(root, "police"), 30, "the retry after the rescan")
    assert daemon.stop() == 0
    assert "event=deferred agency=police file='police-good-2026-10.csv' errno=ENOSPC" in daemon.text()
    for recipient in ROUTE:
        assert len(packages(root, recipient)) == 1
    assert temp_files(root) == []
    assert pull_raw(root, "probation", tmp_path / "p") == [GOOD.read_bytes()]


def _mount_tiny_tmpfs(folder: Path) -> bool:
    if os.geteuid() != 0:
        return False
    if shutil.which("mount") is None:  # a missing tool is a missing install step, never a skip
        pytest.fail("mount is missing: install mount (./scripts/test does)")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=False, capture_output=True
    )
    return result.returncode == 0


def test_a_really_full_disk_in_an_inbox_defers_then_delivers(root: Path) -> None:
    folder = root / "inbox" / "probation"
    if not _mount_tiny_tmpfs(folder):
        pytest.skip("needs root and mount for a 64 KiB tmpfs; the injected-ENOSPC test covers the same path")
    try:
        filler = folder / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with pytest.raises(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        daemon = Daemon(root).ready()
        drop(root, "police", GOOD, GOOD.name, "police-do")
        daemon.wait_log("errno=ENOSPC")
        assert (root / "outbox" / "police" / GOOD.name).exists()
        filler.unlink()
        wait_until(lambda: delivered(root) and outbox_clear(root, "police"), 30, "the retry")
        assert daemon.stop() == 0
        assert len(packages(root, "probation")) == 1
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_sighup_reloads_the_config_and_a_bad_one_is_refused_and_the_old_kept(root: Path) -> None:
    daemon = Daemon(root).ready()
    toml = root / "gateway.toml"
    good = toml.read_text()
    toml.write_text(good + "\n[nonsense]\n")
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_log("event=reload refused")
    assert "unknown section [nonsense]" in daemon.text()
    drop(root, "police", GOOD, GOOD.name, "police-do")
    wait_until(lambda: delivered(root), 30, "a delivery under the old config")
    toml.write_text(good)
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_log("event=reloaded")
    assert daemon.process.poll() is None
    assert daemon.stop() == 0


def test_the_polling_watcher_for_network_shares_delivers_too(root: Path) -> None:
    toml = root / "gateway.toml"
    toml.write_text(toml.read_text().replace('watcher = "inotify"', 'watcher = "polling"'))
    daemon = Daemon(root).ready()
    assert "watcher=polling" in daemon.text()
    drop(root, "police", GOOD, GOOD.name, "police-do")
    wait_until(lambda: delivered(root) and outbox_clear(root, "police"), 30, "the delivery")
    assert daemon.stop() == 0


def test_a_second_daemon_on_the_same_root_is_refused(root: Path) -> None:
    first = Daemon(root).ready()
    second = Daemon(root)
    assert second.exited(30) == 1
    assert "already working on" in second.text() and "Traceback" not in second.text()
    assert first.stop() == 0


def test_files_there_before_start_are_taken_by_the_start_up_scan(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drop(root, "police", GOOD, GOOD.name, "police-do")
    daemon = Daemon(root).ready()
    wait_until(lambda: delivered(root) and outbox_clear(root, "police"), 30, "the delivery")
    assert daemon.stop() == 0
    assert [e["event"] for e in audit_entries(root)].count("audit.checkpoint") >= 1  # signed at the clean stop
    capsys.readouterr()
    assert cli(root, "audit", "verify") == 0


@pytest.mark.slow
def test_a_burst_of_500_files_is_delivered_exactly_once_each(root: Path, tmp_path: Path) -> None:
    staging = _signed(root, tmp_path / "burst", [f"police-burst-{n:03d}-2026-10.csv" for n in range(500)], 100)
    daemon = Daemon(root).ready()
    assert len(_release(root, staging)) == 500
    wait_until(lambda: outbox_clear(root, "police") and delivered(root, 500), 600, "500 deliveries")
    assert daemon.stop(30) == 0
    for recipient in ROUTE:
        assert len(packages(root, recipient)) == 500
    submissions = [e for e in audit_entries(root) if e["event"] == "submission.delivered"]
    assert len(submissions) == 500 and len({e["submission"] for e in submissions}) == 500


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_mid_queue_finishes_the_file_in_hand_and_the_rest_wait(
    root: Path, stop: signal.Signals, capsys: pytest.CaptureFixture[str]
) -> None:
    staging = _signed(root, root.parent / "queue", [f"police-queue-{n:02d}-2026-10.csv" for n in range(12)], 700)
    daemon = Daemon(root).ready()
    names = _release(root, staging)
    wait_until(lambda: delivered(root), 30, "the first delivery")
    daemon.process.send_signal(stop)
    started = time.monotonic()
    assert daemon.exited(10) == 0
    assert time.monotonic() - started < 5
    left = sorted(p.name for p in (root / "outbox" / "police").glob("*.csv"))
    done = len(names) - len(left)
    assert 0 < done < len(names), "the signal should land mid-queue"
    for recipient in ROUTE:  # every package taken was finished whole; none was started for the rest
        assert len(packages(root, recipient)) == done
        assert len(list((root / "inbox" / recipient).glob("*.manifest.json.sig"))) == done
    assert temp_files(root) == []
    survivor = Daemon(root).ready()
    wait_until(lambda: outbox_clear(root, "police") and delivered(root, len(names)), 60, "the rest")
    assert survivor.stop() == 0
    for recipient in ROUTE:
        assert len(packages(root, recipient)) == len(names)
    capsys.readouterr()
    assert cli(root, "audit", "verify") == 0


def test_files_appearing_and_vanishing_constantly_never_stop_the_daemon(root: Path, tmp_path: Path) -> None:
    daemon = Daemon(root).ready()
    junk = root / "outbox" / "police" / "junk.txt"
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # an export tool creating and deleting a visible file
        junk.write_text("x")
        junk.unlink()
    drop(root, "police", GOOD, GOOD.name, "police-do")
    wait_until(lambda: delivered(root) and outbox_clear(root, "police"), 30, "the delivery")
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.text() and "level=ERROR" not in daemon.text()
