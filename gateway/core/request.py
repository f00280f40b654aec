"""An information request between Designated Officers (Warwickshire 2.3.3.1-2.3.3.3, 2.4.2): its signed form.

A request is canonical JSON (the manifest's form: sorted keys, UTF-8, final newline) that the requesting
officer signs with a detached OpenPGP signature: `iom-gateway request new` makes both, or an officer drops
`NAME.json` and `NAME.json.sig` into `outbox/<agency>/requests/`. Its text (purpose, grounds, consent
evidence, urgent reason) is data about a person: the gateway keeps it only encrypted, never in the clear.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.core.manifest import canonical_json
from gateway.core.model import AGENCY_ID

REQUEST_VERSION = 1
REQUESTS = "requests"  # outbox/<agency>/requests/: where officers drop signed requests
REQUEST_SUFFIX, REQUEST_SIGNATURE_SUFFIX = ".json", ".json.sig"
MAX_TEXT = 4000  # purpose, grounds, an urgent reason or a refusal's reason: Table 1's free-text bound
MAX_EVIDENCE_BYTES = 2 * 1024 * 1024  # a consent form, scanned
MAX_REQUEST_BYTES = MAX_EVIDENCE_BYTES * 4 // 3 + 64 * 1024  # the evidence in base64, and the rest
REQUEST_ID = re.compile(r"[0-9a-f]{16}")
_OFFICER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FIELDS = {"version", "from_agency", "to_agency", "officer", "purpose", "grounds", "consent", "urgent", "created"}


@dataclass(frozen=True, slots=True, repr=False)
class Consent:
    """The evidence of the subject's consent the requesting officer attached: its file name and bytes."""

    name: str
    data: bytes

    def __repr__(self) -> str:  # the evidence is about a person: never in a traceback or a log line
        return f"Consent(<{len(self.data):,} bytes>)"


@dataclass(frozen=True, slots=True, repr=False)
class Request:
    """One officer's signed request to another agency; `created` is UTC, ISO 8601 to the second. Its repr
    names the agencies and the officer only: the text is about a person, never in a traceback or a log line."""

    from_agency: str
    to_agency: str
    officer: str
    purpose: str
    grounds: str
    consent: Consent | None
    urgent: str | None
    created: str

    def __repr__(self) -> str:
        return f"Request({self.from_agency} -> {self.to_agency}, officer={self.officer}, <text redacted>)"

    def to_bytes(self) -> bytes:
        """The bytes the officer signs."""
        consent = None
        if self.consent is not None:
            consent = {"name": self.consent.name, "base64": base64.b64encode(self.consent.data).decode("ascii")}
        return canonical_json(
            {
                "version": REQUEST_VERSION,
                "from_agency": self.from_agency,
                "to_agency": self.to_agency,
                "officer": self.officer,
                "purpose": self.purpose,
                "grounds": self.grounds,
                "consent": consent,
                "urgent": self.urgent,
                "created": self.created,
            }
        )


def request_id(data: bytes) -> str:
    """The request's id: derived from its signed bytes, so the same request dropped twice is one request."""
    return hashlib.sha256(data).hexdigest()[:16]


def check_text(name: str, value: str) -> str:
    """`value` as a request's free text may be; raise ValueError naming `name`, the rule and the fix."""
    if not value.strip():
        raise ValueError(f"the {name} is empty: say in a sentence or two what is asked and why")
    if len(value) > MAX_TEXT:
        raise ValueError(f"the {name} is {len(value)} characters, more than {MAX_TEXT}: shorten it")
    if any((ord(c) < 32 and c not in "\r\n\t") or c == "\x7f" for c in value):
        raise ValueError(f"the {name} holds control characters: only text, line breaks and tabs")
    return value


def check_request(request: Request) -> Request:
    """Refuse (ValueError naming the field) a request that is malformed whoever signed it."""
    for field, value in (("from_agency", request.from_agency), ("to_agency", request.to_agency)):
        if not AGENCY_ID.fullmatch(value):
            raise ValueError(f"{field} {value[:40]!r} is not an agency id")
    if request.from_agency == request.to_agency:
        raise ValueError(f"it asks {request.to_agency} for information from itself: name another agency")
    if not _OFFICER_ID.fullmatch(request.officer):
        raise ValueError(f"officer {request.officer[:40]!r} is not an officer id")
    check_text("purpose", request.purpose)
    check_text("grounds", request.grounds)
    if request.urgent is not None:
        check_text("urgent reason", request.urgent)
    if request.consent is not None:
        name = request.consent.name
        if not name or len(name) > 200 or "/" in name or any(ord(c) < 32 for c in name):
            raise ValueError("the consent evidence's name is not a plain file name")
        if len(request.consent.data) > MAX_EVIDENCE_BYTES:
            raise ValueError(f"the consent evidence is larger than {MAX_EVIDENCE_BYTES:,} bytes")
    try:
        created = datetime.fromisoformat(request.created)
    except ValueError:
        raise ValueError(f"created {request.created[:40]!r} is not an ISO 8601 time") from None
    if created.utcoffset() is None:
        raise ValueError("created has no time zone: give it in UTC")
    return request


def parse_request(data: bytes) -> Request:
    """The request in `data`; raise ValueError naming what is wrong (too large, not JSON, a field missing or
    malformed, not in the canonical form the officer's signature must cover)."""
    if len(data) > MAX_REQUEST_BYTES:
        raise ValueError(f"larger than {MAX_REQUEST_BYTES:,} bytes")
    try:
        document: Any = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError("not UTF-8 JSON") from None
    if not isinstance(document, dict) or set(document) != _FIELDS:
        raise ValueError(f"its fields are not exactly {', '.join(sorted(_FIELDS))}")
    if document["version"] != REQUEST_VERSION:
        raise ValueError(f"version {document['version']!r} is not {REQUEST_VERSION}")
    strings = ("from_agency", "to_agency", "officer", "purpose", "grounds", "created")
    if not all(isinstance(document[key], str) for key in strings):
        raise ValueError(f"{', '.join(strings)} must be strings")
    if document["urgent"] is not None and not isinstance(document["urgent"], str):
        raise ValueError("urgent must be null or the reason (a string)")
    request = Request(
        **{key: document[key] for key in strings},
        consent=_consent(document["consent"]),
        urgent=document["urgent"],
    )
    check_request(request)
    if request.to_bytes() != data:
        raise ValueError("not in canonical form (sorted keys, UTF-8, two-space indent, final newline)")
    return request


def _consent(value: object) -> Consent | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"name", "base64"}:
        raise ValueError("consent must be null or {name, base64}")
    name, encoded = value["name"], value["base64"]
    if not isinstance(name, str) or not isinstance(encoded, str):
        raise ValueError("consent's name and base64 must be strings")
    try:
        return Consent(name, base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        raise ValueError("consent's base64 is not base64") from None
