"""The use cases. Only this module knows the order of the stages; the CLI calls one use case each."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from gateway.config import Config
from gateway.errors import SchemaError
from gateway.model import Period
from gateway.validate import Report, Standard, load_standard, validate_file

log = logging.getLogger(__name__)
SAMPLES = "samples"


@dataclass(frozen=True, slots=True)
class Gateway:
    """A loaded gateway root: its checked configuration and compiled standard."""

    config: Config
    standard: Standard

    @classmethod
    def open(cls, root: Path) -> Gateway:
        """Load `root`; raise ConfigError or SchemaError naming what to fix."""
        standard = load_standard(root)
        config = Config.load(root, columns=frozenset(standard.columns), kinds=standard.kinds)
        return cls(config, standard)


def check_file(gateway: Gateway, path: Path, agency_id: str, period: Period | None, today: date) -> Report:
    """Validate `path` as a submission of `agency_id` for `period` (default: this month). Writes nothing."""
    agency = gateway.config.agency(agency_id)
    report = validate_file(
        path, agency, gateway.config, gateway.standard, period=period or Period.of(today), today=today
    )
    log.info(
        "validated file=%r agency=%s rows=%d errors=%d", path.name, agency.id, report.rows, sum(report.counts.values())
    )
    return report


@dataclass(frozen=True, slots=True)
class DemoResult:
    """One shipped sample, what it was expected to be, and its report."""

    sample: Path
    expected_valid: bool
    report: Report

    @property
    def as_expected(self) -> bool:
        return self.report.valid == self.expected_valid


def demo(gateway: Gateway, today: date) -> Iterator[DemoResult]:
    """Validate every shipped sample (`samples/<agency>-<good|...>-….csv`) as its agency would send it."""
    folder = gateway.config.root / SAMPLES
    samples = sorted(folder.glob("*.csv"))
    if not samples:
        raise SchemaError(f"no sample files in {str(folder)!r}: run the demo from the repository checkout")
    for sample in samples:
        agency_id, _, rest = sample.name.partition("-")
        report = check_file(gateway, sample, agency_id, None, today)
        yield DemoResult(sample, rest.startswith("good"), report)
