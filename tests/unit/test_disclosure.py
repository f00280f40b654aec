"""The disclosure register: a month's `package.delivered` entries as CSV, HTML and JSON."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest

from gateway.core.errors import GatewayError
from gateway.state.disclosure import HEADER, Disclosure, register, to_json, write_csv, write_html


def delivered(time: str, **changes: Any) -> dict[str, Any]:
    """A `package.delivered` audit entry as the pipeline writes it (data for the UTC month it is delivered
    in, unless `period` says otherwise)."""
    entry = {
        "period": datetime.fromisoformat(time).astimezone(UTC).strftime("%Y-%m"),
        "seq": 10,
        "time": time,
        "event": "package.delivered",
        "actor": "gateway",
        "agency": "probation",
        "sender": "police",
        "officer": "police-do",
        "marking": "PROTECT - PERSONAL",
        "rows": 12,
        "columns": ["nominal_id", "surname", "date_of_birth"],
        "purpose": "IOM cohort review",
        "legal_basis": "Crime and Disorder Act 1998 s.115",
        "package": "pkg-0001",
        "method": "gpg",
        "prev": "0" * 64,
    }
    return {**entry, **changes}


OCTOBER = [
    delivered("2026-10-20T08:00:00+00:00", package="pkg-late", rows=5),
    delivered("2026-09-30T23:59:59+00:00", package="pkg-september"),
    {"seq": 3, "time": "2026-10-05T10:00:00+00:00", "event": "submission.delivered", "agency": "police", "rows": 9},
    delivered("2026-10-01T00:00:00+00:00", package="pkg-first", purpose=None, legal_basis=None),
    delivered("2026-11-01T00:00:00+00:00", package="pkg-november"),
    delivered("2026-10-31T23:30:00-01:00", package="pkg-after-midnight-utc"),  # 2026-11-01 00:30 UTC
]


def test_the_register_holds_one_months_deliveries_oldest_first() -> None:
    rows = register(OCTOBER, 2026, 10)
    assert [row.package for row in rows] == ["pkg-first", "pkg-late"]
    assert rows[1] == Disclosure(
        period="2026-10",
        date="2026-10-20",
        time="08:00:00",
        from_agency="police",
        officer="police-do",
        to_agency="probation",
        marking="PROTECT - PERSONAL",
        rows=5,
        columns=("nominal_id", "surname", "date_of_birth"),
        purpose="IOM cohort review",
        legal_basis="Crime and Disorder Act 1998 s.115",
        package="pkg-late",
        method="gpg",
    )


def test_months_are_counted_in_utc_and_older_entries_lack_purpose() -> None:
    november = register(OCTOBER, 2026, 11)
    assert [(row.package, row.date, row.time) for row in november] == [
        ("pkg-november", "2026-11-01", "00:00:00"),
        ("pkg-after-midnight-utc", "2026-11-01", "00:30:00"),
    ]
    first = register([delivered("2026-10-01T00:00:00+00:00", purpose=None)], 2026, 10)[0]
    older = {key: value for key, value in delivered("2026-10-01T00:00:00+00:00").items() if key != "legal_basis"}
    assert first.purpose == "" and register([older], 2026, 10)[0].legal_basis == ""
    assert register(OCTOBER, 2025, 10) == []


def test_a_months_register_holds_the_data_for_that_month_whenever_it_was_delivered() -> None:
    late = delivered("2026-12-03T09:00:00+00:00", package="pkg-november-data", period="2026-11")
    early = delivered("2026-11-30T23:00:00+00:00", package="pkg-december-data", period="2026-12")
    assert [row.package for row in register([late, early], 2026, 11)] == ["pkg-november-data"]
    assert [row.package for row in register([late, early], 2026, 12)] == ["pkg-december-data"]
    row = register([late], 2026, 11)[0]
    assert (row.period, row.date, row.time) == ("2026-11", "2026-12-03", "09:00:00")  # the delivery's own date


def test_an_entry_from_before_periods_were_logged_is_placed_by_its_package_name() -> None:
    older = {k: v for k, v in delivered("2026-12-01T08:00:00+00:00").items() if k != "period"}
    older["package"] = "PROTECT-PERSONAL__police__2026-11__0123456789abcdef0123"
    assert [row.period for row in register([older], 2026, 11)] == ["2026-11"]
    assert register([older], 2026, 12) == []
    unplaced = {**older, "package": "pkg-0001"}
    with pytest.raises(GatewayError, match=r"audit entry 10 \(package\.delivered\) names no period"):
        register([unplaced], 2026, 11)


def test_an_entry_missing_what_the_register_needs_is_named() -> None:
    broken = {key: value for key, value in delivered("2026-10-01T00:00:00+00:00").items() if key != "officer"}
    with pytest.raises(GatewayError, match=r"audit entry 10 \(package\.delivered\) lacks officer"):
        register([broken], 2026, 10)
    with pytest.raises(ValueError, match="1-12"):
        register([], 2026, 13)


def test_csv_round_trips_and_defuses_formulas() -> None:
    hostile = delivered(
        "2026-10-02T09:00:00+00:00",
        agency="=cmd|' /C calc'!A0",
        purpose="+1",
        legal_basis="@SUM(A1)",
        officer="-2",
        marking="\tPROTECT",
        columns=["a,b", 'quote"d'],
    )
    rows = register([hostile, delivered("2026-10-01T00:00:00+00:00")], 2026, 10)
    stream = io.StringIO(newline="")
    write_csv(rows, stream)
    read = list(csv.reader(io.StringIO(stream.getvalue(), newline="")))
    assert (
        read[0]
        == list(HEADER)
        == [
            "period",
            "date",
            "time",
            "from_agency",
            "officer",
            "to_agency",
            "marking",
            "rows",
            "columns",
            "purpose",
            "legal_basis",
            "package",
            "method",
            "received_by",
            "received_at",
            "corrects",
            "request",
        ]
    )
    assert read[1] == [
        "2026-10",
        "2026-10-01",
        "00:00:00",
        "police",
        "police-do",
        "probation",
        "PROTECT - PERSONAL",
        "12",
        "nominal_id; surname; date_of_birth",
        "IOM cohort review",
        "Crime and Disorder Act 1998 s.115",
        "pkg-0001",
        "gpg",
        "",
        "",
        "",
        "",
    ]
    defused = dict(zip(HEADER, read[2], strict=True))
    assert defused["to_agency"] == "'=cmd|' /C calc'!A0"
    assert defused["purpose"] == "'+1" and defused["legal_basis"] == "'@SUM(A1)"
    assert defused["officer"] == "'-2" and defused["marking"] == "'\tPROTECT"
    assert defused["columns"] == 'a,b; quote"d'
    assert len(read) == 3


def test_a_disclosure_names_who_received_it_and_when_from_the_checked_receipts() -> None:
    def received(time: str, officer: str, agency: str = "probation", package: str = "pkg-0001") -> dict[str, Any]:
        return {
            "event": "package.received",
            "time": time,
            "seq": 11,
            "agency": agency,
            "package": package,
            "officer": officer,
            "received": time,
            "actor": officer,
        }

    entries = [
        delivered("2026-10-01T00:00:00+00:00"),
        delivered("2026-10-01T00:00:00+00:00", agency="housing"),
        received("2026-10-03T10:00:00+00:00", "probation-pdo"),
        received("2026-10-02T09:00:00+00:00", "probation-do"),
        received("2026-10-02T09:30:00+00:00", "police-do", agency="police"),  # not delivered to police
    ]
    rows = register(entries, 2026, 10)
    by_agency = {row.to_agency: row for row in rows}
    assert by_agency["probation"].received_by == "probation-do; probation-pdo"
    assert by_agency["probation"].received_at == "2026-10-02T09:00:00+00:00"
    assert (by_agency["housing"].received_by, by_agency["housing"].received_at) == ("", "")


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1] == "td":
            self.cells.append(data)


def test_html_is_a_document_with_every_value_escaped() -> None:
    rows = register(
        [
            delivered("2026-10-01T00:00:00+00:00", sender="<script>alert(1)</script>", rows=3),
            delivered("2026-10-02T00:00:00+00:00", purpose='A & B "quoted"', rows=4),
        ],
        2026,
        10,
    )
    stream = io.StringIO()
    write_html(rows, stream, title="Disclosures <October 2026>")
    page = stream.getvalue()
    assert page.startswith("<!DOCTYPE html>\n<html") and page.rstrip().endswith("</html>")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<title>Disclosures &lt;October 2026&gt;</title>" in page
    assert "A &amp; B &quot;quoted&quot;" in page
    assert "2 disclosures, 7 rows in all" in page
    parser = _Cells()
    parser.feed(page)
    assert parser.tags.count("tr") == 3 and parser.tags.count("td") == 2 * len(HEADER)
    assert "<script>alert(1)</script>" in parser.cells


def test_json_lists_every_field() -> None:
    rows = register(OCTOBER, 2026, 10)
    data = to_json(rows)
    assert json.loads(json.dumps(data)) == data
    assert data[0] == {
        "period": "2026-10",
        "date": "2026-10-01",
        "time": "00:00:00",
        "from_agency": "police",
        "officer": "police-do",
        "to_agency": "probation",
        "marking": "PROTECT - PERSONAL",
        "rows": 12,
        "columns": ["nominal_id", "surname", "date_of_birth"],
        "purpose": "",
        "legal_basis": "",
        "package": "pkg-first",
        "method": "gpg",
        "received_by": "",
        "received_at": "",
        "corrects": "",
        "request": "",
    }
    assert to_json([]) == []


def test_a_correction_names_the_package_it_corrects_and_the_cell_is_defused() -> None:
    rows = register(
        [
            delivered("2026-10-02T00:00:00+00:00", package="pkg-0002", corrects="pkg-0001"),
            delivered("2026-10-03T00:00:00+00:00", package="pkg-0003", corrects="=HYPERLINK(1)"),
        ],
        2026,
        10,
    )
    assert [row.corrects for row in rows] == ["pkg-0001", "=HYPERLINK(1)"]
    stream = io.StringIO(newline="")
    write_csv(rows, stream)
    read = list(csv.reader(io.StringIO(stream.getvalue(), newline="")))
    assert [line[-2] for line in read] == ["corrects", "pkg-0001", "'=HYPERLINK(1)"]


def test_a_disclosure_made_in_answer_names_its_request() -> None:
    rows = register(
        [
            delivered("2026-10-02T00:00:00+00:00", package="pkg-0002", request="2ae3609fe523a294"),
            delivered("2026-10-03T00:00:00+00:00", package="pkg-0003"),
        ],
        2026,
        10,
    )
    assert [row.request for row in rows] == ["2ae3609fe523a294", ""]
    stream = io.StringIO(newline="")
    write_csv(rows, stream)
    read = list(csv.reader(io.StringIO(stream.getvalue(), newline="")))
    assert [line[-1] for line in read] == ["request", "2ae3609fe523a294", ""]
