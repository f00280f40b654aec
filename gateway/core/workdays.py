"""Working days in England and Wales: weekends and bank holidays skipped (a request is due in ten).

The bank holidays come in gov.uk's format (https://www.gov.uk/bank-holidays.json):
{"england-and-wales": {"division": ..., "events": [{"title", "date": "YYYY-MM-DD", "notes", "bunting"}, ...]}}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

DIVISION = "england-and-wales"


@dataclass(frozen=True, slots=True)
class Holidays:
    """The bank holidays of one division, and the years the table covers (a date outside them is unknown)."""

    days: frozenset[date]
    first_year: int
    last_year: int

    def covers(self, day: date) -> bool:
        return self.first_year <= day.year <= self.last_year


def parse_holidays(data: bytes) -> Holidays:
    """The England-and-Wales bank holidays in a gov.uk bank-holidays.json; raise ValueError naming what is wrong."""
    try:
        document: Any = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError("it is not UTF-8 JSON") from None
    division = document.get(DIVISION) if isinstance(document, dict) else None
    events = division.get("events") if isinstance(division, dict) else None
    if not isinstance(events, list) or not events:
        raise ValueError(f'it has no "{DIVISION}": {{"events": [...]}} list (gov.uk\'s format)')
    days = set()
    for number, event in enumerate(events, 1):
        when = event.get("date") if isinstance(event, dict) else None
        try:
            days.add(date.fromisoformat(when) if isinstance(when, str) and len(when) == 10 else date.min)
        except ValueError:
            days.add(date.min)
        if date.min in days:
            raise ValueError(f'event {number} of "{DIVISION}" has no "date": "YYYY-MM-DD"')
    years = sorted(d.year for d in days)
    return Holidays(frozenset(days), years[0], years[-1])


def is_working_day(day: date, holidays: Holidays) -> bool:
    """Monday to Friday and not a bank holiday."""
    return day.weekday() < 5 and day not in holidays.days


def add_working_days(start: date, count: int, holidays: Holidays) -> date:
    """The `count`th working day after `start` (which is day 0, whatever it is)."""
    if count < 0:
        raise ValueError("count must not be negative")
    day = start
    while count:
        day += timedelta(days=1)
        if is_working_day(day, holidays):
            count -= 1
    return day
