"""`iom-gateway validate`'s use case: check one file as an agency would send it, and nothing else.

Apart from process.py so that validating imports only the root and the validator: none of the
sealing, signing or delivery code it never runs (issue 13: `validate` starts in under 250 ms).
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

from gateway.core.model import Period
from gateway.state.root import Root
from gateway.validate import Report, validate_file

log = logging.getLogger(__name__)


def check_file(root: Root, path: Path, agency_id: str, period: Period | None, today: date) -> Report:
    """Validate `path` as a submission of `agency_id` for `period` (default: this month). Writes nothing."""
    agency = root.config.agency(agency_id)
    report = validate_file(path, agency, root.config, root.standard, period=period or Period.of(today), today=today)
    log.info(
        "validated file=%r agency=%s rows=%d errors=%d", path.name, agency.id, report.rows, sum(report.counts.values())
    )
    return report
