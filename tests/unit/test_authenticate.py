"""Who may send: a good signature by an active, registered officer of this agency, signed recently."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.exchange.authenticate import Signature, authenticate
from gateway.state.registry import Officer, Role

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
DO = Officer("police-do", "police", Role.DO, "Demo DO", "do@police.example", "A" * 40, "active")
WINDOW = {"now": NOW, "max_age": timedelta(hours=72), "skew": timedelta(minutes=10)}


def _signed(at: datetime | None = NOW, valid: bool = True, problem: str | None = None) -> Signature:
    return Signature(valid, "A" * 40, at, problem, "8", "00")


def test_a_good_recent_signature_by_an_active_officer_of_the_agency_passes() -> None:
    assert authenticate(_signed(NOW - timedelta(hours=71)), DO, "police", **WINDOW) == DO


@pytest.mark.parametrize(
    ("signature", "officer", "agency", "words"),
    [
        (_signed(valid=False, problem="the file was changed after it was signed"), DO, "police", "changed after"),
        (_signed(), None, "police", "no registered officer"),
        (_signed(), Officer("police-do", "police", Role.DO, "x", "x@y.z", "A" * 40, "revoked"), "police", "revoked"),
        (_signed(), DO, "probation", "move it to outbox/police/"),
        (_signed(NOW - timedelta(hours=73)), DO, "police", "older than the accepted 72 hours"),
        (_signed(NOW + timedelta(minutes=11)), DO, "police", "in the future"),
        (_signed(None), DO, "police", "no time"),
    ],
)
def test_each_refusal_names_its_reason(signature: Signature, officer: Officer | None, agency: str, words: str) -> None:
    found = authenticate(signature, officer, agency, **WINDOW)
    assert isinstance(found, str) and words in found


def test_clock_skew_within_tolerance_is_accepted() -> None:
    assert authenticate(_signed(NOW + timedelta(minutes=9)), DO, "police", **WINDOW) == DO


def test_text_mode_is_accepted_only_over_a_pgp_mime_entity_which_is_crlf_text_already() -> None:
    detached = Signature(True, "A" * 40, NOW, None, "8", "01")
    refused = authenticate(detached, DO, "police", **WINDOW)
    assert isinstance(refused, str) and "text mode" in refused
    assert authenticate(Signature(True, "A" * 40, NOW, None, "8", "01", canonical=True), DO, "police", **WINDOW) == DO
    weak = authenticate(Signature(True, "A" * 40, NOW, None, "2", "01", canonical=True), DO, "police", **WINDOW)
    assert isinstance(weak, str) and "SHA-1" in weak
