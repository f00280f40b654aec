"""A report never carries a cell's text: data cells and header cells alike are shown by their shape."""

from __future__ import annotations

import json
from collections.abc import Callable

from gateway.validate import Report, mask
from tests.conftest import csv_bytes

SECRET = "Kelly-Doyle 12/04/1987"
HEADER = ["forename", "surname", "gender", "date_of_birth"]
ROW = ["Ann", "Lee", "F", "01/01/1990"]


def _everything(report: Report) -> str:
    return json.dumps(report.to_json(), ensure_ascii=False) + report.to_text() + repr(report.columns)


def test_an_unknown_header_cell_is_masked_in_columns_text_and_json(validate_bytes: Callable[..., Report]) -> None:
    report = validate_bytes(csv_bytes([[*HEADER, SECRET], [*ROW, "x"]]))
    assert report.columns == [*HEADER, mask(SECRET)]
    assert [(i.rule, i.shape) for i in report.issues] == [("unknown-column", mask(SECRET))]
    for form in (SECRET, repr(SECRET), "Kelly", "1987"):
        assert form not in _everything(report)


def test_a_data_row_in_place_of_the_header_is_masked(validate_bytes: Callable[..., Report]) -> None:
    row = ["Siobhan", "Kelly", "F", "05/03/1990"]
    report = validate_bytes(csv_bytes([row, row]))
    assert [i.rule for i in report.issues] == ["no-header"]
    assert report.columns == ["Aaaaaaa", "Aaaaa", "A", "99/99/9999"]
    for value in ("Siobhan", "Kelly", "05/03/1990"):
        assert value not in _everything(report)


def test_known_headers_keep_their_canonical_names(validate_bytes: Callable[..., Report]) -> None:
    report = validate_bytes(csv_bytes([["Forename", "Surname", "Gender", "Date of Birth"], ROW]))
    assert report.valid and report.columns == HEADER
