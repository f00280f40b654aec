"""The gateway's health as Prometheus metrics: `status --format prometheus`, and `state/metrics.prom`,
which the daemon rewrites every minute for node_exporter's textfile collector (no port is opened).

Only counts, ages, agency ids and days: never a file name, a person or a value (a name in an outbox
is hostile and may hold anything, so files are counted, never named).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from gateway.adapters.fsio import atomic_write_bytes
from gateway.adapters.gpg import Fingerprint
from gateway.core.errors import CryptoError, GatewayError, UsageError
from gateway.exchange.health import key_warnings, late_agencies
from gateway.exchange.intake import open_outbox, scan_outbox
from gateway.state.journal import MAIL_QUEUED
from gateway.state.requests import Requests, local_day
from gateway.state.root import STATE, Root

METRICS_FILE = "metrics.prom"
METRICS_SECONDS = 60  # how often the daemon rewrites it
PREFIX = "iom_gateway_"


@dataclass(slots=True)
class _Metric:
    name: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def lines(self) -> Iterable[str]:
        yield f"# HELP {PREFIX}{self.name} {self.help}"
        yield f"# TYPE {PREFIX}{self.name} gauge"
        for labels, value in self.samples:
            shown = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            yield f"{PREFIX}{self.name}{'{' + shown + '}' if shown else ''} {_number(value)}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def render(root: Root, now: datetime) -> str:
    """Every metric, in the Prometheus text exposition format (version 0.0.4)."""
    agencies = sorted(root.config.agencies)
    waiting, oldest = _outboxes(root, agencies, now)
    since = now - timedelta(hours=24)
    recent = root.audit.select(since)
    delivered = _by_agency(recent, "package.delivered", agencies)
    refused = _by_agency(recent, "submission.rejected", agencies)
    late = set(late_agencies(root, now))
    per_agency = [
        ("outbox_files", "CSV files waiting in the agency's outbox.", waiting),
        (
            "inbox_unpulled",
            "Packages in the agency's inbox not yet pulled.",
            {a: root.journal.unpulled(a) for a in agencies},
        ),
        ("deliveries_24h", "Packages delivered to the agency in the last 24 hours.", delivered),
        ("refusals_24h", "Submissions from the agency refused in the last 24 hours.", refused),
        (
            "late",
            "1 if the agency has not submitted for this month and the due day has passed.",
            {a: int(a in late) for a in agencies},
        ),
        ("requests_open", "Information requests to the agency awaiting its answer.", _asked(root, agencies)),
    ]
    metrics = [
        _Metric(name, text, [({"agency": a}, float(v)) for a, v in values.items()]) for name, text, values in per_agency
    ]
    run = root.journal.last_run()
    single = [
        ("oldest_waiting_seconds", "Age of the oldest CSV waiting in any outbox (0 if none).", oldest),
        ("in_flight", "Submissions taken and not yet delivered or refused.", root.journal.in_flight()),
        ("deferred_deliveries", "Deliveries waiting for the gateway's configuration.", len(root.journal.deferred())),
        ("late_agencies", "Agencies late for this month.", len(late)),
        ("key_problems", "Keys missing, revoked, expired or expiring within 30 days.", len(key_warnings(root, now))),
        ("mail_queued", "Messages the relay has still to send.", len(root.journal.mail(MAIL_QUEUED))),
        (
            "requests_overdue",
            "Information requests past their due date.",
            len(Requests(root.db).overdue(local_day(now))),
        ),
        (
            "relay_gave_up_24h",
            "Messages the relay gave up on in the last 24 hours.",
            sum(1 for e in recent if e.get("event") == "mail.gave_up"),
        ),
    ]
    metrics += [_Metric(name, text, [({}, float(value))]) for name, text, value in single]
    expiry = _nearest_expiry_days(root, now)
    if expiry is not None:
        metrics.append(
            _Metric("key_expiry_days", "Days until the nearest gateway or active officer key expires.", [({}, expiry)])
        )
    if run is not None and isinstance(run.get("heartbeat"), str):
        beat = datetime.fromisoformat(str(run["heartbeat"])).timestamp()
        metrics.append(
            _Metric("last_heartbeat_timestamp_seconds", "When the daemon last said it was alive.", [({}, beat)])
        )
    metrics.append(_Metric("generated_timestamp_seconds", "When these metrics were made.", [({}, now.timestamp())]))
    return "".join(line + "\n" for metric in metrics for line in metric.lines())


def _outboxes(root: Root, agencies: list[str], now: datetime) -> tuple[dict[str, int], float]:
    counts, oldest = {}, 0.0
    for agency in agencies:
        try:
            with open_outbox(root.path, agency) as folder:
                pairs = scan_outbox(folder, now.timestamp()).pairs
        except (UsageError, GatewayError):  # no outbox yet, or one that is a link: nothing is taken from it
            pairs = ()
        counts[agency] = len(pairs)
        oldest = max([oldest, *(p.age_seconds for p in pairs)])
    return counts, max(0.0, oldest)


def _asked(root: Root, agencies: list[str]) -> dict[str, int]:
    counts = Requests(root.db).open_by_agency()
    return {a: counts.get(a, 0) for a in agencies}


def _by_agency(entries: list[dict[str, object]], event: str, agencies: list[str]) -> dict[str, int]:
    counts = dict.fromkeys(agencies, 0)
    for entry in entries:
        agency = entry.get("agency")
        if entry.get("event") == event and isinstance(agency, str) and agency in counts:
            counts[agency] += 1
    return counts


def _nearest_expiry_days(root: Root, now: datetime) -> float | None:
    fingerprints = [fpr for fpr, _, _, state in root.journal.gateway_keys() if state == "current"]
    fingerprints += [o.fingerprint for o in root.registry.all() if o.active]
    days = []
    for fingerprint in fingerprints:
        try:
            expires = root.keyring.key(Fingerprint.parse(fingerprint)).expires
        except CryptoError:
            continue  # counted in key_problems
        if expires is not None:
            days.append((expires - now).total_seconds() / 86400)
    return round(min(days), 3) if days else None


def write_metrics(root: Root, now: datetime) -> Path:
    """Rewrite `state/metrics.prom` atomically (a reader never sees half a file); 0600 like all of state/
    (the access model's), though it holds no secret: a timer copies it to node_exporter's folder."""
    path = root.path / STATE / METRICS_FILE
    atomic_write_bytes(path, render(root, now).encode())
    return path
