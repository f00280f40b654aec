"""Validate one file against Table 1 and the ownership matrix, streaming, and build its Report."""

from __future__ import annotations

import csv
import difflib
import io
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import BinaryIO

from gateway.adapters.config import Config
from gateway.adapters.fsio import open_regular
from gateway.core.model import Agency, Period
from gateway.validate.gate import Gate
from gateway.validate.reader import (
    READ_SIZE,
    UTF8_BOM,
    UTF16_BOMS,
    LineGuard,
    LineTooLong,
    RecordGuard,
    RecordTooLong,
    first_bad_byte,
)
from gateway.validate.report import Issue, Report, column_letter, mask
from gateway.validate.rules import RowRules
from gateway.validate.schema import HEADER_CELLS_PER_COLUMN, Column, Standard, header_key
from gateway.validate.subjects import Subjects, collector


def validate_file(
    path: Path, agency: Agency, config: Config, standard: Standard, *, period: Period, today: date
) -> Report:
    """Check every row of `path` as `agency` would send it for `period`; write nothing.

    A bad file gives a Report listing every error; raises UsageError or InputFileError only when
    the file cannot be read safely (missing, a symlink, not a regular file).
    """
    stream, size = open_regular(path)
    with stream:
        return validate_stream(stream, size, path, agency, config, standard, period=period, today=today)


def validate_stream(
    stream: BinaryIO,
    size: int,
    name: Path,
    agency: Agency,
    config: Config,
    standard: Standard,
    *,
    period: Period,
    today: date,
    subjects: bool = False,
) -> Report:
    """Like validate_file, for a file the caller has already opened safely (read from its start).

    With `subjects`, the report also collects who is in the file (`Report.subjects`, never shown).
    """
    stream.seek(0)
    rules = RowRules(period, today, _formulas(config))
    return _Validation(name, agency, config, standard, rules, subjects=subjects).run(stream, size)


# The first rows go straight to the exact checks: the fast path's matcher takes longer to compile
# than a small file takes to check exactly, and it decides nothing the exact checks would not.
EXACT_ROWS = 64


def _formulas(config: Config) -> bool:
    return config.policy.unsafe_allow_formula_cells


@dataclass(frozen=True, slots=True)
class _Layout:
    """How one file's header maps onto the standard."""

    width: int
    cells: tuple[tuple[int, Column], ...]
    gate: Gate
    fast: Callable[[Sequence[str]], bool] | None
    collect: Callable[[Sequence[str]], None]  # collects who is in a row, if asked (Report.subjects)


class _Fills:
    """The non-empty cells of each Table 1 column, counted a batch of rows at a time: transposing a batch
    and counting its empty strings runs in C, where a test per cell would cost more than the fast path.

    Only rows of the header's width are counted (another row is an error of its own, and its cells
    would not line up); the batch is small because a row may be up to `limits.max_line_bytes` long.
    """

    BATCH = 128

    def __init__(self, layout: _Layout, filled: Counter[str]) -> None:
        self.width, self.filled = layout.width, filled
        self.columns = tuple((index, column.name) for index, column in layout.cells)
        self.rows: list[list[str]] = []
        for _, name in self.columns:
            filled[name] += 0  # a column in the header is counted even if it is never filled

    def add(self, row: list[str]) -> None:
        if len(row) == self.width:
            self.rows.append(row)
            if len(self.rows) == self.BATCH:
                self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        cells = list(zip(*self.rows, strict=True))
        for index, name in self.columns:
            column = cells[index]
            self.filled[name] += len(column) - column.count("")
        self.rows.clear()


