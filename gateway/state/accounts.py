"""The system accounts `access sync` made for officers: the register of what the gateway owns on the host."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.adapters.db import Database, writing

OPEN, LOCKED = "open", "locked"


@dataclass(frozen=True, slots=True)
class Account:
    """One officer's system account as the gateway made it: `status` is open (its key is served) or locked."""

    name: str
    uid: int
    officer: str
    agency: str
    status: str


class Accounts:
    """The accounts table; the caller records each change as an audit event."""

    def __init__(self, connection: Database) -> None:
        self.db = connection

    def all(self) -> dict[str, Account]:
        """Every account the gateway made, by name."""
        rows = self.db.execute("SELECT name, uid, officer, agency, status FROM accounts ORDER BY name").fetchall()
        return {
            row["name"]: Account(row["name"], row["uid"], row["officer"], row["agency"], row["status"]) for row in rows
        }

    def get(self, name: str) -> Account | None:
        """The account called `name`, or None if the gateway did not make it (one row: sshd asks at every login)."""
        row = self.db.execute(
            "SELECT name, uid, officer, agency, status FROM accounts WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else Account(row["name"], row["uid"], row["officer"], row["agency"], row["status"])

    def record(self, account: Account) -> None:
        """Remember `account` (made, or changed to `account.status`)."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with writing(self.db):
            self.db.execute(
                "INSERT INTO accounts (name, uid, officer, agency, created, changed, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET uid = excluded.uid, status = excluded.status,"
                " changed = excluded.changed",
                (account.name, account.uid, account.officer, account.agency, now, now, account.status),
            )
