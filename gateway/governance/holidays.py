"""The England-and-Wales bank holidays: the shipped table, or the admin's newer copy of gov.uk's file in state/."""

from __future__ import annotations

import logging
from datetime import date, timedelta

from gateway.core.errors import ConfigError
from gateway.core.workdays import Holidays, add_working_days, parse_holidays
from gateway.resources import BANK_HOLIDAYS, shipped
from gateway.state.root import STATE, Root

log = logging.getLogger(__name__)
MAX_TABLE_BYTES = 1 << 20  # gov.uk's file is about 20 KB
ANSWER_DAYS = 10  # Warwickshire 2.3.3.2: a request is answered within ten working days


def holidays(root: Root) -> Holidays:
    """`state/bank-holidays.json` if the admin put one there (gov.uk's file, downloaded), else the shipped table.

    Raises ConfigError naming the file if the admin's copy is not a gov.uk bank-holidays file: never
    a silent fall back to the shipped one, whose dates may be older.
    """
    override = root.path / STATE / BANK_HOLIDAYS
    if override.is_file() or override.is_symlink():
        if override.is_symlink():
            raise ConfigError(f"{str(override)!r} is a symbolic link: put gov.uk's file itself there")
        data = override.read_bytes()[: MAX_TABLE_BYTES + 1]
        where = str(override)
    else:
        data, where = shipped(BANK_HOLIDAYS).read_bytes(), f"the shipped {BANK_HOLIDAYS}"
    try:
        if len(data) > MAX_TABLE_BYTES:
            raise ValueError(f"it is larger than {MAX_TABLE_BYTES:,} bytes")
        return parse_holidays(data)
    except ValueError as exc:
        raise ConfigError(
            f"{where!r} is not a bank-holidays table ({exc}): download https://www.gov.uk/bank-holidays.json "
            f"there again, or remove it to use the shipped table"
        ) from None


def due_date(root: Root, received: date) -> date:
    """The tenth working day after the day of receipt (day 0), weekends and bank holidays skipped.

    Raises ConfigError as `holidays`. A date past the table's last year is counted on weekends alone,
    with a warning to update the table (a due date is still owed to the requester)."""
    table = holidays(root)
    if not table.covers(received) or not table.covers(received + timedelta(days=21)):  # ten working days at most
        log.warning(
            "the bank-holiday table covers %d-%d only: the due date after %s skips weekends alone; put gov.uk's "
            "bank-holidays.json in state/",
            table.first_year,
            table.last_year,
            received,
        )
    return add_working_days(received, ANSWER_DAYS, table)
