"""The signature rules every signed thing an officer sends meets (Warwickshire 2.3.3, 2.4; Solihull 4.1, 4.4):
a submission (exchange.authenticate) and an information request (governance.requests) alike."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.state.registry import Officer

# Hash algorithms a submission's signature may use (RFC 4880 9.4): SHA-256, -384, -512, -224.
# MD5, SHA-1 and RIPEMD-160 are refused: SHA-1 collisions are practical (SHAttered 2017, Shambles 2020).
SHA2 = {"8": "SHA-256", "9": "SHA-384", "10": "SHA-512", "11": "SHA-224"}
WEAK_HASHES = {"1": "MD5", "2": "SHA-1", "3": "RIPEMD-160"}
BINARY_DOCUMENT, TEXT_DOCUMENT = "00", "01"


@dataclass(frozen=True, slots=True)
class Signature:
    """What gpg found: the signer's primary fingerprint, when, how, and any problem it reported."""

    valid: bool
    fingerprint: str | None
    signed_at: datetime | None
    problem: str | None
    hash_algorithm: str | None = None
    signature_class: str | None = None
    canonical: bool = False  # over a PGP/MIME entity: CRLF lines already, so text mode changes nothing


def authenticate(
    signature: Signature,
    officer: Officer | None,
    agency: str,
    *,
    now: datetime,
    max_age: timedelta,
    skew: timedelta,
) -> Officer | str:
    """The officer who may send this file for `agency`, or the reason it is refused (naming the fix)."""
    if not signature.valid:
        return f"the signature does not verify: {signature.problem or 'gpg refused it'}"
    how = _how_signed(signature)
    if how is not None:
        return how
    if officer is None:
        return (
            f"signed by key {signature.fingerprint}, which belongs to no registered officer: only Designated "
            "Officers may send (the gateway admin registers officers' keys)"
        )
    if not officer.active:
        return f"signed by {officer.id}, whose registration is revoked: a current DO/PDO of {agency} must sign it"
    if officer.agency != agency:
        return (
            f"signed by {officer.id}, an officer of {officer.agency}, but the file is in {agency}'s outbox: "
            f"move it to outbox/{officer.agency}/ or sign it as a {agency} officer"
        )
    if signature.signed_at is None:
        return "the signature carries no time: sign it again with gpg 2"
    if signature.signed_at > now + skew:
        return (
            f"the signature is dated {signature.signed_at:%Y-%m-%d %H:%M} UTC, in the future: check the signer's clock"
        )
    if now - signature.signed_at > max_age:
        hours = int(max_age.total_seconds() // 3600)
        return f"the signature is older than the accepted {hours} hours: sign the file again and resubmit it"
    return officer


def _how_signed(signature: Signature) -> str | None:
    """Why a good signature is still not accepted (text mode, a weak hash), or None."""
    text_ok = signature.canonical and signature.signature_class == TEXT_DOCUMENT
    if signature.signature_class != BINARY_DOCUMENT and not text_ok:
        return (
            "the signature was made in text mode (gpg --textmode or --clearsign), which covers the text with its "
            "line endings changed, not the exact bytes the gateway relays: sign in binary mode, gpg --detach-sign FILE"
        )
    if signature.hash_algorithm not in SHA2:
        name = WEAK_HASHES.get(signature.hash_algorithm or "", f"hash algorithm {signature.hash_algorithm}")
        return (
            f"the signature uses {name}, which the gateway refuses (only SHA-2 is accepted): sign again with "
            "gpg --digest-algo SHA256 --detach-sign FILE"
        )
    return None
