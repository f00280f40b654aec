"""What became of one submission: the outcomes the daemon and the CLI report, and the refusal a stage raises."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.adapters.fsio import shown
from gateway.validate import Report


@dataclass(frozen=True, slots=True)
class Delivered:
    agency: str
    name: str
    submission: str
    officer: str
    marking: str
    rows: int
    packages: tuple[Path, ...]
    deferred: tuple[tuple[str, str], ...] = ()  # (recipient, why): not made yet; the file stays in its outbox

    @property
    def summary(self) -> str:
        recipients = ", ".join(p.parent.name for p in self.packages) or "nobody yet"
        what = f"{self.rows} rows, {self.marking}"
        text = f"delivered {self.agency}/{shown(self.name)} from {self.officer}: {what}, to {recipients}"
        for recipient, why in self.deferred:
            text += f"; deferred for {recipient} ({why}: the gateway's configuration, not the file)"
        if self.deferred:
            text += "; the file stays in the outbox until then"
        return text


@dataclass(frozen=True, slots=True)
class Rejected:
    agency: str
    name: str
    stage: str
    reasons: tuple[str, ...]
    report: Path | None  # None when the agency's rejected/ folder could not be written safely

    @property
    def summary(self) -> str:
        return f"rejected  {self.agency}/{shown(self.name)} at {self.stage}: {self.reasons[0]}"


@dataclass(frozen=True, slots=True)
class Duplicate:
    agency: str
    name: str
    original: str

    @property
    def summary(self) -> str:
        return f"duplicate {self.agency}/{shown(self.name)}: already delivered as {self.original}"


@dataclass(frozen=True, slots=True)
class Waiting:
    agency: str
    name: str
    why: str = "no signature yet"
    soon: bool = True  # look again in a second (False: the next full scan is soon enough)

    @property
    def summary(self) -> str:
        return f"waiting   {self.agency}/{shown(self.name)}: {self.why}"


@dataclass(frozen=True, slots=True)
class Deferred:
    """The environment failed (disk full, permissions): the file stays in the outbox for the next try."""

    agency: str
    name: str
    reason: str

    @property
    def summary(self) -> str:
        return f"deferred  {self.agency}/{shown(self.name)}: {self.reason}; it stays in the outbox and is tried again"


@dataclass(frozen=True, slots=True)
class Received:
    """A recipient officer's signed receipt for a package, checked and recorded (`package.received`)."""

    agency: str
    name: str
    package: str
    officer: str

    @property
    def summary(self) -> str:
        return f"received  {self.agency}/{shown(self.package)} by {self.officer}"


@dataclass(frozen=True, slots=True)
class Requested:
    """A Designated Officer's signed information request, dropped into requests/ and registered."""

    agency: str
    name: str
    request: str
    to_agency: str
    due: str

    @property
    def summary(self) -> str:
        return f"request   {self.agency}/{shown(self.name)}: {self.request} to {self.to_agency}, due {self.due}"


Outcome = Delivered | Rejected | Duplicate | Waiting | Deferred | Received | Requested


class Refused(Exception):
    """A stage refused the submission (internal: becomes a Rejected outcome)."""

    def __init__(
        self, stage: str, reasons: Sequence[str], report: Report | None = None, *, advice: str | None = None
    ) -> None:
        super().__init__(stage)
        self.stage, self.reasons, self.report = stage, tuple(reasons), report
        self.advice = advice  # what the sender can do, when it is not "fix the file and submit it again"
