"""The disclosure register: who sent what to whom, and why, month by month (pure; writes only to a stream).

The protocols require a record of every disclosure (Warwickshire ISP 2.3.3.3 and 2.4.2, Solihull ISP
4.4.3). It is read from the audit log's `package.delivered` entries, so it can only say what the
log says: one line per package delivered to a recipient agency. A month's register holds the data
*for* that month (the period the package carries), whenever it was delivered: November's data
delivered on 3 December is in November's register. Dates and times are those of the delivery, UTC,
as the log records them.
"""

from __future__ import annotations

import csv
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, TextIO

from gateway.core.errors import GatewayError

EVENT = "package.delivered"
REPORT_FORMATS = ("csv", "html", "json")  # what the register can be written as (`audit report --format`)
RECEIVED = "package.received"  # a recipient officer's checked receipt: the register's "received by"
COLUMN_SEPARATOR = "; "
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_REQUIRED = ("agency", "sender", "officer", "marking", "rows", "columns", "package", "method")
_PERIOD = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")


@dataclass(frozen=True, slots=True)
class Disclosure:
    """One package delivered to one agency: a line of the register (`period`: the month the data is for)."""

    period: str
    date: str
    time: str
    from_agency: str
    officer: str
    to_agency: str
    marking: str
    rows: int
    columns: tuple[str, ...]
    purpose: str
    legal_basis: str
    package: str
    method: str
    received_by: str = ""  # the officers whose signed receipts the gateway recorded, "; "-separated
    received_at: str = ""  # the first of those receipts' times (UTC, ISO 8601)
    corrects: str = ""  # the earlier package this disclosure corrects (the sender signed it so), if any
    request: str = ""  # the information request this disclosure answers (Warwickshire 2.3.3), if any


HEADER = tuple(field.name for field in fields(Disclosure))


def register(entries: Iterable[Mapping[str, Any]], year: int, month: int) -> list[Disclosure]:
    """Return the disclosures of data for period `year`-`month` among audit `entries`, oldest delivery first.

    Raises ValueError for a month outside 1-12; GatewayError naming the entry if a `package.delivered`
    entry lacks a field the register needs.
    """
    if not 1 <= month <= 12:
        raise ValueError(f"month must be 1-12, not {month}")
    wanted = f"{year:04d}-{month:02d}"
    found: list[tuple[datetime, Disclosure]] = []
    receipts: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for entry in entries:
        if entry.get("event") == RECEIVED:
            key = (str(entry.get("package")), str(entry.get("agency")))
            who = entry.get("officer") or entry.get("fingerprint")  # an officer the register no longer names
            receipts.setdefault(key, []).append((str(who), str(entry.get("received") or entry.get("time"))))
            continue
        if entry.get("event") != EVENT:
            continue
        if period_of(entry) == wanted:
            moment = _time(entry)
            found.append((moment, _disclosure(entry, moment)))
    rows = []
    for _, delivered in sorted(found, key=lambda pair: pair[0]):
        received = sorted(receipts.get((delivered.package, delivered.to_agency), []), key=lambda r: r[1])
        if received:
            officers = "; ".join(dict.fromkeys(officer for officer, _ in received))
            delivered = replace(delivered, received_by=officers, received_at=received[0][1])  # noqa: PLW2901
        rows.append(delivered)
    return rows


def period_of(entry: Mapping[str, Any]) -> str:
    """The YYYY-MM a `package.delivered` entry's data is for: its `period`, or (entries written before
    they carried one) the period in its package name, MARKING__SENDER__PERIOD__ID.

    Raises GatewayError naming the entry if it has neither.
    """
    period = entry.get("period")
    if isinstance(period, str) and _PERIOD.fullmatch(period):
        return period
    parts = str(entry.get("package", "")).split("__")
    if len(parts) == 4 and _PERIOD.fullmatch(parts[2]):
        return parts[2]
    raise GatewayError(
        f"audit entry {entry.get('seq')} ({EVENT}) names no period: the register cannot place it;"
        " run `iom-gateway audit verify`"
    )


def write_csv(rows: Iterable[Disclosure], stream: TextIO) -> None:
    """Write the register as CSV (header first); a cell a spreadsheet would run as a formula is quoted with '."""
    writer = csv.writer(stream, lineterminator="\r\n")
    writer.writerow(HEADER)
    for row in rows:
        writer.writerow([_defuse(cell) for cell in _cells(row)])


def write_html(rows: Sequence[Disclosure], stream: TextIO, title: str) -> None:
    """Write the register as a small, complete HTML5 document; every value is escaped."""
    total = sum(row.rows for row in rows)
    noun = "disclosure" if len(rows) == 1 else "disclosures"
    head = "".join(f"<th>{html.escape(name)}</th>" for name in HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in _cells(row)) + "</tr>\n" for row in rows
    )
    stream.write(
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n"
        "<style>table{border-collapse:collapse}th,td{border:1px solid #999;padding:2px 6px;text-align:left}</style>\n"
        f"</head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
        f'<p class="summary">{len(rows)} {noun}, {total} rows in all (times in UTC).</p>\n'
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"
        "</body>\n</html>\n"
    )


def to_json(rows: Iterable[Disclosure]) -> list[dict[str, Any]]:
    """The register as JSON-ready objects (columns as a list)."""
    return [{**asdict(row), "columns": list(row.columns)} for row in rows]


def _disclosure(entry: Mapping[str, Any], moment: datetime) -> Disclosure:
    missing = [name for name in _REQUIRED if name not in entry]
    rows, columns = entry.get("rows"), entry.get("columns")
    if missing or not isinstance(rows, int) or isinstance(rows, bool) or not isinstance(columns, list):
        what = ", ".join(missing) or "rows or columns in the expected form"
        raise GatewayError(
            f"audit entry {entry.get('seq')} ({EVENT}) lacks {what}: the register cannot list it;"
            " run `iom-gateway audit verify`"
        )
    return Disclosure(
        period=period_of(entry),
        date=moment.date().isoformat(),
        time=moment.time().isoformat(timespec="seconds"),
        from_agency=str(entry["sender"]),
        officer=str(entry["officer"]),
        to_agency=str(entry["agency"]),
        marking=str(entry["marking"]),
        rows=rows,
        columns=tuple(str(column) for column in columns),
        purpose=str(entry.get("purpose") or ""),
        legal_basis=str(entry.get("legal_basis") or ""),
        package=str(entry["package"]),
        method=str(entry["method"]),
        corrects=str(entry.get("corrects") or ""),
        request=str(entry.get("request") or ""),
    )


def _time(entry: Mapping[str, Any]) -> datetime:
    """The entry's time in UTC; raise GatewayError if it has none."""
    try:
        moment = datetime.fromisoformat(str(entry.get("time")))
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None:
        raise GatewayError(f"audit entry {entry.get('seq')} has no valid time: run `iom-gateway audit verify`")
    return moment.astimezone(UTC)


def _cells(row: Disclosure) -> list[str]:
    values = (getattr(row, name) for name in HEADER)
    return [COLUMN_SEPARATOR.join(value) if isinstance(value, tuple) else str(value) for value in values]


def _defuse(cell: str) -> str:
    """Prefix ' to a cell a spreadsheet would read as a formula (CSV injection)."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell
