"""What validation counts for the quality scorecard: non-empty cells per column, rows with an error, rows
failing each rule, failing cells per column. The counts are the same whether a row went through the fast
path or the exact checks, across batch boundaries, and equal a plain count made here from the rows."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.validate.engine import EXACT_ROWS, _Fills
from gateway.validate.report import Issue, Report, Tally
from tests.conftest import PERIOD, csv_bytes
from tests.unit.validate.test_gate import _layouts, _valid_row, _validation
from tests.unit.validate.values import cell_values, valid_values


def _run(header: list[str], rows: list[list[str]]) -> Report:
    validation = _validation()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.csv"
        path.write_bytes(csv_bytes([header, *rows]))
        with path.open("rb") as stream:
            return validation.run(stream, path.stat().st_size)


def _expected(report: Report, header: list[str], rows: list[list[str]]) -> Tally:
    """The tally counted the plain way: every cell of every row of the header's width; every issue."""
    tally = Tally()
    for name in header:
        tally.filled[name] += sum(1 for row in rows if len(row) == len(header) and row[header.index(name)])
    data_issues = [i for i in report.issues if i.row is not None and i.row >= 2]
    tally.bad_rows = len({i.row for i in data_issues})
    tally.rule_rows = Counter(rule for _, rule in {(i.row, i.rule) for i in data_issues})
    tally.column_errors = Counter(i.column for i in data_issues if i.column)
    return tally


@settings(max_examples=40, deadline=None)
@given(st.data(), st.integers(0, 3))
def test_the_tally_equals_a_plain_count_on_both_paths_and_across_batches(data: st.DataObject, batches: int) -> None:
    header = data.draw(_layouts())
    good = _valid_row(data, header)
    later = [
        [data.draw(st.one_of(valid_values(c), cell_values(c), st.just(""))) for c in header]
        for _ in range(data.draw(st.integers(1, 8)))
    ]
    # enough valid rows to pass the exact ones and fill `batches` batches; then the drawn rows, one short
    rows = [good] * (EXACT_ROWS + batches * _Fills.BATCH) + later + [good[:-1]]
    report = _run(header, rows)
    expected = _expected(report, header, rows)
    assert report.omitted == 0
    assert report.tally.filled == expected.filled
    assert (report.tally.bad_rows, report.tally.rule_rows) == (expected.bad_rows, expected.rule_rows)
    assert report.tally.column_errors == expected.column_errors
    assert report.tally.bad_rows >= 1  # the short row: a field-count error of its own, counted in no column


def test_a_column_in_the_header_is_counted_even_when_never_filled_and_file_issues_count_no_row() -> None:
    header = ["forename", "surname", "gender", "date_of_birth", "cro_number"]
    rows = [["Ann", "Lee", "F", "01/01/1990", ""]] * 3 + [["Bob", "", "M", "31/02/1990", ""]]
    report = _run(header, rows)
    assert report.tally.filled == {"forename": 4, "surname": 3, "gender": 4, "date_of_birth": 4, "cro_number": 0}
    assert report.tally.bad_rows == 1
    assert report.tally.rule_rows == {"required": 1, "real-date": 1}
    assert report.tally.column_errors == {"surname": 1, "date_of_birth": 1}
    whole = Report("f.csv", "police", "police", PERIOD, limit=10)
    whole.add(Issue(None, None, "encoding", "is UTF-16"))
    whole.add(Issue(1, "surname", "missing-column", "required column surname is not in the header"))
    assert (whole.tally.bad_rows, whole.tally.rule_rows, whole.tally.column_errors) == (0, {}, {})
    assert whole.counts == {"encoding": 1, "missing-column": 1}


def test_the_tally_is_never_in_the_reports_json_or_text() -> None:
    report = _run(["forename", "surname", "gender", "date_of_birth"], [["Zed", "Quill", "X", "01/01/1990"]])
    assert "tally" not in report.to_json() and "filled" not in report.to_text()
