"""The signed form of an information request: canonical JSON, one id per request, and every malformed one refused."""

from __future__ import annotations

import json

import pytest

from gateway.core.request import Consent, Request, check_request, parse_request, request_id

REQUEST = Request(
    from_agency="probation",
    to_agency="police",
    officer="probation-do",
    purpose="Risk assessment before a MAPPA meeting",
    grounds="Crime and Disorder Act 1998 s115",
    consent=Consent("consent form.pdf", b"%PDF-1.4 \x00\xff"),
    urgent=None,
    created="2026-12-03T10:00:00+00:00",
)


def test_a_request_round_trips_through_its_canonical_bytes() -> None:
    data = REQUEST.to_bytes()
    assert parse_request(data) == REQUEST
    document = json.loads(data)
    assert list(document) == sorted(document) and document["version"] == 1 and document["urgent"] is None
    assert document["consent"] == {"name": "consent form.pdf", "base64": "JVBERi0xLjQgAP8="}
    assert len(request_id(data)) == 16 and request_id(data) == request_id(REQUEST.to_bytes())


def test_bytes_not_in_canonical_form_are_refused_even_if_the_json_says_the_same() -> None:
    loose = json.dumps(json.loads(REQUEST.to_bytes())).encode()
    with pytest.raises(ValueError, match="canonical"):
        parse_request(loose)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"to_agency": "probation"}, "from itself"),
        ({"purpose": "   "}, "purpose is empty"),
        ({"grounds": "x" * 4001}, "more than 4000"),
        ({"purpose": "a\x1bb"}, "control characters"),
        ({"officer": "../etc"}, "not an officer id"),
        ({"from_agency": "Police!"}, "not an agency id"),
        ({"created": "yesterday"}, "ISO 8601"),
        ({"created": "2026-12-03T10:00:00"}, "time zone"),
    ],
)
def test_a_malformed_request_is_refused_naming_the_field(change: dict[str, str], says: str) -> None:
    fields = {name: getattr(REQUEST, name) for name in REQUEST.__slots__} | change  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=says):
        check_request(Request(**fields))


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda d: d.pop("grounds"), "fields"),
        (lambda d: d.update(extra=1), "fields"),
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.update(urgent=5), "urgent"),
        (lambda d: d.update(consent={"name": "a"}), "consent"),
        (lambda d: d.update(consent={"name": "a", "base64": "!!"}), "base64"),
    ],
)
def test_a_document_that_is_no_request_is_refused(edit: object, says: str) -> None:
    document = json.loads(REQUEST.to_bytes())
    edit(document)  # type: ignore[operator]
    data = json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False).encode() + b"\n"
    with pytest.raises(ValueError, match=says):
        parse_request(data)


def test_what_is_not_json_or_too_large_is_refused() -> None:
    with pytest.raises(ValueError, match="UTF-8 JSON"):
        parse_request(b"\xff\xfe")
    with pytest.raises(ValueError, match="larger"):
        parse_request(b" " * (4 << 20))


def test_a_request_and_its_consent_never_show_their_text_in_a_repr() -> None:
    consent = Consent("form.pdf", b"ZQCONSENT scanned form")
    request = Request("probation", "police", "probation-do", "ZQPURPOSE a child", "ZQGROUNDS s115", consent,
                      "ZQURGENT Friday", "2026-12-03T10:00:00+00:00")  # fmt: skip
    shown = repr(request) + repr(consent) + f"{request!r} {[request]}"
    assert "ZQ" not in shown and "probation -> police" in shown and "22 bytes" in shown
