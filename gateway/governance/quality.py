"""The data-quality scorecard (Solihull 2.2, 6.1.2): what the gateway can measure of each agency's files.

Built only from the counts validation kept (`state.quality`), the journal's states and the audit
log's refusals: never from personal data, which the gateway does not keep. Of the six elements of
information quality it measures five: validity (rows and cells passing each rule, submissions accepted and refused),
completeness (how often each optional Table 1 column the agency may send is filled), timeliness
(the first accepted file against the due day), accuracy signals (corrections sent) and reliability
(the change from the month before). Relevance is the Designated Officers' judgement, not a count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime

from gateway.core.model import Period, period_in
from gateway.state.quality import Counted, QualityCounts
from gateway.state.root import Root

HISTORY_MONTHS = 12
PARTNERSHIP = "partnership"


@dataclass(frozen=True, slots=True)
class RuleCount:
    errors: int  # every error of the rule, file and header ones included
    rows: int  # data rows failing it


@dataclass(frozen=True, slots=True)
class Timeliness:
    due: str  # the due day of the month, YYYY-MM-DD
    first_accepted: str | None  # when the first accepted file for the month arrived
    days_late: int | None  # 0 when on time; None when nothing was accepted
    late_agencies: tuple[str, ...] = ()  # the partnership's: agencies late or with nothing accepted


@dataclass(frozen=True, slots=True)
class Scope:
    """One agency's month, or the partnership's."""

    name: str
    submissions: int
    accepted: int
    refused: int
    refused_before_validation: int  # refused before validation: unsigned, a bad signature, unreadable
    rows_checked: int  # the rows of every validated file, refused ones included
    rows_valid: int
    rows_delivered: int
    cells_checked: int
    cells_failing: int
    rules: Mapping[str, RuleCount]
    completeness: Mapping[str, float | None]  # each optional column: the share of delivered rows filled
    timeliness: Timeliness
    corrections: int  # accepted files that correct an earlier package
    rows_change: float | None  # delivered rows against the month before, in per cent
    error_rate_change: float | None  # error rate against the month before, in percentage points

    @property
    def error_rate(self) -> float | None:
        return None if not self.rows_checked else 100 * (self.rows_checked - self.rows_valid) / self.rows_checked

    @property
    def mean_completeness(self) -> float | None:
        return _mean(self.completeness.values())


@dataclass(frozen=True, slots=True)
class Point:
    month: str
    error_rate: float | None
    completeness: float | None
    days_late: int | None  # the first accepted file's; None: nothing accepted


@dataclass(frozen=True, slots=True)
class Scorecard:
    month: str
    generated: str
    due_day: int
    agencies: tuple[Scope, ...]
    partnership: Scope
    history: Mapping[str, tuple[Point, ...]] = field(default_factory=dict)  # scope name -> last 12 months

    @property
    def empty(self) -> bool:
        return self.partnership.submissions == 0


def scorecard(root: Root, month: Period, now: datetime) -> Scorecard:
    """The scorecard for `month`, with each scope's last 12 months for the charts; reads only."""
    months = [_shift(month, -back) for back in range(HISTORY_MONTHS - 1, -1, -1)]
    store = QualityCounts(root.journal)
    counted = store.between(str(months[0]), str(month))
    unvalidated = _refused_before_validation(root, months[0], month)
    by_month: dict[str, list[Counted]] = {str(m): [] for m in months}
    for item in counted:
        by_month[item.period].append(item)
    optional = _optional_columns(root)
    scopes: dict[str, list[Scope]] = {}
    previous: Mapping[str, Scope] = {}
    for period in [_shift(months[0], -1), *months]:
        items = by_month.get(str(period))
        if items is None:  # the month before the history: only the change needs it
            items = store.between(str(period), str(period))
        monthly = _month(root, period, items, unvalidated, optional, previous, now)
        previous = {scope.name: scope for scope in monthly}
        if period in months:
            for scope in monthly:
                scopes.setdefault(scope.name, []).append(scope)
    current = {name: history[-1] for name, history in scopes.items()}
    return Scorecard(
        month=str(month),
        generated=now.isoformat(timespec="seconds"),
        due_day=root.config.submissions.due_day,
        agencies=tuple(current[a] for a in sorted(root.config.agencies)),
        partnership=current[PARTNERSHIP],
        history={
            name: tuple(
                Point(str(m), s.error_rate, s.mean_completeness, s.timeliness.days_late)
                for m, s in zip(months, history, strict=True)
            )
            for name, history in scopes.items()
        },
    )


BEFORE_VALIDATION = ("intake", "authenticate")  # the stages whose refusals validation never counted


def _refused_before_validation(root: Root, first: Period, last: Period) -> dict[tuple[str, str], int]:
    """How many files each agency had refused before validation (unsigned, a bad signature...), by (agency,
    period): from the audit log, which has every refusal (a refused copy of bytes delivered before, too),
    placed by the period in the file's name, else the month of the refusal."""
    since = datetime(first.year, first.month, 1, tzinfo=UTC)
    counts: Counter[tuple[str, str]] = Counter()
    for entry in root.audit.select(since, "submission.rejected"):
        if entry.get("stage") not in BEFORE_VALIDATION:
            continue
        period = period_in(str(entry.get("file", ""))) or Period.parse(str(entry.get("time", ""))[:7])
        if first <= period <= last:
            counts[str(entry.get("agency")), str(period)] += 1
    return dict(counts)


