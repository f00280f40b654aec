"""Frozen values shared by every layer."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import date, datetime

from gateway.core.errors import UsageError

_PERIOD = re.compile(r"([0-9]{4})-([0-9]{2})")
AGENCY_ID = re.compile(r"[a-z][a-z0-9-]{0,31}")
_PERIOD_IN_NAME = re.compile(r"(?<![0-9])(20[0-9]{2})-(0[1-9]|1[0-2])(?![0-9])")


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """A reporting month (IOM data is shared monthly, Solihull 2.2.4)."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not (1 <= self.month <= 12 and 1900 <= self.year <= 9999):
            raise UsageError(f"period {self} is not a real month: write it as YYYY-MM, e.g. 2026-10")

    @classmethod
    def parse(cls, text: str) -> Period:
        """Read `YYYY-MM`; raise UsageError naming the expected form."""
        match = _PERIOD.fullmatch(text)
        if match is None:
            raise UsageError(f"period {text!r} is not YYYY-MM: write it like 2026-10")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def of(cls, day: date) -> Period:
        """The month that contains `day`."""
        return cls(day.year, day.month)

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def period_in(name: str) -> Period | None:
    """The YYYY-MM period a file name carries, if any."""
    match = _PERIOD_IN_NAME.search(name)
    return Period(int(match[1]), int(match[2])) if match else None


def period_of(name: str, now: datetime) -> Period:
    """The month the data is for: a YYYY-MM in the file name, else the current month."""
    return period_in(name) or Period.of(now.date())


class Delivery(enum.Enum):
    """How packages reach an agency: OpenPGP to its officers' keys, or an AES-256 ZIP."""

    GPG = "gpg"
    AES_ZIP = "aes-zip"


@dataclass(frozen=True, slots=True)
class Agency:
    """A partner agency: `id` names its folders, `kind` decides which columns it may send,
    `route` lists the agencies that receive its files."""

    id: str
    name: str
    kind: str
    delivery: Delivery = Delivery.GPG
    route: tuple[str, ...] = ()
    group: str = ""  # its Unix group ([agencies.X] group); "" means the default, iom-<id>
    email: bool = False  # its packages also go by e-mail to each active officer ([agencies.X] email)

    @property
    def unix_group(self) -> str:
        """The Unix group whose members are this agency's officers: `group`, or iom-<id>."""
        return self.group or f"iom-{self.id}"


def package_suffix(method: Delivery | str) -> str:
    return ".csv.gpg" if method in (Delivery.GPG, Delivery.GPG.value) else ".zip"
