"""Who signed a submission, and may they send it? (Warwickshire 2.3.3, 2.4; Solihull 4.1, 4.4)"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.registry import Officer


@dataclass(frozen=True, slots=True)
class Signature:
    """What gpg found: the signer's primary fingerprint, when, and any problem it reported."""

    valid: bool
    fingerprint: str | None
    signed_at: datetime | None
    problem: str | None


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
    if officer is None:
        return (
            f"signed by key {signature.fingerprint}, which belongs to no registered officer: only Designated "
            "Officers may send (register the officer with `officers add`, or sign with a registered key)"
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
