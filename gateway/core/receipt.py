"""The receipt a recipient officer signs for a package they pulled (issue 12): what the gateway records as
`package.received`, so the disclosure register can say who received each disclosure, and when.

A receipt is canonical JSON (the manifest's form: sorted keys, UTF-8, final newline) beside an OpenPGP
detached signature by the officer's own key: `NAME.receipt.json` and `NAME.receipt.json.sig`, where NAME is
the package id. Pulled inside the root it is recorded at once; pulled elsewhere (`pull --from`) the officer
uploads both files into `outbox/<agency>/receipts/`, where the daemon checks and records them.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime

from gateway.core.manifest import canonical_json

RECEIPT_FORMAT = "iom-gateway-receipt"
RECEIPT_VERSION = 1
RECEIPT_SUFFIX = ".receipt.json"
SIGNATURE_SUFFIX = ".receipt.json.sig"
RECEIPTS = "receipts"  # outbox/<agency>/receipts/: where officers upload receipts made away from the gateway
MAX_RECEIPT_BYTES = 8192  # a receipt is a few hundred bytes; a larger one was not made by iom-gateway
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")


@dataclass(frozen=True, slots=True)
class Receipt:
    """One officer's word that they received one package: its id, recipient agency, the payload's and the
    plaintext's SHA-256 (as the signed manifest gives them), who (officer id if known, and the fingerprint of
    the key that signs the receipt) and when (UTC, ISO 8601 to the second)."""

    package: str
    agency: str
    payload_sha256: str
    plaintext_sha256: str
    officer: str | None
    fingerprint: str
    received: str

    def to_bytes(self) -> bytes:
        """The bytes the officer signs."""
        return canonical_json({"format": RECEIPT_FORMAT, "version": RECEIPT_VERSION, **asdict(self)})


def parse_receipt(data: bytes) -> Receipt:
    """The receipt in `data`; raise ValueError naming what is wrong (not JSON, a field missing or malformed,
    not in canonical form)."""
    if len(data) > MAX_RECEIPT_BYTES:
        raise ValueError(f"larger than {MAX_RECEIPT_BYTES} bytes")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    if document.get("format") != RECEIPT_FORMAT or document.get("version") != RECEIPT_VERSION:
        raise ValueError(f"not a {RECEIPT_FORMAT} version {RECEIPT_VERSION}")
    fields: dict[str, str | None] = {}
    for name in ("package", "agency", "payload_sha256", "plaintext_sha256", "fingerprint", "received"):
        value = document.get(name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"its {name} is missing or not text")
        fields[name] = value
    officer = document.get("officer")
    if officer is not None and not isinstance(officer, str):
        raise ValueError("its officer is not text")
    for name in ("payload_sha256", "plaintext_sha256"):
        if not _SHA256.fullmatch(str(fields[name])):
            raise ValueError(f"its {name} is not a SHA-256 in hex")
    if not _FINGERPRINT.fullmatch(str(fields["fingerprint"])):
        raise ValueError("its fingerprint is not an OpenPGP fingerprint in upper-case hex")
    try:
        when = datetime.fromisoformat(str(fields["received"]))
    except ValueError:
        raise ValueError("its received time is not ISO 8601") from None
    if when.tzinfo is None:
        raise ValueError("its received time has no time zone")
    receipt = Receipt(officer=officer, **fields)  # type: ignore[arg-type]
    if receipt.to_bytes() != data:
        raise ValueError("not in canonical form (sorted keys, two-space indent, final newline): it was edited")
    return receipt
