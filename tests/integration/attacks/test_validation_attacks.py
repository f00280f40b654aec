"""Issue 9, finding 6, the validator's part: hostile CSVs against `iom-gateway validate`, in-process.

Each test replays one attack as the attacker sent it (exact bytes, through `cli.main`) and
asserts the exit status and the report, in JSON and as text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.validate import mask
from tests.conftest import csv_bytes, make_root

HEADER = ["forename", "surname", "gender", "date_of_birth"]
ROW = ["Ann", "Lee", "F", "01/01/1990"]
EXIT_OK, EXIT_REFUSED = 0, 1


def _validate(tmp_path: Path, capsys: pytest.CaptureFixture[str], data: bytes) -> tuple[int, dict[str, Any], int, str]:
    """(exit status, --json report, exit status, text report) of `validate` on `data` as police."""
    root = tmp_path / "root"
    if not root.exists():
        make_root(root)
    path = tmp_path / "attack.csv"
    path.write_bytes(data)
    args = ["--root", str(root), "validate", str(path), "--agency", "police", "--period", "2026-10"]
    rc_json = main([*args, "--json"])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    rc_text = main(args)
    text = capsys.readouterr()
    assert "Traceback" not in text.err
    return rc_json, json.loads(out.out), rc_text, text.out


def _errors(report: dict[str, Any]) -> list[tuple[int | None, str | None, str]]:
    return [(e["row"], e["column"], e["rule"]) for e in report["errors"]]


def test_header_cells_are_masked_in_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A data row pasted into the header (or an attacker's header) must not come back in clear."""
    secret = "Kelly-Doyle 12/04/1987 BH1 1AA"
    misspelt = "Date Of Brith"
    header = [*HEADER[:3], misspelt, secret]
    rc, report, rc_text, text = _validate(tmp_path, capsys, csv_bytes([header, [*ROW, "x"]]))

    assert (rc, rc_text) == (EXIT_REFUSED, EXIT_REFUSED)
    assert _errors(report) == [
        (1, "D", "unknown-column"),
        (1, "E", "unknown-column"),
        (1, "date_of_birth", "missing-column"),
    ]
    unknown = report["errors"][:2]
    assert (
        [e["shape"] for e in unknown]
        == [mask(misspelt), mask(secret)]
        == ["Aaaa Aa Aaaaa", "Aaaaa-Aaaaa 99/99/9999 AA9 9AA"]
    )
    assert "did you mean date_of_birth?" in unknown[0]["message"]  # the hint names our column, not theirs
    for header_text in (secret, misspelt):
        for form in (header_text, repr(header_text), json.dumps(header_text)[1:-1], "Kelly", "Brith", "1987"):
            assert form not in json.dumps(report), form
            assert form not in text.replace(str(tmp_path), ""), form
    assert "(value shaped 'Aaaaa-Aaaaa 99/99/9999 AA9 9AA')" in text

