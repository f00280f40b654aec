"""Finding 3: no file stops the daemon. Each hostile drop becomes an outcome for that file alone
(ignored with a logged reason, or rejected with a report), and a good file from another agency,
dropped after it, is still delivered by the same daemon."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.daemon_harness import Daemon, drop, home, run_once_process, wait_until
from tests.integration.gpg_helpers import gpg

pytestmark = [pytest.mark.slow, pytest.mark.both_journals]
PROBATION_GOOD = b"Forename,Surname,Gender,Date of Birth\r\nAmir,Khan,M,01/02/1990\r\nZo\xc3\xab,Byrne,F,03/04/1985\r\n"
INVALID = b"Forename,Surname,Gender,Date of Birth\r\nAmir,Khan,X,31/02/1990\r\n"


def _signed(root: Path, data: bytes, *, armor: bool = False) -> tuple[bytes, bytes]:
    staging = root.parent / "sign-staging.csv"
    staging.write_bytes(data)
    suffix = ".asc" if armor else ".sig"
    flags = ["--armor"] if armor else []
    gpg(home(root, "police-do"), "--yes", *flags, "--output", str(staging) + suffix, "--detach-sign", str(staging))
    return data, Path(str(staging) + suffix).read_bytes()


def _put(folder: Path, name: bytes, data: bytes) -> None:
    """Write a file whose name may not be valid UTF-8 (bytes paths), by rename."""
    staging = os.fsencode(folder) + b"/.staging"
    with open(staging, "wb") as handle:
        handle.write(data)
    os.rename(staging, os.fsencode(folder) + b"/" + name)


def _non_utf8_name(root: Path) -> str:
    outbox = root / "outbox" / "police"
    data, signature = _signed(root, INVALID)
    _put(outbox, b"bad-\xff\xfe-2026-10.csv.sig", signature)
    _put(outbox, b"bad-\xff\xfe-2026-10.csv", data)
    return "bad-"


def _rejected_is_a_symlink(root: Path) -> str:
    outbox = root / "outbox" / "police"
    elsewhere = root.parent / "elsewhere"
    elsewhere.mkdir()
    (outbox / "rejected").symlink_to(elsewhere)
    data, signature = _signed(root, INVALID)
    _put(outbox, b"invalid-2026-10.csv.sig", signature)
    _put(outbox, b"invalid-2026-10.csv", data)
    return "invalid-2026-10.csv"


def _asc_with_trailing_bytes(root: Path) -> str:
    outbox = root / "outbox" / "police"
    data, signature = _signed(root, PROBATION_GOOD.replace(b"Amir", b"Imran"), armor=True)  # valid: it gets sealed
    _put(outbox, b"trailing-2026-10.csv.asc", signature + b"\xff\xfe\x80 not ascii\n")
    _put(outbox, b"trailing-2026-10.csv", data)
    return "trailing-2026-10.csv"


def _name_too_long_to_report(root: Path) -> str:
    outbox = root / "outbox" / "police"
    name = b"x" * 239 + b"-2026-10.csv"  # 251 bytes, its .sig 255: a report named after it cannot exist
    data, signature = _signed(root, INVALID)
    _put(outbox, name + b".sig", signature)
    _put(outbox, name, data)
    return "xxxxxxxx"


def _outbox_is_a_symlink(root: Path) -> str:
    outside = root.parent / "outside-the-root"
    outside.mkdir()
    data, signature = _signed(root, PROBATION_GOOD.replace(b"Amir", b"Omar"))
    (outside / "outside-2026-10.csv.sig").write_bytes(signature)
    (outside / "outside-2026-10.csv").write_bytes(data)
    police = root / "outbox" / "police"
    for child in police.iterdir():
        if child.is_dir():
            child.rmdir()
    police.rmdir()
    police.symlink_to(outside)
    return "police"


HOSTILE: dict[str, Callable[[Path], str]] = {
    "name not valid UTF-8": _non_utf8_name,
    "rejected/ replaced by a symlink": _rejected_is_a_symlink,
    ".asc with trailing non-ASCII bytes": _asc_with_trailing_bytes,
    "a name too long for its report": _name_too_long_to_report,
    "outbox/<agency> replaced by a symlink": _outbox_is_a_symlink,
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_file_is_an_outcome_for_itself_and_the_daemon_goes_on(routed_root: Path, case: str) -> None:
    (routed_root / "outbox" / "police").mkdir(mode=0o700, exist_ok=True)
    (routed_root / "outbox" / "probation").mkdir(mode=0o700, exist_ok=True)
    needle = HOSTILE[case](routed_root)
    daemon = Daemon(routed_root).ready()
    try:
        drop(routed_root, "probation", PROBATION_GOOD, "good-2026-10.csv", "probation-do")
        wait_until(  # the good file may go first: its signature proves it complete, the others settle
            lambda: (
                (any((routed_root / "inbox" / "police").glob("*__probation__*.csv.gpg")) and needle in daemon.text())
                or daemon.process.poll() is not None
            ),
            60,
            "probation's good file in police's inbox, and the hostile one named in the log",
        )
        assert daemon.process.poll() is None, f"the daemon stopped on a {case}:\n{daemon.text()}"
        assert any((routed_root / "inbox" / "police").glob("*__probation__*.csv.gpg"))
    finally:
        assert daemon.stop() == 0, daemon.text()
    log = daemon.text()
    assert "Traceback" not in log, log
    assert needle in log, f"the {case} was not named in the log:\n{log}"


def test_an_outbox_symlink_is_never_followed(routed_root: Path) -> None:
    _outbox_is_a_symlink(routed_root)
    outside = routed_root.parent / "outside-the-root"
    before = sorted(p.name for p in outside.iterdir())
    result = run_once_process(routed_root)
    assert sorted(p.name for p in outside.iterdir()) == before, "files outside the root were processed"
    assert not list((routed_root / "inbox").rglob("*__police__*"))
    assert "symbolic link" in result.stderr + result.stdout


def test_a_name_that_cannot_carry_a_report_is_still_rejected_with_one(routed_root: Path) -> None:
    _name_too_long_to_report(routed_root)
    result = run_once_process(routed_root)
    assert result.returncode == 1, result.stdout + result.stderr
    reports = list((routed_root / "outbox" / "police" / "rejected").glob("*.report.txt"))
    assert len(reports) == 1 and len(reports[0].name.encode()) <= 255
    assert not [p for p in (routed_root / "outbox" / "police").iterdir() if p.is_file()]


def test_names_are_printed_with_control_characters_escaped(routed_root: Path) -> None:
    outbox = routed_root / "outbox" / "police"
    outbox.mkdir(mode=0o700, exist_ok=True)
    _put(outbox, b"evil\x1b]0;owned\x07\x1b[2J\nforged line-2026-10.csv", INVALID)
    result = run_once_process(routed_root)
    shown = result.stdout + result.stderr
    assert "evil" in shown
    assert "\x1b" not in shown and "\x07" not in shown
    assert not any(line.startswith("forged line") for line in shown.splitlines())
