"""The admin's questions: is the audit log intact, what happened, what did we disclose, is all well."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from gateway.audit import Verdict
from gateway.context import Root
from gateway.crypto_gpg import Fingerprint, Purpose
from gateway.disclosure import register, to_json, write_csv, write_html
from gateway.errors import CryptoError
from gateway.intake import count_waiting
from gateway.journal import ABANDONED, DELIVERED, DONE, REJECTED
from gateway.model import Period

EXPIRY_WARNING = timedelta(days=30)
REPORT_FORMATS = ("csv", "html", "json")


def gateway_signature_check(root: Root) -> Callable[[bytes, bytes], str | None]:
    """A checker for audit checkpoints and anchors: the signer must be one of this gateway's keys,
    current or retired; a key that has since expired still vouches for what it signed before."""
    known = {fingerprint for fingerprint, *_ in root.journal.gateway_keys()}

    def check(data: bytes, signature: bytes) -> str | None:
        result = root.keyring.verify_bytes(data, signature, purpose=Purpose.AUDIT)
        signer = str(result.fingerprint) if result.fingerprint else None
        if signer not in known:
            return None
        return signer if result.valid or result.key_expired else None

    return check


def verify_audit(root: Root) -> Verdict:
    """Check the audit log's chain, checkpoints, head and anchor (see AuditLog.verify)."""
    return root.audit.verify(gateway_signature_check(root))


def audit_events(root: Root, since: datetime | None, event: str | None) -> list[dict[str, object]]:
    """The audit entries at or after `since` whose event is `event` or under it (`submission` = `submission.*`)."""
    return root.audit.select(since, event)


def disclosure_report(root: Root, month: Period, form: str) -> str:
    """The disclosure register for `month` (Warwickshire 2.3.3.3, Solihull 4.4.3) as csv, html or json text."""
    rows = register(root.audit.entries(), month.year, month.month)
    if form == "json":
        return json.dumps(to_json(rows), indent=2, ensure_ascii=False) + "\n"
    out = io.StringIO()
    if form == "html":
        write_html(rows, out, f"{root.config.partnership}: information disclosed in {month}")
    else:
        write_csv(rows, out)
    return out.getvalue()


# ----------------------------------------------------------------------------------------- status


@dataclass(frozen=True, slots=True)
class KeyWarning:
    owner: str
    fingerprint: str
    expires: str | None
    problem: str


@dataclass(frozen=True, slots=True)
class Status:
    now: str
    outbox_waiting: dict[str, int]
    inbox_unpulled: dict[str, int]
    in_flight: int
    last_run: dict[str, object] | None
    errors_24h: dict[str, int]
    keys: list[KeyWarning]
    late: list[str]
    period: str
    due_day: int

    @property
    def attention(self) -> list[str]:
        """What an admin should act on, one line each."""
        lines = [f"{k.owner}: {k.problem}" for k in self.keys]
        lines += [f"{agency} has not submitted for {self.period} (due by day {self.due_day})" for agency in self.late]
        if sum(self.errors_24h.values()):
            lines.append(f"{sum(self.errors_24h.values())} submission(s) refused in the last 24 h: see `audit show`")
        if self.last_run is None:
            lines.append("the gateway has never run: start it (`systemctl start iom-gateway` or `iom-gateway run`)")
        return lines

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["attention"] = self.attention
        return data


def status(root: Root, now: datetime) -> Status:
    """Queues, last run, refusals in 24 h, keys near expiry, agencies late for the month."""
    period = Period.of(now.date())
    waiting = {a: count_waiting(root.path, a, now.timestamp()) for a in root.config.agencies}
    unpulled = {a: root.journal.unpulled(a) for a in root.config.agencies}
    since = (now - timedelta(hours=24)).isoformat(timespec="seconds")
    errors = {s: root.journal.count_since(s, since) for s in (REJECTED, ABANDONED)}
    submitted = root.journal.agencies_with(str(period), (DELIVERED, DONE))
    due = root.config.submissions.due_day
    late = sorted(a for a in root.config.agencies if a not in submitted) if now.day > due else []
    return Status(
        now=now.isoformat(timespec="seconds"),
        outbox_waiting=waiting,
        inbox_unpulled=unpulled,
        in_flight=root.journal.in_flight(),
        last_run=root.journal.last_run(),
        errors_24h=errors,
        keys=_key_warnings(root, now),
        late=late,
        period=str(period),
        due_day=due,
    )


def _key_warnings(root: Root, now: datetime) -> list[KeyWarning]:
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
