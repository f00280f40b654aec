"""Completeness proven, not waited for: the daemon takes a closed pair at once when its signature
verifies over the file, and anything less waits for `settle_seconds` before it is judged."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon_harness import (
    GOOD,
    ROUTE,
    Daemon,
    audit_entries,
    copy_of,
    drop,
    home,
    outbox_clear,
    packages,
    wait_until,
)
from tests.integration.gpg_helpers import gpg, new_officer, stop_agent

SETTLE = 20  # long enough that a file taken before it is plainly an early take
pytestmark = pytest.mark.slow


def rows_1000(tag: int) -> bytes:
    """A valid police submission of 1,001 rows (the 7-row sample 143 times), its first row tagged."""
    header, data = GOOD.read_bytes().split(b"\n", 1)
    first = data.replace(b"Attends weekly appointments", f"Attends weekly appointments ({tag})".encode(), 1)
    return header + b"\n" + first + data * 142


def _settle(root: Path, seconds: int, watcher: str = "inotify") -> Path:
    toml = root / "gateway.toml"
    text = re.sub(r"(?m)^settle_seconds = [0-9]+", f"settle_seconds = {seconds}", toml.read_text())
    text = re.sub(r'(?m)^watcher = "[a-z]+"', f'watcher = "{watcher}"', text)
    toml.write_text(text)
    return root


@pytest.fixture
def root(routed_template: Path) -> Iterator[Path]:
    with copy_of(routed_template) as path:
        yield _settle(path, SETTLE)


def delivered(root: Path) -> bool:
    return all(list((root / "inbox" / r).glob("*.manifest.json.sig")) for r in ROUTE)


def rejected(root: Path) -> list[Path]:
    folder = root / "outbox" / "police" / "rejected"
    return sorted(folder.glob("*.report.txt")) if folder.is_dir() else []


def events(root: Path, prefix: str = "submission.") -> list[str]:
    return [str(e["event"]) for e in audit_entries(root) if str(e["event"]).startswith(prefix)]


def decrypted(root: Path) -> bytes:
    """The one OpenPGP package for probation, opened by its officer with plain gpg."""
    (package,) = [p for p in packages(root, "probation") if p.name.endswith(".csv.gpg")]
    return gpg(home(root, "probation-do"), "--decrypt", str(package)).stdout


def journal_digests(root: Path) -> set[str]:
    with sqlite3.connect(f"file:{root / 'state' / 'gateway.db'}?mode=ro", uri=True) as db:
        return {row[0] for row in db.execute("SELECT sha256 FROM submissions")}


def quarantined(root: Path) -> list[Path]:
    folder = root / "quarantine"
    return [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []


def sign_into(signer: Path, data: bytes, signature: Path, staging: Path) -> None:
    """A detached signature over `data` by the key in GnuPG home `signer`, made in `staging`, renamed to `signature`."""
    staging.mkdir(exist_ok=True)
    (staging / "data").write_bytes(data)
    gpg(signer, "--yes", "--output", str(staging / "data.sig"), "--detach-sign", str(staging / "data"))
    os.replace(staging / "data.sig", signature)


def test_a_signed_1000_row_file_is_delivered_long_before_the_settle_time(root: Path) -> None:
    data = rows_1000(1)
    daemon = Daemon(root).ready()
    dropped = time.monotonic()
    drop(root, "police", data, "police-early-2026-10.csv", "police-do")
    wait_until(lambda: delivered(root) and outbox_clear(root, "police"), SETTLE - 5, "an early delivery")
    assert time.monotonic() - dropped < SETTLE, "delivered before settle_seconds elapsed"
    assert daemon.stop() == 0
    assert decrypted(root) == data
    log = daemon.text()
    assert "event=processed agency=police file='police-early-2026-10.csv' outcome=delivered" in log
    timing = re.search(r"event=timing agency=police file='police-early-2026-10.csv' outcome=delivered (.*)", log)
    assert timing is not None, log
    assert re.fullmatch(r"settle_ms=\d+ verify_ms=\d+ validate_ms=\d+ seal_ms=\d+ deliver_ms=\d+", timing[1])
    assert int(re.findall(r"settle_ms=(\d+)", timing[1])[0]) < SETTLE * 1000
    assert events(root) == ["submission.delivered"]


def test_a_half_written_csv_beside_its_full_signature_waits_and_is_delivered_once_when_complete(
    root: Path, tmp_path: Path
) -> None:
    data = rows_1000(2)
    name = "police-half-2026-10.csv"
    outbox = root / "outbox" / "police"
    daemon = Daemon(root).ready()
    sign_into(home(root, "police-do"), data, outbox / f"{name}.sig", tmp_path / "s")
    half = data[: len(data) // 2]
    (outbox / name).write_bytes(half)  # written and closed: its writer is not done, but nothing says so
    daemon.wait_log(f"event=waiting agency=police file={name!r} reason='its signature does not verify (yet)")
    time.sleep(1.0)  # anything it would do about the half file is done by now
    assert rejected(root) == [] and quarantined(root) == []
    assert events(root) == []
    assert packages(root, "probation") == [] and (outbox / name).exists()
    with (outbox / name).open("ab") as writer:  # the rest, then closed
        writer.write(data[len(half) :])
    wait_until(lambda: delivered(root) and outbox_clear(root, "police"), SETTLE - 5, "an early delivery")
    time.sleep(1.0)
    assert daemon.stop() == 0
    for recipient in ROUTE:
        assert len(packages(root, recipient)) == 1
    assert decrypted(root) == data
    assert rejected(root) == []
    assert events(root) == ["submission.delivered"]
    assert "outcome=rejected" not in daemon.text()
    assert len(journal_digests(root)) == 1  # the half file never made a journal attempt


def test_a_signature_over_other_bytes_is_refused_only_once_settled_while_a_good_file_goes_at_once(
    routed_template: Path, tmp_path: Path
) -> None:
    settle = 6
    with copy_of(routed_template) as root:
        _settle(root, settle)
        outbox = root / "outbox" / "police"
        daemon = Daemon(root).ready()
        bad = "police-bad-2026-10.csv"
        # a signature for other bytes than the CSV beside it
        sign_into(home(root, "police-do"), rows_1000(8), outbox / f"{bad}.sig", tmp_path / "s")
        (outbox / bad).write_bytes(rows_1000(3))
        dropped = time.monotonic()
        good = drop(root, "police", rows_1000(4), "police-good-2026-10.csv", "police-do")
        wait_until(lambda: delivered(root) and not good.exists(), settle - 2, "the good file's early delivery")
        assert rejected(root) == [] and (outbox / bad).exists()
        assert events(root) == ["submission.delivered"]
        wait_until(lambda: rejected(root) != [], 30, "the bad file's refusal once settled")
        assert time.monotonic() - dropped >= settle, "refused before settle_seconds elapsed"
        time.sleep(1.0)
        assert daemon.stop() == 0
        (report,) = rejected(root)
        assert "does not verify" in report.read_text()
        assert sorted(events(root)) == ["submission.delivered", "submission.rejected"]


def test_a_valid_signature_by_a_key_no_officer_holds_is_refused_at_once(root: Path, tmp_path: Path) -> None:
    stranger = root.parent / "k"  # gpg-agent's socket path must stay short
    fingerprint = new_officer(stranger, "Not An Officer", "stranger@demo.invalid")
    try:
        # the key is in the gateway's keyring (as a retired key stays), but no registered officer holds it
        gpg(root / "keys" / "gnupg", "--import", stdin=gpg(stranger, "--export", fingerprint).stdout)
        daemon = Daemon(root).ready()
        name = "police-stranger-2026-10.csv"
        outbox = root / "outbox" / "police"
        dropped = time.monotonic()
        sign_into(stranger, rows_1000(5), outbox / f"{name}.sig", tmp_path / "s")
        os.replace(tmp_path / "s" / "data", outbox / name)
        wait_until(lambda: rejected(root) != [], SETTLE - 5, "the refusal")
        assert time.monotonic() - dropped < SETTLE, "refused before settle_seconds elapsed"
        time.sleep(1.0)
        assert daemon.stop() == 0
    finally:
        stop_agent(stranger)
    (report,) = rejected(root)
    assert "belongs to no registered officer" in report.read_text()
    assert events(root) == ["submission.rejected"]
    assert packages(root, "probation") == []


def test_the_polling_watcher_sees_no_closes_and_still_waits_for_the_settle_time(routed_template: Path) -> None:
    settle = 4
    with copy_of(routed_template) as root:
        _settle(root, settle, watcher="polling")
        daemon = Daemon(root).ready()
        dropped = time.monotonic()
        drop(root, "police", rows_1000(6), "police-polled-2026-10.csv", "police-do")
        wait_until(lambda: delivered(root), 30, "the delivery")
        assert time.monotonic() - dropped >= settle, "delivered before settle_seconds elapsed"
        assert daemon.stop() == 0
        assert "event=waiting" not in daemon.text()  # no early take was tried


def test_a_burst_larger_than_the_worker_pool_is_taken_early_file_by_file(root: Path) -> None:
    # two workers and six files: four of them find every worker busy when they arrive; each must
    # still be taken early as soon as a worker is free, not only once it has settled
    toml = root / "gateway.toml"
    toml.write_text(toml.read_text().replace("[vault]", "workers = 2\n\n[vault]", 1))
    names = [f"police-burst{i}-2026-10.csv" for i in range(6)]
    daemon = Daemon(root).ready()
    dropped = time.monotonic()
    for i, name in enumerate(names):
        drop(root, "police", rows_1000(10 + i), name, "police-do")
    wait_until(
        lambda: all(len(packages(root, r)) == len(names) for r in ROUTE) and outbox_clear(root, "police"),
        SETTLE - 5,
        "six early deliveries",
    )
    assert time.monotonic() - dropped < SETTLE, "delivered before settle_seconds elapsed"
    assert daemon.stop() == 0
    log = daemon.text()
    for name in names:
        timing = re.search(rf"event=timing agency=police file='{name}' outcome=delivered settle_ms=(\d+)", log)
        assert timing is not None, log
        assert int(timing[1]) < SETTLE * 1000
    assert events(root) == ["submission.delivered"] * len(names)
