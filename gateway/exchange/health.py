"""What an admin must hear about before it becomes a problem: keys near expiry, agencies late for the month.

`status` lists them, `check` reports the keys, and the relay's admin notices are made from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.adapters.gpg import Fingerprint
from gateway.core.errors import CryptoError
from gateway.core.model import Period
from gateway.state.journal import DELIVERED, DONE
from gateway.state.root import Root

EXPIRY_WARNING = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class KeyWarning:
    owner: str
    fingerprint: str
    expires: str | None
    problem: str


def key_warnings(root: Root, now: datetime) -> list[KeyWarning]:
    """The current gateway key and active officers' keys that are missing, revoked, expired or expire within 30 days."""
    owners = [("gateway", fpr) for fpr, _, _, state in root.journal.gateway_keys() if state == "current"]
    owners += [(f"officer {o.id} ({o.agency})", o.fingerprint) for o in root.registry.all() if o.active]
    warnings = []
    for owner, fingerprint in owners:
        try:
            info = root.keyring.key(Fingerprint.parse(fingerprint))
        except CryptoError:
            warnings.append(KeyWarning(owner, fingerprint, None, "key missing from the keyring: import it again"))
            continue
        expires = info.expires.isoformat(timespec="seconds") if info.expires else None
        if info.revoked:
            warnings.append(KeyWarning(owner, fingerprint, expires, "key revoked: replace it"))
        elif info.expires is not None and info.expires <= now:
            warnings.append(KeyWarning(owner, fingerprint, expires, "key expired: replace it"))
        elif info.expires is not None and info.expires - now <= EXPIRY_WARNING:
            days = (info.expires - now).days
            warnings.append(KeyWarning(owner, fingerprint, expires, f"key expires in {days} day(s): renew it now"))
    return warnings


def late_agencies(root: Root, now: datetime) -> list[str]:
    """The agencies with no delivered submission for this month once its due day has passed."""
    if now.day <= root.config.submissions.due_day:
        return []
    submitted = root.journal.agencies_with(str(Period.of(now.date())), (DELIVERED, DONE))
    return sorted(a for a in root.config.agencies if a not in submitted)
