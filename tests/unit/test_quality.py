"""The scorecard's timeliness against hand-computed due dates, from counts recorded at chosen times: on time
on the due day, late by the days after it, a correction counted, and no agency called late before its due day.
A root with the shipped gateway.toml (due_day 10) and schemas; the journal is real, no gpg is needed."""

from __future__ import annotations

import io
import shutil
from datetime import UTC, datetime
from pathlib import Path

from gateway.core.model import Period
from gateway.governance.quality import scorecard
from gateway.state.quality import QualityCounts
from gateway.state.root import Root
from gateway.validate import validate_stream
from tests.conftest import REPO, csv_bytes

HEADER = ["forename", "surname", "gender", "date_of_birth", "cro_number"]
ROW = ["Ann", "Lee", "F", "01/01/1990", "265416/21G"]


def _root(tmp_path: Path) -> Root:
    shutil.copy(REPO / "gateway" / "resources" / "gateway.toml", tmp_path / "gateway.toml")
    shutil.copytree(REPO / "gateway" / "resources" / "schemas", tmp_path / "schemas")
    return Root.open(tmp_path)


def _received(root: Root, ident: str, agency: str, at: datetime, rows: int, corrects: str | None = None) -> None:
    """A file of `rows` valid rows for 2026-10 from `agency`, validated at `at` and delivered."""
    data = csv_bytes([HEADER, *[ROW] * rows])
    report = validate_stream(
        io.BytesIO(data),
        len(data),
        Path(f"{agency}.csv"),
        root.config.agency(agency),
        root.config,
        root.standard,
        period=Period(2026, 10),
        today=at.date(),
    )
    assert report.valid
    root.journal.begin(ident, agency, f"{agency}-2026-10.csv", ident * 2)
    QualityCounts(root.journal).record(ident, agency, report, at, corrects)
    with root.db:  # the states the pipeline would have written on delivery
        root.db.execute("UPDATE submissions SET status = 'done' WHERE id = ?", (ident,))


def test_timeliness_is_the_first_accepted_file_against_the_due_day(tmp_path: Path) -> None:
    root = _root(tmp_path)
    _received(root, "a" * 20, "police", datetime(2026, 10, 10, 23, 59, tzinfo=UTC), 3)  # on the due day
    _received(root, "b" * 20, "probation", datetime(2026, 10, 13, 9, 0, tzinfo=UTC), 2)  # Tuesday: 3 days late
    _received(root, "c" * 20, "police", datetime(2026, 10, 20, 9, 0, tzinfo=UTC), 3, corrects="a" * 20)
    card = scorecard(root, Period(2026, 10), datetime(2026, 10, 21, tzinfo=UTC))
    scopes = {s.name: s for s in card.agencies}
    assert scopes["police"].timeliness.due == "2026-10-10"
    assert scopes["police"].timeliness.days_late == 0  # the correction, later, does not make it late
    assert scopes["police"].timeliness.first_accepted == "2026-10-10T23:59:00+00:00"
    assert scopes["probation"].timeliness.days_late == 3
    assert scopes["council"].timeliness.days_late is None
    assert (scopes["police"].corrections, scopes["police"].accepted, scopes["police"].rows_delivered) == (1, 2, 6)
    assert card.partnership.timeliness.late_agencies == ("council", "housing", "probation", "treatment", "yos")
    assert scopes["police"].completeness["cro_number"] == 100.0
    before_due = scorecard(root, Period(2026, 10), datetime(2026, 10, 9, tzinfo=UTC))
    assert before_due.partnership.timeliness.late_agencies == ("probation",)  # nobody else is late yet
