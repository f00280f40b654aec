"""Periods follow the data: `validate` checks a file against the period the gateway will use (the
file name's YYYY-MM, else the current month; --period wins), and `audit report --month` lists the
data for that month, whenever it was delivered. Dates are injected, never read from the calendar."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from pathlib import Path

import pytest

import gateway.cli
from gateway.cli import main
from tests.conftest import csv_bytes
from tests.integration.daemon_harness import GOOD, audit_entries, cli, drop

# 15/09/2016: aged 9 on 01/09/2026, 10 (old enough for IOM) from 01/10/2026
CHILD = csv_bytes([["forename", "surname", "gender", "date_of_birth"], ["Ann", "Lee", "F", "15/09/2016"]])


def _validate(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, today: date, *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(gateway.cli, "_today", lambda: today)
    capsys.readouterr()
    code = main(["--root", str(root), "validate", *args, "--agency", "police"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out, captured.err


def test_validate_uses_the_period_in_the_file_name_as_the_daemon_does(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    named = tmp_path / "police-monthly-2026-09.csv"
    named.write_bytes(CHILD)
    # in December the child is 10, but the data is September's: the gateway will refuse it, so validate does
    code, out, _ = _validate(root, capsys, monkeypatch, date(2026, 12, 2), str(named))
    assert code == 1
    assert "[age-range]" in out and "period 2026-09" in out.splitlines()[0]
    assert out.splitlines()[-1] == "period 2026-09 from the file name: ages are checked on 01/09/2026"
    code, out, _ = _validate(root, capsys, monkeypatch, date(2026, 12, 2), str(named), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["period"] == "2026-09" and report["period_from"] == "the file name"


def test_an_explicit_period_wins_and_a_name_that_disagrees_is_pointed_out(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    named = tmp_path / "police-monthly-2026-09.csv"
    named.write_bytes(CHILD)
    code, out, err = _validate(root, capsys, monkeypatch, date(2026, 12, 2), str(named), "--period", "2026-10")
    assert code == 0
    assert out.splitlines()[-1] == "period 2026-10 from --period: ages are checked on 01/10/2026"
    assert "the file name says period 2026-09, which the gateway will use" in err and "rename the file" in err


def test_without_a_period_in_the_name_it_is_the_current_month(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "monthly.csv"
    plain.write_bytes(CHILD)
    code, out, err = _validate(root, capsys, monkeypatch, date(2026, 9, 20), str(plain))
    assert code == 1 and "[age-range]" in out and not err
    assert out.splitlines()[-1] == (
        "period 2026-09 from the current month: no YYYY-MM in the file name: ages are checked on 01/09/2026"
    )
    code, out, _ = _validate(root, capsys, monkeypatch, date(2026, 10, 5), str(plain), "--json")
    assert code == 0 and json.loads(out)["period"] == "2026-10"


@pytest.mark.slow
def test_the_register_of_a_month_lists_that_months_data_whenever_delivered(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drop(routed_root, "police", GOOD, GOOD.name, "police-do")  # October's data, delivered whenever this runs
    assert cli(routed_root, "run", "--once") == 0
    delivered = [e for e in audit_entries(routed_root) if e["event"] == "package.delivered"]
    assert len(delivered) == 2 and {e["period"] for e in delivered} == {"2026-10"}

    capsys.readouterr()
    assert cli(routed_root, "audit", "report", "--month", "2026-10") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sorted(r["to_agency"] for r in rows) == ["housing", "probation"]
    assert {r["period"] for r in rows} == {"2026-10"}
    assert {r["date"] for r in rows} == {str(e["time"])[:10] for e in delivered}  # the delivery's date
    for later in ("2026-11", "2026-12"):  # nothing of October's data is listed under a later month
        assert cli(routed_root, "audit", "report", "--month", later, "--json") == 0
        assert json.loads(capsys.readouterr().out) == []
    assert cli(routed_root, "audit", "report", "--month", "2026-10", "--format", "html") == 0
    assert "disclosed for 2026-10 (the data&#x27;s period, whenever delivered)" in capsys.readouterr().out


def test_the_report_help_says_it_selects_by_the_datas_period(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "report", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "listed under the period its data is for, not the month it was delivered in" in text
