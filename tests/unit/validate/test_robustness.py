"""Whatever bytes arrive, validation returns a Report or raises the project's own error: nothing else."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.errors import GatewayError
from gateway.validate import Report
from tests.conftest import csv_bytes

HEADER = ["forename", "surname", "gender", "date_of_birth", "postcode", "criminal_history"]
_SETTINGS = settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)


def _outcome(validate: Callable[[bytes], Report], data: bytes) -> Report | None:
    try:
        return validate(data)
    except GatewayError:
        return None


@_SETTINGS
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(validate_bytes: Callable[[bytes], Report], data: bytes) -> None:
    report = _outcome(validate_bytes, data)
    assert report is not None
    assert report.valid == (not report.counts)
    assert all(issue.rule for issue in report.issues)


@_SETTINGS
@given(st.lists(st.lists(st.text(max_size=30), max_size=8), max_size=12), st.sampled_from(["utf-8", "utf-8-sig"]))
def test_arbitrary_csv(validate_bytes: Callable[[bytes], Report], rows: list[list[str]], encoding: str) -> None:
    report = _outcome(validate_bytes, csv_bytes([HEADER, *rows], encoding=encoding))
    assert report is not None
    assert report.rows <= len(rows)
    for issue in report.issues:
        assert issue.row is None or 1 <= issue.row <= len(rows) + 1


@_SETTINGS
@given(st.lists(st.binary(max_size=40), max_size=10))
def test_csv_header_then_arbitrary_bytes(validate_bytes: Callable[[bytes], Report], lines: list[bytes]) -> None:
    report = _outcome(validate_bytes, b",".join(h.encode() for h in HEADER) + b"\r\n" + b"\r\n".join(lines))
    assert report is not None
