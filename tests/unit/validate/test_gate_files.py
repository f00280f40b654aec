"""The fast path inside whole files: the first EXACT_ROWS rows are checked exactly, every later row by
the gate first; either way the report is exactly what the exact checks find, row by row."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.validate.engine import EXACT_ROWS
from gateway.validate.gate import prefix_tree
from gateway.validate.report import Report
from tests.conftest import PERIOD, csv_bytes
from tests.unit.validate.test_gate import STANDARD, _layouts, _valid_row, _validation
from tests.unit.validate.values import cell_values, valid_values


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_rows_past_the_exact_ones_report_what_the_exact_checks_find(data: st.DataObject) -> None:
    header = data.draw(_layouts())
    first = _valid_row(data, header)
    later = [
        [data.draw(st.one_of(valid_values(c), cell_values(c), st.just(""))) for c in header]
        for _ in range(data.draw(st.integers(1, 6)))
    ]
    rows = [first] * EXACT_ROWS + later
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
    assert report.rows == len(rows)


def test_a_bad_row_after_the_exact_rows_is_reported_on_its_row() -> None:
    header = ["forename", "surname", "gender", "date_of_birth", "ethnicity"]
    good = ["Ann", "Lee", "F", "01/01/1990", "W1"]
    rows = [good] * (EXACT_ROWS + 10) + [["Ann", "Lee", "F", "01/01/1990", "W"]] + [good] * 5
    validation = _validation()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.csv"
        path.write_bytes(csv_bytes([header, *rows]))
        with path.open("rb") as stream:
            report = validation.run(stream, path.stat().st_size)
    assert [(i.row, i.column, i.rule) for i in report.issues] == [(EXACT_ROWS + 12, "ethnicity", "ethnicity-value")]


def test_the_prefix_tree_of_an_enum_matches_exactly_its_values() -> None:
    values = sorted(STANDARD.columns["ethnicity"].enum or ())
    assert len(values) > 10
    tree = re.compile(prefix_tree(values))
    assert all(tree.fullmatch(v) for v in values)
    near = {v[:-1] for v in values} | {v + "x" for v in values} | {v.lower() for v in values} | {""}
    assert [v for v in sorted(near - set(values)) if tree.fullmatch(v)] == []
    assert re.compile(prefix_tree(["", "A", "AB"])).fullmatch("") and not re.compile(prefix_tree(["AB"])).fullmatch("A")
