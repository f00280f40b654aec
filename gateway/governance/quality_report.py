"""The scorecard as JSON, CSV or one self-contained HTML page (inline CSS and SVG: no script, no network)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from html import escape
from typing import Any

from gateway.governance.quality import PARTNERSHIP, Point, Scope, Scorecard

NOT_MEASURED = "Relevance, the sixth element (Solihull 2.2), is the Designated Officers' judgement: no count shows it."


def to_json(card: Scorecard) -> str:
    """The scorecard as JSON: every scope's measures, with its error rate and mean completeness."""

    def scope(s: Scope) -> dict[str, Any]:
        return {**asdict(s), "error_rate": _round(s.error_rate), "mean_completeness": _round(s.mean_completeness)}

    data = {
        "month": card.month,
        "generated": card.generated,
        "due_day": card.due_day,
        "empty": card.empty,
        "agencies": [scope(s) for s in card.agencies],
        "partnership": scope(card.partnership),
        "history": {name: [asdict(p) for p in points] for name, points in card.history.items()},
        "not_measured": NOT_MEASURED,
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def to_csv(card: Scorecard) -> str:
    """The scorecard as one measure per line: month, scope, element, measure, item, value."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["month", "scope", "element", "measure", "item", "value"])
    for scope in (*card.agencies, card.partnership):
        for element, measure, item, value in _measures(scope):
            writer.writerow([card.month, scope.name, element, measure, item, "" if value is None else value])
    return out.getvalue()


def _measures(s: Scope) -> Iterator[tuple[str, str, str, object]]:
    yield from (
        ("validity", "submissions", "", s.submissions),
        ("validity", "accepted", "", s.accepted),
        ("validity", "refused", "", s.refused),
        ("validity", "refused_before_validation", "", s.refused_before_validation),
        ("validity", "rows_checked", "", s.rows_checked),
        ("validity", "rows_valid", "", s.rows_valid),
        ("validity", "error_rate_percent", "", _round(s.error_rate)),
        ("validity", "cells_checked", "", s.cells_checked),
        ("validity", "cells_failing", "", s.cells_failing),
    )
    for rule, count in s.rules.items():
        yield ("validity", "errors", rule, count.errors)
        yield ("validity", "rows_failing", rule, count.rows)
    for column, share in s.completeness.items():
        yield ("completeness", "filled_percent", column, _round(share))
    yield from (
        ("completeness", "mean_filled_percent", "", _round(s.mean_completeness)),
        ("timeliness", "due", "", s.timeliness.due),
        ("timeliness", "first_accepted", "", s.timeliness.first_accepted),
        ("timeliness", "days_late", "", s.timeliness.days_late),
        ("accuracy", "corrections", "", s.corrections),
        ("reliability", "rows_delivered", "", s.rows_delivered),
        ("reliability", "rows_change_percent", "", _round(s.rows_change)),
        ("reliability", "error_rate_change_points", "", _round(s.error_rate_change)),
    )
    if s.name == PARTNERSHIP:
        yield ("timeliness", "late_agencies", "", " ".join(s.timeliness.late_agencies))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #111; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #999; padding: .2em .5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.total td { font-weight: bold; }
td { white-space: nowrap; } td.list { white-space: normal; }
.empty { border: 2px solid #111; padding: .8em; font-size: 1.1em; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; break-inside: avoid; } figcaption { font-weight: bold; }
svg text { font: 10px sans-serif; fill: #111; }
@media print { body { margin: 1cm; } .charts { display: block; } figure { margin-bottom: 1em; } }
"""


def to_html(card: Scorecard) -> str:
    """The scorecard as one page that opens offline and prints: tables, then inline-SVG charts."""
    title = f"Data-quality scorecard: {card.month}"
    parts = [
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>',
        f"<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{escape(title)}</h1>",
        f'<p class="meta">Generated {escape(card.generated)} by iom-gateway from the counts validation kept; '
        f"no personal data. Files are due by day {card.due_day} of their month.</p>",
    ]
    if card.empty:
        parts.append(
            f'<p class="empty" id="empty"><strong>No submissions were recorded for {escape(card.month)}.</strong> '
            "Every measure below is empty for this month.</p>"
        )
    parts += [_summary(card), _rules(card), _completeness(card), _timeliness(card), _charts(card)]
    parts.append(f"<p>{escape(NOT_MEASURED)}</p>")
    return "\n".join(parts) + "\n</body>\n</html>\n"


def _cell(value: object, suffix: str = "", *, css: str = "") -> str:
    tag = f'<td class="{css}">' if css else "<td>"
    if value is None:
        return f"{tag}–</td>"
    if isinstance(value, float):
        return f"{tag}{value:,.1f}{suffix}</td>"
    return f"{tag}{escape(str(value))}{suffix}</td>"


def _summary(card: Scorecard) -> str:
    head = (
        "Scope",
        "Files",
        "Accepted",
        "Refused",
        "Rows checked",
        "Rows valid",
        "Error rate",
        "Cells failing",
        "Completeness",
        "Due",
        "First accepted",
        "Days late",
        "Corrections",
        "Rows vs month before",
        "Error rate vs month before",
    )
    rows = []
    for s in (*card.agencies, card.partnership):
        t = s.timeliness
        first = t.first_accepted[:10] if t.first_accepted else None
        late: object = t.days_late if t.days_late is not None or s.name == PARTNERSHIP else "none accepted"
        if s.name == PARTNERSHIP:
            late = "late: " + (", ".join(t.late_agencies) or "none")
        cells = [
            f"<td>{escape(s.name)}</td>",
            _cell(s.submissions),
            _cell(s.accepted),
            _cell(s.refused),
            _cell(s.rows_checked),
            _cell(s.rows_valid),
            _cell(s.error_rate, " %"),
            _cell(s.cells_failing),
            _cell(s.mean_completeness, " %"),
            _cell(t.due),
            _cell(first),
            _cell(late, css="list" if s.name == PARTNERSHIP else ""),
            _cell(s.corrections),
            _cell(s.rows_change, " %"),
            _cell(s.error_rate_change, " pt"),
        ]
        rows.append(f"<tr{_TOTAL if s.name == PARTNERSHIP else ''}>{''.join(cells)}</tr>")
    return _table("summary", "Summary", head, rows)


_TOTAL = ' class="total"'


def _table(ident: str, caption: str, head: Sequence[str], rows: Sequence[str]) -> str:
    header = "".join(f'<th scope="col">{escape(h)}</th>' for h in head)
    body = "\n".join(rows) or f'<tr><td colspan="{len(head)}">nothing recorded</td></tr>'
    return (
        f'<h2>{escape(caption)}</h2>\n<table id="{ident}">\n'
        f"<thead><tr>{header}</tr></thead>\n<tbody>\n{body}\n</tbody></table>"
    )


def _rules(card: Scorecard) -> str:
    """Rows failing each rule (and its share of the rows checked passing it), by scope."""
    scopes = (*card.agencies, card.partnership)
    rules = sorted({rule for s in scopes for rule in s.rules})
    rows = []
    for rule in rules:
        cells = [f"<td>{escape(rule)}</td>"]
        for s in scopes:
            count = s.rules.get(rule)
            if count is None:
                cells.append(_cell(0 if s.rows_checked else None))
                continue
            share = None if not s.rows_checked else 100 * (s.rows_checked - count.rows) / s.rows_checked
            passing = "" if share is None else f" ({share:.1f} % pass)"
            cells.append(f"<td>{count.rows:,} row(s), {count.errors:,} error(s){passing}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return _table("rules", "Validity: failures by rule", ("Rule", *(s.name for s in scopes)), rows)


def _completeness(card: Scorecard) -> str:
    """The share of delivered rows filling each optional column; – where the agency may not send it."""
    scopes = (*card.agencies, card.partnership)
    columns = list(card.partnership.completeness)
    rows = []
    for column in columns:
        cells = [f"<td>{escape(column)}</td>"]
        cells += [_cell(s.completeness.get(column), " %") for s in scopes]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return _table("completeness", "Completeness: optional columns filled", ("Column", *(s.name for s in scopes)), rows)


def _timeliness(card: Scorecard) -> str:
    """Each agency's days late by month over the last 12 months (0: on time; –: nothing accepted)."""
    months = [p.month for p in card.history.get(PARTNERSHIP, ())]
    rows = []
    for scope in card.agencies:
        cells = [f"<td>{escape(scope.name)}</td>"] + [_cell(p.days_late) for p in card.history.get(scope.name, ())]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    caption = "Timeliness: days late by month (0 on time, – nothing accepted)"
    return _table("timeliness", caption, ("Agency", *months), rows)


def _charts(card: Scorecard) -> str:
    figures = []
    for name in [*(s.name for s in card.agencies), PARTNERSHIP]:
        points = card.history.get(name, ())
        figures.append(
            f'<figure class="scope"><figcaption>{escape(name)}</figcaption>'
            f"{_bars(points, 'error_rate', 'Error rate (% of rows)')}"
            f"{_bars(points, 'completeness', 'Completeness (% of optional cells)')}</figure>"
        )
    months = next(iter(card.history.values()), ())
    span = f" ({months[0].month} to {months[-1].month})" if months else ""
    return (
        f"<h2>The last 12 months{span}</h2>\n<p>Each bar is a month; a dash marks a month with no file. The error "
        "rate's scale is set by its largest month.</p>\n"
        '<div class="charts">\n' + "\n".join(figures) + "\n</div>"
    )


_WIDTH, _HEIGHT, _LEFT, _TOP, _BOTTOM = 300, 110, 34, 16, 18


def _bars(points: Sequence[Point], measure: str, label: str) -> str:
    """A bar chart of one measure over the months (a dash where a month has no data), scaled to its largest value."""
    values = [getattr(p, measure) for p in points]
    top = 100.0 if measure == "completeness" else _nice(max((v for v in values if v is not None), default=0.0))
    plot_h = _HEIGHT - _TOP - _BOTTOM
    step = (_WIDTH - _LEFT) / max(len(points), 1)
    marks = [
        f'<text x="0" y="10">{escape(label)}</text>',
        f'<text x="{_LEFT - 3}" y="{_TOP + 4}" text-anchor="end">{top:g}</text>',
        f'<text x="{_LEFT - 3}" y="{_TOP + plot_h}" text-anchor="end">0</text>',
        f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_WIDTH}" y2="{_TOP + plot_h}" stroke="#111"/>',
    ]
    for index, (point, value) in enumerate(zip(points, values, strict=True)):
        x = _LEFT + index * step
        marks.append(f'<text x="{x + step / 2:.1f}" y="{_HEIGHT - 4}" text-anchor="middle">{point.month[5:]}</text>')
        if value is None:
            marks.append(f'<text x="{x + step / 2:.1f}" y="{_TOP + plot_h - 2}" text-anchor="middle">–</text>')
            continue
        height = max(plot_h * min(value / top, 1.0) if top else 0.0, 1.5)  # a nought shows, as a sliver
        marks.append(
            f'<rect x="{x + 2:.1f}" y="{_TOP + plot_h - height:.1f}" width="{step - 4:.1f}" height="{height:.1f}"'
            f' fill="#3a5f8f"><title>{point.month}: {value:.1f} %</title></rect>'
        )
    return (
        f'<svg class="chart {measure}" role="img" aria-label="{escape(label)}" width="{_WIDTH}" height="{_HEIGHT}"'
        f' viewBox="0 0 {_WIDTH} {_HEIGHT}" xmlns="http://www.w3.org/2000/svg">{"".join(marks)}</svg>'
    )


def _nice(value: float) -> float:
    """The smallest of 1, 2, 5, 10, 20, 50, 100 per cent at or above `value` (an axis a reader can take in)."""
    for top in (1.0, 2.0, 5.0, 10.0, 20.0, 50.0):
        if value <= top:
            return top
    return 100.0
