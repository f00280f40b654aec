"""Working days in England and Wales, counted by hand against the calendar (day of receipt = day 0), and the
shipped bank-holiday table checked against the dates gov.uk publishes."""

from __future__ import annotations

import json
from datetime import date

import pytest

from gateway.core.workdays import add_working_days, is_working_day, parse_holidays
from gateway.resources import BANK_HOLIDAYS, shipped

TABLE = parse_holidays(shipped(BANK_HOLIDAYS).read_bytes())


def test_the_shipped_table_covers_2024_to_2028_with_the_substitute_days() -> None:
    assert (TABLE.first_year, TABLE.last_year) == (2024, 2028)
    for day in (
        date(2025, 5, 5),  # early May bank holiday 2025
        date(2026, 12, 25),
        date(2026, 12, 28),  # Boxing Day 2026 is a Saturday: Monday 28 December is its substitute
        date(2027, 3, 26),  # Good Friday 2027
        date(2027, 3, 29),  # Easter Monday 2027
        date(2027, 12, 27),  # Christmas 2027 is a Saturday, Boxing Day a Sunday: 27 and 28 December
        date(2027, 12, 28),
        date(2028, 1, 3),  # New Year's Day 2028 is a Saturday
        date(2026, 8, 31),  # summer bank holiday 2026
    ):
        assert day in TABLE.days, day
    assert date(2026, 12, 26) not in TABLE.days  # the Saturday itself is no working day anyway
    assert len(TABLE.days) == 40  # eight a year
    assert all(day.weekday() < 5 for day in TABLE.days)  # every one (substitutes included) falls on a weekday


def test_ten_working_days_across_christmas_and_new_year() -> None:
    # Thu 24 Dec 2026 is day 0: Fri 25 (Christmas), Sat, Sun, Mon 28 (Boxing Day substitute) are not
    # working days; Tue 29 = 1, Wed 30 = 2, Thu 31 = 3, Fri 1 Jan (New Year) no, Mon 4 = 4 ... Tue 12 = 10
    assert add_working_days(date(2026, 12, 24), 10, TABLE) == date(2027, 1, 12)


def test_ten_working_days_across_the_easter_weekend() -> None:
    # Wed 24 Mar 2027 is day 0: Thu 25 = 1, Good Friday 26, Sat, Sun, Easter Monday 29 skipped; Tue 30 = 2,
    # Wed 31 = 3, Thu 1 Apr = 4, Fri 2 = 5, Mon 5 = 6, Tue 6 = 7, Wed 7 = 8, Thu 8 = 9, Fri 9 = 10
    assert add_working_days(date(2027, 3, 24), 10, TABLE) == date(2027, 4, 9)


def test_a_request_received_at_the_weekend_counts_from_the_monday() -> None:
    # Sat 5 Dec 2026 is day 0 however it falls: Mon 7 = 1 ... Fri 18 = 10
    assert add_working_days(date(2026, 12, 5), 10, TABLE) == date(2026, 12, 18)
    assert not is_working_day(date(2026, 12, 5), TABLE) and is_working_day(date(2026, 12, 7), TABLE)


def test_without_a_holiday_ten_working_days_are_two_weeks() -> None:
    assert add_working_days(date(2026, 12, 3), 10, TABLE) == date(2026, 12, 17)
    assert add_working_days(date(2026, 12, 3), 0, TABLE) == date(2026, 12, 3)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"not json", "not UTF-8 JSON"),
        (b'{"scotland": {"events": []}}', "england-and-wales"),
        (json.dumps({"england-and-wales": {"events": [{"title": "x"}]}}).encode(), "event 1"),
        (json.dumps({"england-and-wales": {"events": [{"date": "25/12/2026"}]}}).encode(), "event 1"),
    ],
)
def test_a_table_not_in_govuk_format_is_refused_naming_what_is_wrong(data: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_holidays(data)
