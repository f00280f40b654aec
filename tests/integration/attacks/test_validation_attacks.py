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


BIDI = {
    "\u061c": "U+061C ARABIC LETTER MARK",
    "\u200e": "U+200E LEFT-TO-RIGHT MARK",
    "\u200f": "U+200F RIGHT-TO-LEFT MARK",
    "\u202a": "U+202A LEFT-TO-RIGHT EMBEDDING",
    "\u202b": "U+202B RIGHT-TO-LEFT EMBEDDING",
    "\u202c": "U+202C POP DIRECTIONAL FORMATTING",
    "\u202d": "U+202D LEFT-TO-RIGHT OVERRIDE",
    "\u202e": "U+202E RIGHT-TO-LEFT OVERRIDE",
    "\u2066": "U+2066 LEFT-TO-RIGHT ISOLATE",
    "\u2067": "U+2067 RIGHT-TO-LEFT ISOLATE",
    "\u2068": "U+2068 FIRST STRONG ISOLATE",
    "\u2069": "U+2069 POP DIRECTIONAL ISOLATE",
    "\ufeff": "U+FEFF ZERO WIDTH NO-BREAK SPACE",
}


def test_bidi_controls_and_inner_byte_order_marks_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trojan-source text: 'Ann' displayed, something else stored; every text column, every control."""
    columns = [*HEADER, "title", "om_name", "address_street", "post_town", "criminal_history", "current_intelligence"]
    clean = [*ROW, "Mr", "Sgt K. Doyle", "14 Chapel Hill", "Solihull", "Burglary 2019", "none known"]
    text_columns = [c for c in columns if c not in ("gender", "date_of_birth")]
    rows: list[list[str]] = []
    expected: list[tuple[int | None, str | None, str]] = []
    for number, (index, char) in enumerate(enumerate(BIDI), start=3):  # the clean row is row 2
        column = text_columns[index % len(text_columns)]
        row = list(clean)
        at = columns.index(column)
        row[at] = row[at][:2] + char + row[at][2:]  # inside the cell, never at its start
        rows.append(row)
        expected.append((number, column, "bidi-control"))
    bom = b"\xef\xbb\xbf"  # a byte order mark as the file's first bytes is its encoding marker: allowed

    rc, report, rc_text, text = _validate(tmp_path, capsys, bom + csv_bytes([columns, clean, *rows]))

    assert (rc, rc_text) == (EXIT_REFUSED, EXIT_REFUSED)
    assert _errors(report) == expected
    assert report["counts"] == {"bidi-control": len(BIDI)} and report["rows"] == len(BIDI) + 1
    for error, (char, name) in zip(report["errors"], BIDI.items(), strict=True):
        assert name in error["message"], error
        assert "delete it" in error["message"]
        assert f"\\u{ord(char):04x}" in error["shape"]
    for char in BIDI:
        assert char not in json.dumps(report, ensure_ascii=False) and char not in text
    assert "U+202E RIGHT-TO-LEFT OVERRIDE" in text

    # the same file without the controls is valid, byte order mark and all
    rc, report, _, _ = _validate(tmp_path, capsys, bom + csv_bytes([columns, clean, clean]))
    assert (rc, report["valid"], report["encoding"]) == (EXIT_OK, True, "utf-8-sig")


def test_a_header_of_520000_columns_stops_at_the_column_cap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The attack file: Table 1's required columns then 519,996 one-letter cells (1 MB, one line)."""
    width = 520_000
    header = [*HEADER, *["a"] * (width - len(HEADER))]
    bad_row = ["Ann", "Lee", "X", "01/01/1990", *[""] * (width - len(HEADER))]  # gender-value, if it were read
    data = csv_bytes([header, bad_row])
    assert len(data.split(b"\r\n")[0]) < 1_048_576  # under limits.max_line_bytes: only the column cap stops it

    rc, report, rc_text, text = _validate(tmp_path, capsys, data)

    assert (rc, rc_text) == (EXIT_REFUSED, EXIT_REFUSED)
    assert _errors(report) == [(1, None, "too-many-columns")]
    assert report["counts"] == {"too-many-columns": 1}  # nothing after the header was read or matched
    assert report["rows"] == 0
    message = report["errors"][0]["message"]
    assert "520,000" in message and "112" in message and "remove" in message, message
    assert text.count("[too-many-columns]") == 1 and "[unknown-column]" not in text


def test_a_header_spread_over_quoted_line_breaks_is_capped_while_it_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same attack split across physical lines (each under the line cap) by quoted line breaks.

    Before the fix csv.reader built one header list from all of them (a 60 MB file of commas grew
    past 24 GB and was killed); now reading stops once the header record passes the line cap.
    """
    line = "," * 500_000
    data = ",".join(HEADER).encode() + ("".join(line + '"\n"' for _ in range(16)) + "\r\n").encode()
    data += csv_bytes([ROW])

    rc, report, rc_text, _ = _validate(tmp_path, capsys, data)

    assert (rc, rc_text) == (EXIT_REFUSED, EXIT_REFUSED)
    assert _errors(report) == [(1, None, "line-too-long")]
    assert report["counts"] == {"line-too-long": 1} and report["rows"] == 0
    assert "header" in report["errors"][0]["message"] and "1,048,576" in report["errors"][0]["message"]