class _Validation:
    def __init__(
        self, path: Path, agency: Agency, config: Config, standard: Standard, rules: RowRules, *, subjects: bool = False
    ) -> None:
        self.path, self.agency, self.config, self.standard, self.rules = path, agency, config, standard, rules
        self.limits, self.subjects = config.limits, subjects

    def new_report(self) -> Report:
        return Report(
            file=str(self.path),
            agency=self.agency.id,
            kind=self.agency.kind,
            period=self.rules.period,
            limit=self.limits.max_reported_errors,
            subjects=Subjects() if self.subjects else None,
        )

    def run(self, stream: BinaryIO, size: int) -> Report:
        report = self.new_report()
        head = stream.read(4)
        if size > self.limits.max_file_bytes:
            report.add(
                Issue(
                    None,
                    None,
                    "file-too-large",
                    f"is {size:,} bytes, over the partnership's limit of "
                    f"{self.limits.max_file_bytes:,} (limits.max_file_bytes): split it or ask the admin",
                )
            )
        elif not head:
            report.add(Issue(None, None, "empty-file", "is empty (0 bytes): export it again with its header row"))
        elif head.startswith(UTF16_BOMS):
            report.add(Issue(None, None, "encoding", "is UTF-16 (Excel's 'Unicode Text'): save it as 'CSV UTF-8'"))
        else:
            encoding = "utf-8-sig" if head.startswith(UTF8_BOM) else "utf-8"
            try:
                return self.scan(stream, encoding, report)
            except UnicodeDecodeError:
                return self.retry_legacy(stream, encoding)
        return report

    def retry_legacy(self, stream: BinaryIO, encoding: str) -> Report:
        """Not UTF-8: accept Windows-1252 (Excel's plain 'CSV') if every byte is defined there."""
        offset, byte = first_bad_byte(stream, "utf-8") or (0, 0)
        legacy = None if encoding == "utf-8-sig" else first_bad_byte(stream, "cp1252")
        if encoding == "utf-8" and legacy is None:
            return self.scan(stream, "cp1252", self.new_report())
        report = self.new_report()
        detail = f"byte 0x{byte:02X} at offset {offset:,} is not UTF-8"
        if legacy is not None:
            detail += f", and byte 0x{legacy[1]:02X} at offset {legacy[0]:,} is not Windows-1252"
        report.add(
            Issue(
                None,
                None,
                "encoding",
                f"is neither UTF-8 nor Windows-1252 ({detail}): "
                "save it from the spreadsheet as 'CSV UTF-8 (Comma delimited)'",
            )
        )
        return report

    def scan(self, stream: BinaryIO, encoding: str, report: Report) -> Report:
        stream.seek(0)
        report.encoding = encoding
        csv.field_size_limit(self.limits.max_cell_chars)
        guard = LineGuard(stream, self.limits.max_line_bytes)
        text = io.TextIOWrapper(io.BufferedReader(guard, READ_SIZE), encoding=encoding, errors="strict", newline="")
        records = RecordGuard(text, self.limits.max_line_bytes)
        try:
            self.scan_records(csv.reader(records, strict=True), records, report)
        finally:
            text.detach()
        return report

    def scan_records(self, reader: Iterator[list[str]], records: RecordGuard, report: Report) -> None:
        row_number, last_row = 0, self.limits.max_rows + 1  # row_number: the last record taken
        fills: _Fills | None = None
        try:
            header = next(reader, None)
            records.next_record()
            if header is None:
                report.add(Issue(None, None, "empty-file", "has no header row: export it again with its header row"))
                return
            row_number = 1
            if len(header) > self.standard.max_header_cells:
                report.add(self.too_many_columns(len(header)))
                return  # before matching the header or compiling its row matcher
            layout = self.layout(header, report)
            if layout is None:
                return
            passes = layout.gate.then(layout.fast)
            fills = _Fills(layout, report.tally.filled)
            for row_number, row in enumerate(reader, start=2):
                records.next_record()
                if row_number > last_row:
                    report.add(
                        Issue(
                            None,
                            None,
                            "too-many-rows",
                            f"has more than {self.limits.max_rows:,} rows "
                            "(limits.max_rows): split it or ask the admin to raise the limit",
                        )
                    )
                    break
                fills.add(row)
                layout.collect(row)
                if row_number > EXACT_ROWS and passes(row):
                    continue
                self.check_row(row, row_number, layout, report)
        except csv.Error as exc:
            report.add(self.syntax_issue(row_number + 1, str(exc)))
        except LineTooLong as exc:
            report.add(
                Issue(
                    None,
                    None,
                    "line-too-long",
                    f"line {exc.line:,} of the file is over {self.limits.max_line_bytes:,} bytes "
                    "(limits.max_line_bytes); reading stopped there: is it really a CSV?",
                )
            )
        except RecordTooLong:
            report.add(self.record_too_long(row_number + 1))
        finally:
            if fills is not None:
                fills.flush()
        report.rows = max(min(row_number, last_row) - 1, 0)
        if report.rows == 0 and report.valid:
            report.add(Issue(None, None, "no-rows", "has a header but no rows: there is nothing to share"))

    def too_many_columns(self, cells: int) -> Issue:
        columns = len(self.standard.columns)
        return Issue(
            1,
            None,
            "too-many-columns",
            f"has {cells:,} cells, and a Table 1 header has at most {self.standard.max_header_cells:,} "
            f"({HEADER_CELLS_PER_COLUMN} for each of its {columns} columns); reading stopped here: "
            "remove the columns that are not in Table 1 (forename, surname, gender, date_of_birth, ...) "
            "and export again",
        )

    def record_too_long(self, row: int) -> Issue:
        fix = (
            "a Table 1 header is one short line: check its quotes"
            if row == 1
            else 'look for a quote that is never closed (a quote inside a cell is written twice: "")'
        )
        return Issue(
            row,
            None,
            "line-too-long",
            f"runs over {self.limits.max_line_bytes:,} characters across quoted line breaks "
            f"(limits.max_line_bytes); reading stopped here: {fix}",
        )

    def syntax_issue(self, row: int, problem: str) -> Issue:
        if "field larger than field limit" in problem:
            return Issue(
                row,
                None,
                "cell-too-long",
                f"has a cell over {self.limits.max_cell_chars:,} characters "
                "(limits.max_cell_chars); reading stopped here: shorten it",
            )
        return Issue(
            row,
            None,
            "csv-syntax",
            f"is not valid CSV ({problem}); reading stopped here: "
            'check the quotes in this row (a quote inside a cell is written twice: "")',
        )

    def layout(self, header: list[str], report: Report) -> _Layout | None:
        """Map header cells to columns, reporting unknown, duplicate, missing and not-held ones."""
        names = [self.standard.column_for(cell) for cell in header]
        report.columns = [name or mask(cell) for cell, name in zip(header, names, strict=True)]
        if not any(names):
            report.add(
                Issue(
                    1,
                    None,
                    "no-header",
                    f"row 1 names none of the Table 1 columns in its {len(header)} "
                    "cell(s): the file must start with its header row, e.g. forename,surname,gender,...",
                )
            )
            return None
        seen: dict[str, int] = {}
        layout: list[Column | None] = []
        for index, (cell, name) in enumerate(zip(header, names, strict=True)):
            layout.append(self.header_cell(index, cell, name, seen, report))
            if name is not None and name not in seen:
                seen[name] = index
        for name, column in self.standard.columns.items():
            if column.required and name not in seen:
                report.add(Issue(1, name, "missing-column", f"required column {name} is not in the header: add it"))
        cells = tuple((index, column) for index, column in enumerate(layout) if column is not None)
        positions = {column.name: index for index, column in cells}
        gate = Gate(layout, formula_guard=not self.rules.allow_formulas)
        collect = collector(positions, len(header), report.subjects)
        return _Layout(len(header), cells, gate, self.rules.fast(positions), collect)

    def header_cell(
        self, index: int, cell: str, name: str | None, seen: dict[str, int], report: Report
    ) -> Column | None:
        letter = column_letter(index)
        if name is None:
            close = difflib.get_close_matches(header_key(cell), list(self.standard.headers), 1, 0.75)
            hint = f" (did you mean {self.standard.headers[close[0]]}?)" if close else ""
            report.add(
                Issue(
                    1,
                    letter,
                    "unknown-column",
                    f"the header in column {letter} is not a Table 1 "
                    f"column{hint}: rename it to the agreed name or remove the column",
                    mask(cell),  # a header cell is a cell: its shape, never its text
                )
            )
            return None
        if name in seen:
            report.add(
                Issue(
                    1,
                    name,
                    "duplicate-column",
                    f"{name} is in the header twice (columns {column_letter(seen[name])} and {letter}): keep one",
                )
            )
            return None
        holders = self.standard.holders_of(name, self.config.ownership)
        if self.agency.kind not in holders:
            report.add(
                Issue(
                    1,
                    name,
                    "not-held",
                    f"{name} may be shared only by its original holders "
                    f"({', '.join(holders)}), and {self.agency.id} is a {self.agency.kind} agency "
                    "(Solihull 1.4.1): remove the column",
                )
            )
            return None
        return self.standard.columns[name]

    def check_row(self, row: list[str], row_number: int, layout: _Layout, report: Report) -> None:
        """The exact checks, for a row the fast path did not pass: report every error in it."""
        if not any(row):
            report.add(Issue(row_number, None, "blank-row", "is empty: delete the row"))
            return
        if len(row) != layout.width:
            report.add(
                Issue(
                    row_number,
                    None,
                    "field-count",
                    f"has {len(row)} cells but the header has "
                    f"{layout.width}: look for an unquoted comma or a missing cell",
                )
            )
            return
        present: dict[str, str] = {}
        for index, column in layout.cells:
            value = row[index]
            if not value:
                if column.required:
                    report.add(Issue(row_number, column.name, "required", f"{column.name} is required: fill it in"))
                continue
            present[column.name] = value
            failure = column.failure(value) or self.rules.cell(column, value)
            if failure is not None:
                report.add(
                    Issue(row_number, column.name, failure.rule, f"{column.name} {failure.message}", mask(value))
                )
        found = self.rules.row(present)
        if found is not None:
            column_name, failure = found
            report.add(Issue(row_number, column_name, failure.rule, failure.message, mask(present[column_name])))
