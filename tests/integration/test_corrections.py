"""Corrections (Solihull 2.2, accuracy): a file that corrects an earlier package says so under its officer's
signature; the manifest, the audit log and the disclosure register link the two, and `pull` marks the earlier
file superseded. A correction of a package the agency never had delivered is refused, nothing sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.daemon_harness import GOOD, audit_entries, cli, cli_output, home, packages
from tests.integration.gpg_helpers import gpg


def _delivered(root: Path) -> list[dict[str, object]]:
    return [e for e in audit_entries(root) if e["event"] == "package.delivered" and e["agency"] == "probation"]


def _corrected(tmp_path: Path) -> Path:
    lines = GOOD.read_bytes().splitlines(keepends=True)
    path = tmp_path / "police-corrected-2026-10.csv"
    path.write_bytes(b"".join(lines[:-1]))  # the earlier file less its last row: valid, and not a duplicate
    return path


def _submit(root: Path, path: Path, *extra: str) -> int:
    return cli(root, "submit", str(path), "--agency", "police", "--officer", "police-do", *extra)


@pytest.mark.parametrize("by", ["package", "submission"])
def test_a_correction_is_linked_in_manifest_audit_and_register_and_pull_marks_the_earlier_file(
    routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], by: str
) -> None:
    root = routed_root
    assert _submit(root, GOOD) == 0 and cli(root, "run", "--once") == 0
    (first,) = _delivered(root)
    earlier = str(first["package"])
    named = earlier if by == "package" else earlier.rsplit("__", 1)[1]
    assert _submit(root, _corrected(tmp_path), "--corrects", named) == 0
    assert cli(root, "run", "--once") == 0
    second = _delivered(root)[1]
    assert second["corrects"] == earlier and "corrects" not in first
    later = str(second["package"])
    manifest = json.loads((root / "inbox" / "probation" / f"{later}.manifest.json").read_bytes())
    assert manifest["corrects"] == earlier
    code, text = cli_output(root, capsys, "audit", "report", "--month", "2026-10", "--json")
    register = {row["package"]: row for row in json.loads(text) if row["to_agency"] == "probation"}
    assert register[later]["corrects"] == earlier and register[earlier]["corrects"] == ""
    out = tmp_path / "pulled"
    out.mkdir(mode=0o700)
    code, printed = cli_output(
        root, capsys, "pull", "--agency", "probation", "--to", str(out), "--officer", "probation-do"
    )
    assert code == 0
    assert f"superseded {earlier}.csv: {later} corrects it" in printed
    marker = out / f"{earlier}.superseded.txt"
    assert later in marker.read_text() and (out / f"{earlier}.csv").exists() and (out / f"{later}.csv").exists()
    assert marker.stat().st_mode & 0o077 == 0
    assert len(packages(root, "probation")) == 2


def test_submit_refuses_to_correct_a_package_its_agency_never_had_delivered(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    unknown = "PROTECT-PERSONAL__yos__2026-10__0123456789abcdef0123"
    assert _submit(routed_root, GOOD, "--corrects", unknown) == 1
    err = capsys.readouterr().err
    assert "had no package delivered by that name" in err and "Traceback" not in err
    assert not list((routed_root / "outbox" / "police").glob("*.csv"))


def test_a_dropped_file_signed_to_correct_another_agencys_package_is_rejected_with_the_reason(
    routed_root: Path,
) -> None:
    root = routed_root
    outbox = root / "outbox" / "police"
    target = outbox / "police-2026-10.csv"
    target.write_bytes(GOOD.read_bytes())
    notation = "corrects@iom-gateway=PROTECT-PERSONAL__probation__2026-10__0123456789abcdef0123"
    signature = str(target) + ".sig"
    gpg(home(root, "police-do"), "--sig-notation", notation, "--output", signature, "--detach-sign", str(target))
    assert cli(root, "run", "--once") == 1
    report = (outbox / "rejected" / "police-2026-10.report.txt").read_text()
    assert "corrects@iom-gateway" in report and "no package police had delivered" in report
    assert not _delivered(root)
