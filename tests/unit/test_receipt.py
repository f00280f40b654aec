"""The receipt format: canonical bytes in, the same receipt out; anything else is named and refused."""

from __future__ import annotations

import json

import pytest

from gateway.core.receipt import Receipt, parse_receipt

RECEIPT = Receipt(
    package="PROTECT-PERSONAL__police__2026-10__9eda6adff72fcd8496c4",
    agency="probation",
    payload_sha256="a" * 64,
    plaintext_sha256="b" * 64,
    officer="probation-do",
    fingerprint="02427D8CBBFFEDEE744124BBDC6353055FFBEE78",
    received="2026-11-03T09:15:00+00:00",
)


def test_a_receipt_reads_back_from_its_own_bytes() -> None:
    data = RECEIPT.to_bytes()
    assert data.endswith(b"}\n") and json.loads(data)["format"] == "iom-gateway-receipt"
    assert parse_receipt(data) == RECEIPT


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d.pop("package"), "its package is missing"),
        (lambda d: d.update(payload_sha256="A" * 64), "payload_sha256 is not a SHA-256"),
        (lambda d: d.update(fingerprint="1234"), "not an OpenPGP fingerprint"),
        (lambda d: d.update(received="yesterday"), "not ISO 8601"),
        (lambda d: d.update(received="2026-11-03T09:15:00"), "no time zone"),
        (lambda d: d.update(officer=7), "officer is not text"),
        (lambda d: d.update(version=2), "not a iom-gateway-receipt version 1"),
    ],
)
def test_a_malformed_receipt_is_refused_naming_what_is_wrong(change, named: str) -> None:  # type: ignore[no-untyped-def]
    document = json.loads(RECEIPT.to_bytes())
    change(document)
    with pytest.raises(ValueError, match=named):
        parse_receipt(json.dumps(document, sort_keys=True, indent=2).encode() + b"\n")


def test_a_receipt_edited_out_of_canonical_form_is_refused() -> None:
    edited = RECEIPT.to_bytes().replace(b"\n", b"\r\n")
    with pytest.raises(ValueError, match="not in canonical form"):
        parse_receipt(edited)
    with pytest.raises(ValueError, match="not JSON"):
        parse_receipt(b"\xff")
