"""The fast path may only ever say "valid" when the exact checks agree (and should, for valid rows)."""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.adapters.config import Config
from gateway.core.model import Agency
from gateway.validate.engine import _Validation
from gateway.validate.report import Report
from gateway.validate.rules import RowRules
from gateway.validate.schema import load_standard
from tests.conftest import PERIOD, REPO, TODAY, csv_bytes
from tests.unit.validate.values import BIDI_CONTROLS, cell_values, valid_values

STANDARD = load_standard(REPO)
POLICE = Agency("police", "Police", "police")
HELD = sorted(c for c in STANDARD.columns if "police" in STANDARD.holders_of(c, {}))
REQUIRED = ["forename", "surname", "gender", "date_of_birth"]
CONFIG = Config.load(REPO, columns=frozenset(STANDARD.columns), kinds=STANDARD.kinds)


def _validation(allow_formulas: bool = False) -> _Validation:
    rules = RowRules(PERIOD, TODAY, allow_formulas)
    return _Validation(Path("row.csv"), POLICE, CONFIG, STANDARD, rules)


def _fast_says_valid(validation: _Validation, header: list[str], row: list[str]) -> tuple[bool, Report]:
    report = Report("row.csv", "police", "police", PERIOD, limit=100)
    layout = validation.layout(header, report)
    assert layout is not None and report.valid
    fast = layout.gate(row) and (layout.fast is None or layout.fast(row))
    exact = Report("row.csv", "police", "police", PERIOD, limit=100)
    validation.check_row(row, 2, layout, exact)
    return fast, exact


TEXT_COLUMNS = frozenset(c for c in HELD if STANDARD.columns[c].free_text or c in ("title", "forename", "surname"))


@st.composite
def _layouts(draw: st.DrawFn) -> list[str]:
    extra = draw(st.lists(st.sampled_from([c for c in HELD if c not in REQUIRED]), unique=True, max_size=8))
    return draw(st.permutations([*REQUIRED, *extra]))


@settings(max_examples=400)
@given(st.data(), st.booleans())
def test_fast_path_never_passes_a_row_the_exact_checks_reject(data: st.DataObject, allow_formulas: bool) -> None:
    header = data.draw(_layouts())
    row = [data.draw(st.one_of(cell_values(c), st.just(""))) for c in header]
    fast, exact = _fast_says_valid(_validation(allow_formulas), header, row)
    if fast:
        assert exact.valid, exact.issues


@settings(max_examples=200)
@given(st.data())
def test_fast_path_passes_valid_rows(data: st.DataObject) -> None:
    header = data.draw(_layouts())
    row = _valid_row(data, header)
    fast, exact = _fast_says_valid(_validation(), header, row)
    assert exact.valid, exact.issues
    assert fast


def _valid_row(data: st.DataObject, header: list[str]) -> list[str]:
    row = [data.draw(valid_values(c)) for c in header]
    if "victims_details" in header and "victim_consent" in header:
        row[header.index("victim_consent")] = "Y"
    elif "victims_details" in header:
        row[header.index("victims_details")] = ""
    return row


@settings(max_examples=300)
@given(st.data(), st.booleans())
def test_a_bidi_control_in_any_text_cell_fails_both_paths(data: st.DataObject, allow_formulas: bool) -> None:
    header = data.draw(_layouts())  # forename and surname: always a text cell to hide it in
    row = _valid_row(data, header)
    texts = [
        i for i, name in enumerate(header) if name in TEXT_COLUMNS and row[i]
    ]  # not a consent-less victims_details
    at = data.draw(st.sampled_from(texts))
    char = data.draw(st.sampled_from(BIDI_CONTROLS))
    where = data.draw(st.integers(0, len(row[at])))
    row[at] = row[at][:where] + char + row[at][where:]
    fast, exact = _fast_says_valid(_validation(allow_formulas), header, row)
    assert not fast
    assert [(i.column, i.rule) for i in exact.issues] == [(header[at], "bidi-control")]


def test_nul_in_a_cell_cannot_shift_cells_past_the_gate() -> None:
    header = ["forename", "surname", "gender", "date_of_birth", "criminal_history"]
    row = ["Ann", "Lee", "F", "01/01/1990", "text\x00F"]
    fast, exact = _fast_says_valid(_validation(), header, row)
    assert not fast
    assert [i.rule for i in exact.issues] == ["control-character"]


def test_birthday_edges_on_the_fast_path() -> None:
    header = ["forename", "surname", "gender", "date_of_birth"]
    outcomes = {
        dob: _fast_says_valid(_validation(), header, ["Ann", "Lee", "F", dob])[0]
        for dob in ["01/10/2016", "02/10/2016", "02/10/1915", "01/10/1915", "29/02/2000", "29/02/1900"]
    }
    assert outcomes == {
        "01/10/2016": True,
        "02/10/2016": False,
        "02/10/1915": True,
        "01/10/1915": False,
        "29/02/2000": True,
        "29/02/1900": False,
    }
    assert date(2026, 10, 1) == PERIOD.first_day


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_whole_files_report_exactly_what_the_exact_checks_find(data: st.DataObject) -> None:
    """Through the real reader (control scan, both matchers): the report equals row-by-row exact checks."""
    header = data.draw(_layouts())
    rows = [
        [data.draw(st.one_of(valid_values(c), cell_values(c), st.just(""))) for c in header]
        for _ in range(data.draw(st.integers(1, 6)))
    ]
    validation = _validation()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.csv"
        path.write_bytes(csv_bytes([header, *rows]))
        with path.open("rb") as stream:
            report = validation.run(stream, path.stat().st_size)
    expected = Report("row.csv", "police", "police", PERIOD, limit=1000)
    layout = validation.layout(header, expected)
    assert layout is not None
    for number, row in enumerate(rows, start=2):
        validation.check_row(row, number, layout, expected)
    assert report.issues == expected.issues


def test_a_line_break_in_a_one_line_column_fails_even_in_a_clean_file() -> None:
    # Line breaks are not control characters for the byte scan (they end every line), so a
    # column that forbids them must keep its own check when the file is clean.
    header = ["forename", "surname", "gender", "date_of_birth", "address_street", "criminal_history"]
    row = ["Ann", "Lee", "F", "01/01/1990", "1 High Street\nFlat 2", "two\nlines are fine here"]
    fast, exact = _fast_says_valid(_validation(), header, row)
    assert not fast
    assert [(i.column, i.rule) for i in exact.issues] == [("address_street", "control-character")]
