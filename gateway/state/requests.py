"""The register of information requests between Designated Officers: who asked whom, when, by when, and the
outcome. Ids, agencies, officers and dates only: a request's text is kept encrypted (governance.requests)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.adapters.db import Database, writing

OPEN, ANSWERED, REFUSED = "open", "answered", "refused"
LOCAL = ZoneInfo("Europe/London")  # the day of receipt and "overdue" are the partners' days, not UTC's
_COLUMNS = (
    "id, from_agency, from_officer, to_agency, received, due, urgent, status, answered_by, answered_at,"
    " submission, package, key"
)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the register keeps it; `due` is a date (YYYY-MM-DD), the others UTC times."""

    id: str
    from_agency: str
    from_officer: str
    to_agency: str
    received: str
    due: str
    urgent: bool
    status: str
    answered_by: str | None
    answered_at: str | None
    submission: str | None  # the submission that answered it
    package: str | None  # the package that submission was delivered to the requesting agency as
    key: str  # the gateway key its text is encrypted to

    def days_overdue(self, today: date) -> int:
        """How many days past its due date an open request is (0 if it is not)."""
        if self.status != OPEN:
            return 0
        return max(0, (today - date.fromisoformat(self.due)).days)


def local_day(now: datetime) -> date:
    """The partners' date at `now`."""
    return now.astimezone(LOCAL).date()