def _month(
    root: Root,
    period: Period,
    items: Sequence[Counted],
    unvalidated: Mapping[tuple[str, str], int],
    optional: Mapping[str, tuple[str, ...]],
    previous: Mapping[str, Scope],
    now: datetime,
) -> list[Scope]:
    """Every agency's scope for `period`, then the partnership's."""
    due = _due(period, root.config.submissions.due_day)
    scopes = []
    for agency in sorted(root.config.agencies):
        mine = [i for i in items if i.agency == agency]
        timely = _timeliness(mine, due)
        refused = unvalidated.get((agency, str(period)), 0)
        scopes.append(_scope(agency, mine, refused, optional[agency], timely, previous.get(agency)))
    late = tuple(s.name for s in scopes if _late(s.timeliness, now))
    everyone = sorted({c for columns in optional.values() for c in columns})
    partnership = _scope(
        PARTNERSHIP,
        [i for i in items if i.agency in root.config.agencies],
        sum(n for (agency, month), n in unvalidated.items() if month == str(period) and agency in root.config.agencies),
        tuple(everyone),
        Timeliness(due.isoformat(), None, None, late),
        previous.get(PARTNERSHIP),
        holders={c: {a for a, columns in optional.items() if c in columns} for c in everyone},
    )
    return [*scopes, partnership]


def _scope(
    name: str,
    items: Sequence[Counted],
    refused_before_validation: int,
    columns: Sequence[str],
    timeliness: Timeliness,
    before: Scope | None,
    *,
    holders: Mapping[str, set[str]] | None = None,
) -> Scope:
    """The counts of `items` for one scope; `holders` (the partnership's) limits each column's rows to
    the agencies that may send it."""
    accepted = [i for i in items if i.accepted]
    errors: Counter[str] = Counter()
    rows: Counter[str] = Counter()
    for item in items:
        errors.update(item.errors)
        rows.update(item.rule_rows)
    filled: Counter[str] = Counter()
    for item in accepted:
        filled.update(item.filled)
    checked = sum(i.rows for i in items)
    valid = checked - sum(i.bad_rows for i in items)
    delivered = sum(i.rows for i in accepted)
    completeness = {}
    for column in columns:
        base = delivered if holders is None else sum(i.rows for i in accepted if i.agency in holders[column])
        completeness[column] = None if not base else 100 * filled[column] / base
    scope = Scope(
        name=name,
        submissions=len(items) + refused_before_validation,
        accepted=len(accepted),
        refused=sum(1 for i in items if i.refused) + refused_before_validation,
        refused_before_validation=refused_before_validation,
        rows_checked=checked,
        rows_valid=valid,
        rows_delivered=delivered,
        cells_checked=sum(sum(i.filled.values()) for i in items),
        cells_failing=sum(sum(i.column_errors.values()) for i in items),
        rules={rule: RuleCount(errors[rule], rows[rule]) for rule in sorted(errors)},
        completeness=completeness,
        timeliness=timeliness,
        corrections=sum(1 for i in accepted if i.corrects),
        rows_change=None,
        error_rate_change=None,
    )
    return _against(scope, before)


def _against(scope: Scope, before: Scope | None) -> Scope:
    """`scope` with its change from the month before (None where either month has nothing to compare)."""
    if before is None:
        return scope
    rows = (
        None
        if not before.rows_delivered
        else 100 * (scope.rows_delivered - before.rows_delivered) / before.rows_delivered
    )
    now, then = scope.error_rate, before.error_rate
    return replace(scope, rows_change=rows, error_rate_change=None if now is None or then is None else now - then)


def _timeliness(items: Sequence[Counted], due: date) -> Timeliness:
    accepted = sorted(i.received for i in items if i.accepted)
    if not accepted:
        return Timeliness(due.isoformat(), None, None)
    first = accepted[0]
    late = (datetime.fromisoformat(first).date() - due).days
    return Timeliness(due.isoformat(), first, max(late, 0))


def _late(timeliness: Timeliness, now: datetime) -> bool:
    """Accepted after the due day, or nothing accepted and the due day has passed."""
    if timeliness.days_late is not None:
        return timeliness.days_late > 0
    return now.date() > date.fromisoformat(timeliness.due)


def _optional_columns(root: Root) -> dict[str, tuple[str, ...]]:
    """The optional Table 1 columns each agency may send (the ownership matrix): its completeness measures."""
    standard, ownership = root.standard, root.config.ownership
    return {
        agency.id: tuple(
            name
            for name, column in standard.columns.items()
            if not column.required and agency.kind in standard.holders_of(name, ownership)
        )
        for agency in root.config.agencies.values()
    }


def _due(period: Period, due_day: int) -> date:
    return date(period.year, period.month, due_day)  # due_day is 1 to 28: every month has it


def _shift(period: Period, months: int) -> Period:
    index = period.year * 12 + period.month - 1 + months
    return Period(index // 12, index % 12 + 1)


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return None if not known else sum(known) / len(known)
