"""Subject keys: one person typed two ways meets under one key; the validator collects every row's keys,
on the exact path and on the fast path, only when asked, and never shows them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.core.subject import cro_key, name_key, surname_key
from gateway.validate.engine import EXACT_ROWS, _Layout, _Validation
from gateway.validate.report import Report
from gateway.validate.rules import RowRules
from tests.conftest import PERIOD, TODAY, csv_bytes
from tests.unit.validate.test_gate import CONFIG, POLICE, STANDARD

HEADER = ["forename", "surname", "gender", "date_of_birth", "cro_number"]
# valid CRO numbers (the check letter is right): NNNNNN/YY + CRO_LETTERS[(YY * 10**6 + NNNNNN) % 23]
_LETTERS = "ZABCDEFGHJKLMNPQRTUVWXY"


def _cro(serial: int, year: int = 21) -> str:
    return f"{serial}/{year:02d}{_LETTERS[(year * 1_000_000 + serial) % 23]}"


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("ASHCROFT", "ashcroft"),
        ("Zoe\u0308", "Zoë"),  # a combining diaeresis (NFD) and the precomposed letter
        ("Siobha\u0301n", "SIOBHÁN"),
        ("O'Connell", "O’Connell"),
        ("O'Connell", "oconnell"),
        ("Smith-Jones", "Smith Jones"),
        ("Smith‐Jones", "smithjones"),  # U+2010 HYPHEN
        ("St. John", "St John"),
        (" van der  Berg ", "VanDerBerg"),
        ("ﬀoulkes", "ffoulkes"),  # NFKC unfolds the ligature
        ("STRASSE", "straße"),  # casefold, not lower
    ],
)
def test_one_surname_typed_two_ways_gives_one_key(one: str, other: str) -> None:
    assert surname_key(one) == surname_key(other)
    assert name_key(one, "1990-01-01") == name_key(other, "1990-01-01")


def test_different_people_keep_different_keys() -> None:
    assert surname_key("Zoë") != surname_key("Zoe")  # NFKC keeps accents: they are part of the name
    assert name_key("Lee", "1990-01-01") != name_key("Lee", "1990-01-02")
    assert name_key("Lee", "1990-01-01") != name_key("Leek", "1990-01-01")
    assert cro_key("265416/21G") != cro_key("265417/21G")


def test_a_surname_of_punctuation_gives_no_key() -> None:
    assert name_key(" '-. ", "1990-01-01") is None


def test_a_cro_number_is_keyed_in_capitals_without_spaces() -> None:
    assert cro_key("265416/21G") == cro_key(" 265416 / 21g ") == "cro:265416/21G"
    assert cro_key("sf20/123456q") == "cro:SF20/123456Q"


class _Counting(_Validation):
    """The validator, counting the rows that went to the exact checks (the rest took the fast path)."""

    exact = 0

    def check_row(self, row: list[str], row_number: int, layout: _Layout, report: Report) -> None:
        self.exact += 1
        super().check_row(row, row_number, layout, report)


def _run(rows: list[list[str]], tmp_path: Path, *, subjects: bool = True) -> tuple[Report, int]:
    validation = _Counting(Path("row.csv"), POLICE, CONFIG, STANDARD, RowRules(PERIOD, TODAY, False), subjects=subjects)
    path = tmp_path / "f.csv"
    path.write_bytes(csv_bytes([HEADER, *rows]))
    with path.open("rb") as stream:
        report = validation.run(stream, path.stat().st_size)
    return report, validation.exact


def _people(count: int) -> list[list[str]]:
    surnames = ["O'Brien", "Smith-Jones", "Siobha\u0301n", "Lee", "St. John"]
    return [
        ["Ann", f"{surnames[i % 5]}", "F", f"{1 + i % 28:02d}/{1 + i % 12:02d}/{1960 + i % 40}", _cro(1000 + i)]
        for i in range(count)
    ]


def _expected(rows: list[list[str]]) -> set[str]:
    keys = set()
    for _, surname, _, born, cro in rows:
        keys.add(cro_key(cro))
        keys.add(f"name:{surname_key(surname)}|{born[6:]}-{born[3:5]}-{born[:2]}")
    return keys


def test_every_row_is_collected_on_the_fast_path_and_the_exact_one(tmp_path: Path) -> None:
    rows = _people(EXACT_ROWS + 136)
    report, exact = _run(rows, tmp_path)
    assert report.valid and report.rows == len(rows)
    assert exact == EXACT_ROWS - 1  # rows 2 to 64; the 137 later rows took the fast path, and were collected
    assert report.subjects is not None and set(report.subjects) == _expected(rows)
    assert "name:obrien|1960-01-01" in set(report.subjects) and "cro:1000/21" + _cro(1000)[-1] in set(report.subjects)


def test_rows_the_exact_checks_see_after_the_fast_ones_are_collected_too(tmp_path: Path) -> None:
    rows = _people(EXACT_ROWS + 20)
    rows[EXACT_ROWS + 5][2] = "male"  # an invalid row past the exact rows: it goes to the exact checks
    report, exact = _run(rows, tmp_path)
    assert not report.valid and exact == EXACT_ROWS
    assert report.subjects is not None and set(report.subjects) == _expected(rows)


def test_a_small_file_is_collected_on_the_exact_path(tmp_path: Path) -> None:
    rows = _people(3)
    rows[1][4] = ""  # no CRO number: the name key only
    report, exact = _run(rows, tmp_path)
    assert report.valid and exact == 3
    assert report.subjects is not None
    assert set(report.subjects) == _expected([rows[0], rows[2]]) | {name_key(rows[1][1], "1961-02-02")}


def test_a_row_without_a_date_of_birth_or_of_the_wrong_width_gives_no_name_key(tmp_path: Path) -> None:
    rows = _people(2)
    rows[0][3] = ""  # required, so the file is invalid; but no name key either way
    rows[1] = rows[1][:4]  # a short row: its cells mean nothing
    report, _ = _run(rows, tmp_path)
    assert report.subjects is not None and set(report.subjects) == {cro_key(rows[0][4])}


def test_nothing_is_collected_unless_asked_and_nothing_collected_is_shown(tmp_path: Path) -> None:
    rows = _people(EXACT_ROWS + 5)
    plain, _ = _run(rows, tmp_path, subjects=False)
    assert plain.subjects is None
    report, _ = _run(rows, tmp_path)
    assert report.subjects is not None and len(report.subjects) == 2 * len(rows)
    shown = json.dumps(report.to_json(), ensure_ascii=False) + report.to_text() + repr(report) + repr(report.subjects)
    for _, surname, _, born, cro in rows:
        assert surname_key(surname) not in shown.casefold() and cro not in shown and born not in shown
    assert report.to_json() == plain.to_json() and report.to_text() == plain.to_text()
