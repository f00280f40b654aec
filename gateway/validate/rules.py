"""The Table 1 checks JSON Schema cannot express: CRO check character, real dates, age at the
period, victims' consent and spreadsheet formula injection.

Each check has an exact form (used to build the report) and, where it matters for speed, a
fast yes/no form for the all-valid path. The fast form may say no where the exact one says yes
(the row is then re-checked exactly); it must never say yes where the exact one says no.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from gateway.core.model import Period
from gateway.validate.schema import Column, Failure

DATE_OF_BIRTH = "date_of_birth"
CRO_NUMBER = "cro_number"
VICTIMS_DETAILS = "victims_details"
VICTIM_CONSENT = "victim_consent"
MIN_AGE, MAX_AGE = 10, 110

CRO_LETTERS = "ZABCDEFGHJKLMNPQRTUVWXY"
FORMULA_FIRST = frozenset("=+-@\t\r")
FORMULA_LOOKAHEAD = r"(?![=+\-@\t\r])"
_DAY_MONTHS = frozenset(
    f"{day:02d}/{month:02d}" for month in range(1, 13) for day in range(1, calendar.monthrange(2000, month)[1] + 1)
)

# (YY * 1,000,000) mod 23 for each two-digit year of an NNNNNN/YY CRO number (see cro_check_letter_ok)
_CRO_YEAR_SHARES = {f"{year:02d}": year * 1_000_000 % 23 for year in range(100)}

CRO_CHECK = Failure(
    "cro-check-letter",
    "has the wrong check letter for its number: copy the CRO number again "
    "from PNC (the check letter is there to catch typing errors)",
)
REAL_DATE = Failure("real-date", "is not a real calendar date: check the day and the month (DD/MM/YYYY)")
FUTURE_DATE = Failure("future-date", "is in the future: check the year of birth")
CONSENT = Failure(
    "victim-consent",
    "victims_details is filled in but victim_consent is not Y: share victims' "
    "details only with their consent (Table 1) - set victim_consent to Y or empty victims_details",
)
FORMULA = Failure(
    "formula-injection",
    "starts with =, +, -, @, a tab or a carriage return, which a spreadsheet "
    "would run as a formula: begin the cell with a letter, digit or bracket instead",
)


def cro_check_letter_ok(value: str) -> bool:
    """True if a CRO number already in NNNNNN/YYC or SFYY/NNNNNC shape carries the right check letter."""
    if value[0] == "S":
        serial = value[5:-1]
        number = int(value[2:4] + serial.zfill(5) if int(value[2:4]) >= 65 else serial)
    else:
        slash = value.index("/")
        number = int(value[slash + 1 : slash + 3]) * 1_000_000 + int(value[:slash])
    return CRO_LETTERS[number % 23] == value[-1]


@dataclass(frozen=True, slots=True)
class RowRules:
    """The code checks for one file: the period fixes the age window, the policy the formula rule."""

    period: Period
    today: date
    allow_formulas: bool

    @property
    def _bounds(self) -> tuple[str, str, str]:
        """(earliest, latest, today) birth dates as YYYYMMDD for an age of 10-110 on the period's first day."""
        start = self.period.first_day
        earliest = f"{start.year - MAX_AGE - 1:04d}{start.month:02d}02"
        latest = f"{start.year - MIN_AGE:04d}{start.month:02d}01"
        return earliest, latest, self.today.strftime("%Y%m%d")

    def age_failure(self) -> Failure:
        return Failure(
            "age-range",
            f"gives an age outside {MIN_AGE}-{MAX_AGE} on {self.period.first_day:%d/%m/%Y} "
            f"(the first day of period {self.period}): check the year of birth",
        )

    def cell(self, column: Column, value: str) -> Failure | None:
        """The code rule a non-empty cell that already passed its schema checks breaks, or None."""
        if column.free_text and not self.allow_formulas and value[0] in FORMULA_FIRST:
            return FORMULA
        if column.name == DATE_OF_BIRTH:
            return self._date(value)
        if column.name == CRO_NUMBER and not cro_check_letter_ok(value):
            return CRO_CHECK
        return None

    def _date(self, value: str) -> Failure | None:
        day, month, year = int(value[:2]), int(value[3:5]), int(value[6:])
        if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year or 4, month)[1]):
            return REAL_DATE
        if year == 0:
            return REAL_DATE
        key = value[6:] + value[3:5] + value[:2]
        earliest, latest, today = self._bounds
        if key > today:
            return FUTURE_DATE
        if not earliest <= key <= latest:
            return self.age_failure()
        return None

    def row(self, cells: Mapping[str, str]) -> tuple[str, Failure] | None:
        """The row-level rule the row breaks, with the column to report it on, or None."""
        if cells.get(VICTIMS_DETAILS) and cells.get(VICTIM_CONSENT) != "Y":
            return VICTIMS_DETAILS, CONSENT
        return None

    def fast(self, positions: Mapping[str, int]) -> Callable[[Sequence[str]], bool] | None:
        """A yes/no check of the code rules for rows laid out as `positions` (column -> index)."""
        dob, cro = positions.get(DATE_OF_BIRTH), positions.get(CRO_NUMBER)
        victims, consent = positions.get(VICTIMS_DETAILS), positions.get(VICTIM_CONSENT)
        if dob is None and cro is None and victims is None:
            return None
        earliest, latest, today = self._bounds
        highest = min(latest, today)
        day_months, isleap, letters, year_shares = _DAY_MONTHS, calendar.isleap, CRO_LETTERS, _CRO_YEAR_SHARES

        def ok(row: Sequence[str]) -> bool:
            if dob is not None and (value := row[dob]):
                day_month = value[:5]
                if day_month not in day_months or not earliest <= value[6:] + value[3:5] + value[:2] <= highest:
                    return False
                if day_month == "29/02" and not isleap(int(value[6:])):
                    return False
            if cro is not None and (value := row[cro]):
                # the gate passed it, so it has its NNNNNN/YYC or SFYY/NNNNNC shape; the common one is
                # worked out here, without a call, from the year's share of the number mod 23
                slash = value.find("/")
                if value[0] == "S":
                    if not cro_check_letter_ok(value):
                        return False
                elif letters[(year_shares[value[slash + 1 : slash + 3]] + int(value[:slash])) % 23] != value[-1]:
                    return False
            return victims is None or not row[victims] or (consent is not None and row[consent] == "Y")

        return ok
