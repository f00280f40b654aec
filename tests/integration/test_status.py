"""`status` that monitoring can use: every refusal counted, why each file waits, plain text, a stable
`--json`, exit 1 while something needs the admin; and the audit entry of a forged signature."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.admin.oversight import status
from gateway.daemon.watch import exclusive
from gateway.state.root import Root
from tests.integration.daemon_harness import GOOD, INVALID, audit_entries, cli, cli_output, drop
from tests.integration.gpg_helpers import gpg, new_officer, primary_fingerprint

pytestmark = pytest.mark.slow
NAME = "police-good-2026-10.csv"


@pytest.fixture
def root(routed_root: Path) -> Path:
    toml = routed_root / "gateway.toml"
    toml.write_text(re.sub(r"(?m)^pairing_timeout_seconds = [0-9]+", "pairing_timeout_seconds = 300", toml.read_text()))
    return routed_root


def _needs(root: Path) -> list[str]:
    """What status says needs the admin now, bar agencies late for the month (which depends on the calendar)."""
    return [line for line in status(Root.open(root), datetime.now(UTC)).attention if "has not submitted" not in line]


def _forge(root: Path) -> str:
    """Drop GOOD signed by a key the gateway has never seen; return that key's fingerprint."""
    home = root.parent / "mallory"
    new_officer(home, "Mallory", "mallory@demo.invalid")
    staging = root.parent / "forged"
    staging.mkdir()
    (staging / NAME).write_bytes(GOOD.read_bytes())
    gpg(home, "--output", str(staging / (NAME + ".sig")), "--detach-sign", str(staging / NAME))
    outbox = root / "outbox" / "police"
    (staging / (NAME + ".sig")).rename(outbox / (NAME + ".sig"))
    (staging / NAME).rename(outbox / NAME)
    return primary_fingerprint(home, "mallory@demo.invalid")


def test_every_refusal_counts_also_a_forged_copy_of_bytes_delivered_later(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fingerprint = _forge(root)
    assert cli(root, "run", "--once") == 1
    (forged,) = [e for e in audit_entries(root) if e["event"] == "submission.rejected"]
    assert forged["stage"] == "authenticate" and forged["file"] == NAME
    assert forged["signer"] == fingerprint and "rules" not in forged
    report = (root / "outbox" / "police" / "rejected" / "police-good-2026-10.report.txt").read_text()
    assert "fix it and submit it again" not in report.lower()
    assert "ask the gateway admin to register the signing key for a DO/PDO of police" in report
    assert "`officers add`" not in report  # a command only the admin can run

    drop(root, "police", GOOD, NAME, "police-do")  # the same bytes, now signed by a registered officer
    drop(root, "probation", INVALID, INVALID.name, "probation-do")
    assert cli(root, "run", "--once") == 1
    rejected = [e for e in audit_entries(root) if e["event"] == "submission.rejected"]
    assert len(rejected) == 2
    assert rejected[1]["rules"] and rejected[1]["file"] == INVALID.name and "signer" in rejected[1]

    health = status(Root.open(root), datetime.now(UTC))
    assert health.errors_24h == {"rejected": 2, "abandoned": 0}
    assert _needs(root) == []  # refusals are notes: each sender has a report
    assert health.notes == ["2 submission(s) refused in the last 24 h: see `audit show --event submission`"]
    code, out = cli_output(root, capsys, "status")
    assert "refused (24h): 2 rejected, 0 abandoned" in out
    assert "{" not in out and "'" not in out.replace("`", "")  # no Python reprs
    assert "note:          2 submission(s) refused in the last 24 h" in out
    # the exit code is the attention list's (which, by the real calendar, may list late agencies)
    assert code == (1 if status(Root.open(root), datetime.now(UTC)).attention else 0)
    code, text = cli_output(root, capsys, "status", "--json")
    assert json.loads(text)["errors_24h"] == {"rejected": 2, "abandoned": 0}


def test_status_says_why_each_file_waits_and_runs_beside_the_daemon(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(root, "run", "--once") == 0  # the gateway has run: that is not what needs attention
    outbox = root / "outbox" / "police"
    (outbox / "unsigned-2026-10.csv").write_bytes(GOOD.read_bytes())
    (outbox / "lonely.csv.sig").write_bytes(b"-----BEGIN PGP SIGNATURE-----\n")
    ghost = root / "outbox" / "ghost"
    ghost.mkdir()
    (ghost / "lost-2026-10.csv").write_bytes(GOOD.read_bytes())

    with exclusive(root):  # as a running daemon holds it
        code, out = cli_output(root, capsys, "status")
        assert code == 1
        assert re.search(
            r"(?m)^  - police/unsigned-2026-10\.csv \([0-9]+ s\): no signature yet: refused as unsigned in "
            r"[0-9]+ s unless its \.sig or \.asc arrives$",
            out,
        ), out
        assert "outbox/ghost/ holds 1 file(s) but ghost is no agency in gateway.toml" in out
        code, text = cli_output(root, capsys, "status", "--json")
    assert code == 1
    health = json.loads(text)
    assert health["outbox_waiting"]["police"] == 1
    assert health["orphaned"] == [{"folder": "outbox/ghost", "files": 1}]
    (unsigned,) = [w for w in health["waiting"] if w["file"] == "unsigned-2026-10.csv"]
    assert unsigned["agency"] == "police" and isinstance(unsigned["age_seconds"], int)
    assert set(health) >= {"attention", "notes", "waiting", "deferred", "orphaned", "errors_24h", "keys", "late"}

    (ghost / "lost-2026-10.csv").unlink()
    (outbox / "unsigned-2026-10.csv").unlink()
    assert _needs(root) == []
