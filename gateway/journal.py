"""Durable states of submissions, deliveries and pulls (the journal seam; SQLite for now)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class SubmissionRecord:
    id: str
    agency: str
    name: str
    sha256: str
    status: str
    updated: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Journal:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.db = connection

    def delivered_copy(self, agency: str, sha256: str) -> SubmissionRecord | None:
        """A submission of the same bytes from `agency` that was already delivered, if any."""
        row = self.db.execute(
            "SELECT id, agency, name, sha256, status, updated FROM submissions"
            " WHERE agency = ? AND sha256 = ? AND status = 'delivered'",
            (agency, sha256),
        ).fetchone()
        return None if row is None else SubmissionRecord(*row)

    def record_submission(
        self,
        submission_id: str,
        agency: str,
        name: str,
        sha256: str,
        status: str,
        *,
        officer: str | None = None,
        marking: str | None = None,
        period: str | None = None,
        rows: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Insert or move a submission to `status` (received, delivered, rejected, duplicate)."""
        now = _now()
        self.db.execute(
            "INSERT INTO submissions (id, agency, name, sha256, status, officer, marking, period, rows, reason,"
            " created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET status = excluded.status, officer = excluded.officer,"
            " marking = excluded.marking, period = excluded.period, rows = excluded.rows,"
            " reason = excluded.reason, updated = excluded.updated",
            (submission_id, agency, name, sha256, status, officer, marking, period, rows, reason, now, now),
        )

    def record_delivery(
        self, submission_id: str, recipient: str, package: str, method: str, key_id: str, expires: str
    ) -> None:
        self.db.execute(
            "INSERT INTO deliveries (submission, recipient, package, method, key_id, status, created, expires)"
            " VALUES (?, ?, ?, ?, ?, 'delivered', ?, ?) ON CONFLICT (submission, recipient) DO NOTHING",
            (submission_id, recipient, package, method, key_id, _now(), expires),
        )

    def pulled(self, package: str, puller: str) -> bool:
        row = self.db.execute("SELECT 1 FROM pulls WHERE package = ? AND puller = ?", (package, puller)).fetchone()
        return row is not None

    def record_pull(self, package: str, puller: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO pulls (package, puller, pulled) VALUES (?, ?, ?)", (package, puller, _now())
        )

    def current_gateway_key(self) -> str | None:
        row = self.db.execute("SELECT fingerprint FROM gateway_keys WHERE status = 'current'").fetchone()
        return None if row is None else str(row[0])

    def add_gateway_key(self, fingerprint: str, expires: str | None) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("UPDATE gateway_keys SET status = 'retired' WHERE status = 'current'")
            self.db.execute(
                "INSERT INTO gateway_keys (fingerprint, created, expires, status) VALUES (?, ?, ?, 'current')",
                (fingerprint, _now(), expires),
            )
