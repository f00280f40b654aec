"""The real daemon keeps the agencies' folders in step with gateway.toml: made at start and on SIGHUP,
and a folder of an agency no longer there that holds files is warned about (nothing would ever take it)."""

from __future__ import annotations

import re
import signal
import stat
from pathlib import Path

import pytest

from tests.integration.daemon_harness import GOOD, Daemon, cli, drop, home, outbox_clear, packages, wait_until
from tests.integration.gpg_helpers import gpg, new_officer

pytestmark = pytest.mark.slow

FIRE = '\n[agencies.fire]\nname = "Demo Fire and Rescue"\nkind = "police"\nroute = ["probation"]\n'


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_an_agency_added_by_sighup_gets_its_folders_and_its_files_are_delivered(routed_root: Path) -> None:
    root = routed_root
    daemon = Daemon(root).ready()
    toml = root / "gateway.toml"
    toml.write_text(toml.read_text() + FIRE)
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_log("event=reloaded")
    for kind in ("outbox", "inbox", "quarantine"):
        daemon.wait_log(f"event=made folder='{kind}/fire'")
        assert (root / kind / "fire").is_dir() and _mode(root / kind / "fire") == 0o700
    # the new agency's officer registers, signs with plain gpg and drops a file: the daemon delivers it
    fingerprint = new_officer(home(root, "fire-do"), "Fire DO", "fire-do@example.invalid")
    public = root.parent / "fire-do.asc"
    public.write_bytes(gpg(home(root, "fire-do"), "--armor", "--export", fingerprint).stdout)
    added = ("officers", "add", "--agency", "fire", "--role", "DO", "--name", "Fire DO")
    assert cli(root, *added, "--email", "fire-do@example.invalid", "--key", str(public), "--id", "fire-do") == 0
    drop(root, "fire", GOOD, "fire-good-2026-10.csv", "fire-do")
    wait_until(
        lambda: any("__fire__" in p.name for p in packages(root, "probation")) and outbox_clear(root, "fire"),
        30,
        "the new agency's file delivered to probation",
    )
    assert daemon.stop() == 0
    assert "level=ERROR" not in daemon.text()


def test_missing_folders_are_made_at_start_and_an_orphan_with_files_is_warned_about(routed_root: Path) -> None:
    root = routed_root
    (root / "inbox" / "council").rmdir()
    (root / "quarantine" / "treatment").rmdir()
    daemon = Daemon(root).ready()
    daemon.wait_log("event=made folder='inbox/council'")
    daemon.wait_log("event=made folder='quarantine/treatment'")
    assert (root / "inbox" / "council").is_dir() and (root / "quarantine" / "treatment").is_dir()
    assert "orphaned" not in daemon.text()  # every folder belongs to an agency of gateway.toml

    # yos leaves the partnership while a file waits in its outbox: after SIGHUP, that file is stranded
    (root / "outbox" / "yos" / "yos-2026-10.csv").write_bytes(b"forename\r\n")
    toml = root / "gateway.toml"
    text = toml.read_text()
    without_yos = re.sub(r'(?m)^\[agencies\.yos\]\nname = "[^"]*"\nkind = "yos"\n', "", text)
    assert without_yos != text
    toml.write_text(without_yos)
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_log("event=orphaned folder='outbox/yos' files=1")
    line = next(line for line in daemon.text().splitlines() if "event=orphaned folder='outbox/yos'" in line)
    assert "level=WARNING" in line and "agency 'yos' is not in gateway.toml" in line
    assert "add the agency back" in line
    # an empty orphan (yos's inbox and quarantine hold nothing) is no cause for a warning
    assert "folder='inbox/yos'" not in daemon.text()
    assert (root / "outbox" / "yos" / "yos-2026-10.csv").exists()  # left where it is: never taken
    assert daemon.stop() == 0
