"""The receipts the gateway accepted: who received which package, and when (the caller audits each)."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.adapters.db import Database, writing
from gateway.core.receipt import Receipt


class Receipts:
    """The receipts table."""

    def __init__(self, connection: Database) -> None:
        self.db = connection

    def record(self, receipt: Receipt) -> bool:
        """Remember a checked receipt; False if this key had already receipted this package (nothing changes)."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with writing(self.db):
            done = self.db.execute(
                "INSERT INTO receipts (package, agency, fingerprint, officer, received, recorded)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (receipt.package, receipt.agency, receipt.fingerprint, receipt.officer, receipt.received, now),
            )
        return done.rowcount == 1

    def of(self, package: str, agency: str) -> list[tuple[str | None, str, str]]:
        """(officer, fingerprint, received) of each receipt for `package` delivered to `agency`, oldest first."""
        rows = self.db.execute(
            "SELECT officer, fingerprint, received FROM receipts WHERE package = ? AND agency = ? ORDER BY received",
            (package, agency),
        ).fetchall()
        return [(row["officer"], row["fingerprint"], row["received"]) for row in rows]

    def receipted(self, agency: str) -> set[str]:
        """The packages delivered to `agency` that at least one of its officers receipted."""
        rows = self.db.execute("SELECT DISTINCT package FROM receipts WHERE agency = ?", (agency,)).fetchall()
        return {row["package"] for row in rows}