def _record(row: Any) -> RequestRecord:
    values = dict(row)
    values["urgent"] = bool(values["urgent"])
    return RequestRecord(**values)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Requests:
    """The requests table. A change and the audit event it causes are committed together (the event is
    staged in the journal's audit outbox, as a submission's are): the caller then flushes the audit log."""

    def __init__(self, connection: Database) -> None:
        self.db = connection

    def _change(
        self,
        sql: str,
        parameters: tuple[Any, ...],
        ref: str,
        event: str,
        actor: str,
        agency: str,
        details: dict[str, Any],
    ) -> bool:
        with writing(self.db) as db:
            changed: bool = db.execute(sql, parameters).rowcount == 1
            if changed:
                entry = json.dumps({"event": event, "actor": actor, "agency": agency, "details": details})
                db.execute(
                    "INSERT INTO audit_outbox (ref, entry, created) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (ref, entry, _now()),
                )
        return changed

    def add(self, record: RequestRecord, details: dict[str, Any]) -> bool:
        """Register a request received (its text already stored) and stage `request.received`; False if the
        same request was registered before (nothing changes)."""
        return self._change(
            f"INSERT INTO requests ({_COLUMNS}) VALUES ({', '.join('?' * 13)}) ON CONFLICT DO NOTHING",  # noqa: S608
            (
                record.id,
                record.from_agency,
                record.from_officer,
                record.to_agency,
                record.received,
                record.due,
                int(record.urgent),
                record.status,
                None,
                None,
                None,
                None,
                record.key,
            ),
            f"request:{record.id}:received",
            "request.received",
            record.from_officer,
            record.from_agency,
            details,
        )

    def get(self, request_id: str) -> RequestRecord | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM requests WHERE id = ?", (request_id,)).fetchone()  # noqa: S608
        return None if row is None else _record(row)

    def all(self, *, open_only: bool = False, agency: str | None = None) -> list[RequestRecord]:
        """Requests (only open ones; only those `agency` made or was asked), urgent first, then by due date."""
        sql = f"SELECT {_COLUMNS} FROM requests WHERE 1 = 1"  # noqa: S608 (a constant column list)
        parameters: list[str] = []
        if open_only:
            sql += " AND status = 'open'"
        if agency is not None:
            sql += " AND (from_agency = ? OR to_agency = ?)"
            parameters += [agency, agency]
        rows = self.db.execute(sql + " ORDER BY urgent DESC, due, received, id", parameters).fetchall()
        return [_record(row) for row in rows]

    def refused(self, record: RequestRecord, officer: str, details: dict[str, Any]) -> bool:
        """Record that `officer` refused an open request (the reason is stored encrypted); stage `request.refused`."""
        return self._change(
            "UPDATE requests SET status = 'refused', answered_by = ?, answered_at = ? WHERE id = ? AND status = 'open'",
            (officer, _now(), record.id),
            f"request:{record.id}:refused",
            "request.refused",
            officer,
            record.to_agency,
            details,
        )

    def answered(self, request_id: str, *, officer: str, submission: str, package: str, agency: str) -> bool:
        """Record that `submission` (delivered to the requester as `package`) answers the open request; stage
        `request.answered`. Idempotent: False if it was no longer open (a redo after a crash finds it done)."""
        details = {"request": request_id, "submission": submission, "package": package, "officer": officer}
        return self._change(
            "UPDATE requests SET status = 'answered', answered_by = ?, answered_at = ?, submission = ?, package = ?"
            " WHERE id = ? AND status = 'open'",
            (officer, _now(), submission, package, request_id),
            f"request:{request_id}:answered",
            "request.answered",
            officer,
            agency,
            details,
        )

    def open_by_agency(self) -> dict[str, int]:
        """How many open requests each agency has been asked to answer."""
        rows = self.db.execute("SELECT to_agency, COUNT(*) FROM requests WHERE status = 'open' GROUP BY to_agency")
        return {str(agency): int(count) for agency, count in rows.fetchall()}

    def overdue(self, today: date) -> list[RequestRecord]:
        """The open requests whose due date has passed, urgent first, then the longest overdue."""
        return [r for r in self.all(open_only=True) if r.days_overdue(today) > 0]

    def sealing_keys(self) -> set[str]:
        """The gateway keys some request's kept text is encrypted to (kept while they are)."""
        rows = self.db.execute("SELECT DISTINCT key FROM requests WHERE text_purged IS NULL").fetchall()
        return {str(row[0]) for row in rows}

    def closed_before(self, cutoff: str) -> list[RequestRecord]:
        """The answered or refused requests closed before `cutoff` (UTC, ISO 8601) whose text is still kept."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM requests WHERE status IN ('answered', 'refused')"  # noqa: S608 (constants)
            " AND answered_at < ? AND text_purged IS NULL ORDER BY answered_at, id",
            (cutoff,),
        ).fetchall()
        return [_record(row) for row in rows]

    def texts_purged(self, request_ids: list[str], when: str) -> None:
        """Record that the texts of `request_ids` were deleted at `when` (the register keeps the rest)."""
        with writing(self.db) as db:
            db.executemany(
                "UPDATE requests SET text_purged = ? WHERE id = ? AND text_purged IS NULL",
                [(when, ident) for ident in request_ids],
            )

    def text_purged(self, request_id: str) -> str | None:
        """When the request's text was deleted with retention, if it was."""
        row = self.db.execute("SELECT text_purged FROM requests WHERE id = ?", (request_id,)).fetchone()
        return None if row is None or row[0] is None else str(row[0])


def answerable(
    record: RequestRecord | None, request_id: str, agency: str, recipients: set[str], submission: str | None = None
) -> str | None:
    """Why `agency` may not answer the request by a submission delivered to `recipients`, or None if it may.

    `submission`: the submission asking (a redo after a crash finds its own answer recorded: that is fine)."""
    if record is None:
        return f"there is no request {request_id} in the register (`iom-gateway request list` shows them)"
    if record.to_agency != agency:
        return f"request {record.id} asks {record.to_agency}, not {agency}: only the agency asked answers it"
    if record.status != OPEN and not (submission is not None and record.submission == submission):
        return f"request {record.id} is {record.status} already: it can be answered once"
    if record.from_agency not in recipients:
        return (
            f"{agency} does not send to {record.from_agency}, which asked (request {record.id}): the answer would "
            f"never reach it; give {agency} a route to {record.from_agency} in gateway.toml"
        )
    return None
