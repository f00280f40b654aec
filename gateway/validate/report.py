"""The validation report: every error with row, column, rule, fix and a masked value."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.model import Period
from gateway.validate.subjects import Subjects

SHAPE_CHARS = 40
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def mask(value: str) -> str:
    """The shape of a value without its content: letters become A/a, digits 9 (`BH1 1AA` -> `AA9 9AA`)."""
    out = []
    for char in value[:SHAPE_CHARS]:
        if char.isdigit():
            out.append("9")
        elif char.isalpha():
            out.append("a" if char.islower() else "A")
        elif char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isspace():
            out.append(" ")
        elif char.isprintable():
            out.append(char)
        else:
            out.append(f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
    shape = "".join(out)
    if len(value) > SHAPE_CHARS:
        shape += f"... ({len(value):,} characters)"
    return shape


def column_letter(index: int) -> str:
    """The spreadsheet letter of a 0-based column index: 0 -> A, 26 -> AA."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


@dataclass(frozen=True, slots=True)
class Issue:
    """One error. `row` is the spreadsheet row (header = 1), None for the whole file."""

    row: int | None
    column: str | None
    rule: str
    message: str
    shape: str | None = None


@dataclass(slots=True)
class Tally:
    """Counts for the quality scorecard, kept beside the report: never a value, only how many.

    `filled`: non-empty cells per Table 1 column over the rows of the right width; `bad_rows`: data rows
    with at least one error; `rule_rows`: data rows failing each rule; `column_errors`: failing cells per column.
    """

    filled: Counter[str] = field(default_factory=Counter)
    bad_rows: int = 0
    rule_rows: Counter[str] = field(default_factory=Counter)
    column_errors: Counter[str] = field(default_factory=Counter)
    last_row: int = 0
    last_rule_row: dict[str, int] = field(default_factory=dict)

    def count(self, issue: Issue) -> None:
        """Count `issue` against its row, rule and column (issues come in row order; file and header issues
        belong to no data row)."""
        if issue.row is None or issue.row < 2:
            return
        if issue.row != self.last_row:
            self.bad_rows += 1
            self.last_row = issue.row
        if self.last_rule_row.get(issue.rule) != issue.row:
            self.rule_rows[issue.rule] += 1
            self.last_rule_row[issue.rule] = issue.row
        if issue.column:
            self.column_errors[issue.column] += 1


@dataclass(slots=True)
class Report:
    """Everything wrong with one file; `issues` holds the first `limit` errors, `counts` all of them."""

    file: str
    agency: str
    kind: str
    period: Period
    limit: int
    encoding: str | None = None
    rows: int = 0
    columns: list[str] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    tally: Tally = field(default_factory=Tally)
    # who is in the file, as subject keys, when the caller asked (the pipeline does): personal data,
    # never serialised or shown; only a valid report's are used, hashed, for the subject access index
    subjects: Subjects | None = field(default=None, repr=False, compare=False)

    @property
    def valid(self) -> bool:
        return not self.counts

    @property
    def omitted(self) -> int:
        return sum(self.counts.values()) - len(self.issues)

    def add(self, issue: Issue) -> None:
        """Record an error (its detail only while under the limit; it is always counted)."""
        self.counts[issue.rule] += 1
        self.tally.count(issue)
        if len(self.issues) < self.limit:
            self.issues.append(issue)

    def to_json(self) -> dict[str, Any]:
        """The machine-readable form SPEC.md fixes for `validate --json`."""
        return {
            "file": self.file,
            "agency": self.agency,
            "valid": self.valid,
            "rows": self.rows,
            "errors": [
                {"row": i.row, "column": i.column, "rule": i.rule, "message": i.message, "shape": i.shape}
                for i in self.issues
            ],
            "counts": dict(sorted(self.counts.items())),
            "kind": self.kind,
            "period": str(self.period),
            "encoding": self.encoding,
            "omitted": self.omitted,
        }

    def to_text(self) -> str:
        """The report for people: one line per error, then the counts."""
        head = f"{self.file}: agency {self.agency} ({self.kind}), period {self.period}"
        if self.encoding:
            head += f", {_ENCODING_NAMES.get(self.encoding, self.encoding)}"
        if self.valid:
            return f"{head}\nVALID: {self.rows:,} row(s), every row meets Table 1 and the ownership matrix\n"
        total = sum(self.counts.values())
        lines = [head, f"INVALID: {total:,} error(s) in a file of {self.rows:,} row(s); the file is rejected whole"]
        lines += [_issue_line(issue) for issue in self.issues]
        if self.omitted:
            lines.append(f"  ... and {self.omitted:,} more error(s) not listed (the counts below include them)")
        lines.append("counts: " + ", ".join(f"{rule} {n:,}" for rule, n in sorted(self.counts.items())))
        return "\n".join(lines) + "\n"


_ENCODING_NAMES: Mapping[str, str] = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8 with BOM", "cp1252": "Windows-1252"}


def _issue_line(issue: Issue) -> str:
    where = "file" if issue.row is None else f"row {issue.row}"
    if issue.column:
        where += f", {issue.column}"
    shape = f" (value shaped {issue.shape!r})" if issue.shape is not None else ""
    return f"  {where}: {issue.message} [{issue.rule}]{shape}"
