"""Protective marking arithmetic (Solihull ISP 4.2.1): a package is never marked below the floor."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.core.errors import PolicyError

MARKING_SEPARATOR = "__"


class Level(enum.IntEnum):
    """GPMS levels, lowest first."""

    PROTECT = 1
    RESTRICTED = 2
    CONFIDENTIAL = 3
    SECRET = 4
    TOP_SECRET = 5

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")

    @classmethod
    def parse(cls, text: str) -> Level:
        """`PROTECT`, `restricted`, `TOP SECRET`…; raise PolicyError listing the levels."""
        try:
            return cls[text.strip().upper().replace(" ", "_").replace("-", "_")]
        except KeyError:
            levels = ", ".join(level.label for level in cls)
            raise PolicyError(f"{text!r} is not a protective marking: use one of {levels}") from None


class Scheme(enum.Enum):
    """GPMS as the protocols write it, or the 2014 Government Security Classifications."""

    GPMS = "gpms"
    GSC = "gsc"


_GSC = {
    Level.PROTECT: "OFFICIAL-SENSITIVE",
    Level.RESTRICTED: "OFFICIAL-SENSITIVE",
    Level.CONFIDENTIAL: "SECRET",
    Level.SECRET: "SECRET",
    Level.TOP_SECRET: "TOP SECRET",
}


@dataclass(frozen=True, slots=True)
class Marking:
    """A package's marking: level, optional descriptor (PERSONAL) and the scheme it is written in."""

    level: Level
    descriptor: str
    scheme: Scheme = Scheme.GPMS

    @property
    def label(self) -> str:
        return _GSC[self.level] if self.scheme is Scheme.GSC else self.level.label

    @property
    def token(self) -> str:
        """For file names: `PROTECT-PERSONAL`."""
        name = self.label.replace(" ", "-")
        return f"{name}-{self.descriptor}" if self.descriptor else name

    @property
    def text(self) -> str:
        """For people: `PROTECT - PERSONAL`."""
        return f"{self.label} - {self.descriptor}" if self.descriptor else self.label


def requested_level(file_name: str) -> tuple[Level | None, str]:
    """A marking the sender asked for with a `RESTRICTED__` prefix, and the name without it."""
    prefix, separator, rest = file_name.partition(MARKING_SEPARATOR)
    if separator and rest:
        try:
            return Level.parse(prefix), rest
        except PolicyError:
            pass
    return None, file_name


def apply_marking(floor: Marking, requested: Level | None) -> Marking:
    """The floor, or the higher level the sender asked for; never lower."""
    if requested is None or requested <= floor.level:
        return floor
    return Marking(requested, floor.descriptor, floor.scheme)
