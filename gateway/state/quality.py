"""What validation counted in each submission, kept for the quality scorecard (Solihull 2.2, 6.1.2).

One row per submission that reached validation: its rows, the rows with an error, the non-empty cells
of each Table 1 column, the errors and failing rows of each rule, the failing cells of each column,
and the earlier package it corrects. Counts and names of columns and rules only: never a value, so
the scorecard can be built for any month without keeping personal data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.state.journal import DELIVERED, DONE, PARTIAL, REJECTED, REJECTING, Journal
from gateway.validate.report import Report

ACCEPTED = (DELIVERED, DONE, PARTIAL)
REFUSED = (REJECTING, REJECTED)


@dataclass(frozen=True, slots=True)
class Counted:
    """One submission's counts, with its state in the journal (None if the journal has no such submission)."""

    submission: str
    agency: str
    period: str
    received: str
    rows: int
    bad_rows: int
    valid: bool
    filled: Mapping[str, int]
    errors: Mapping[str, int]  # every error of each rule, file and header ones included
    rule_rows: Mapping[str, int]  # data rows failing each rule
    column_errors: Mapping[str, int]  # failing cells of each column
    corrects: str | None
    status: str | None

    @property
    def accepted(self) -> bool:
        return self.status in ACCEPTED

    @property
    def refused(self) -> bool:
        return self.status in REFUSED


def _counts(mapping: Mapping[str, int]) -> str:
    return json.dumps(dict(sorted(mapping.items())), separators=(",", ":"))


class QualityCounts:
    """The quality table, in the journal's database."""

    def __init__(self, journal: Journal) -> None:
        self.journal, self.db = journal, journal.db

    def record(
        self, submission: str, agency: str, report: Report, received: datetime, corrects: str | None = None
    ) -> None:
        """Keep what validating `submission` counted, the first time: a redo after a crash or a partial
        submission going on validates the same bytes again, and must not move when they arrived.

        Relaxed: the durable commit that seals or refuses the submission next carries it. Raises StorageError.
        """
        tally = report.tally
        with self.journal.relaxed() as db:
            db.execute(
                "INSERT INTO quality (submission, agency, period, received, rows, bad_rows, valid, filled,"
                " errors, rule_rows, column_errors, corrects) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (
                    submission,
                    agency,
                    str(report.period),
                    received.isoformat(timespec="seconds"),
                    report.rows,
                    tally.bad_rows,
                    int(report.valid),
                    _counts(tally.filled),
                    _counts(report.counts),
                    _counts(tally.rule_rows),
                    _counts(tally.column_errors),
                    corrects,
                ),
            )

    def between(self, first: str, last: str) -> list[Counted]:
        """Every submission counted for the periods `first`..`last` (YYYY-MM, inclusive), oldest first."""
        rows = self.db.execute(
            "SELECT q.*, s.status FROM quality q LEFT JOIN submissions s ON s.id = q.submission"
            " WHERE q.period BETWEEN ? AND ? ORDER BY q.received, q.submission",
            (first, last),
        ).fetchall()
        return [
            Counted(
                row["submission"],
                row["agency"],
                row["period"],
                row["received"],
                int(row["rows"]),
                int(row["bad_rows"]),
                bool(row["valid"]),
                json.loads(row["filled"]),
                json.loads(row["errors"]),
                json.loads(row["rule_rows"]),
                json.loads(row["column_errors"]),
                row["corrects"],
                row["status"],
            )
            for row in rows
        ]
