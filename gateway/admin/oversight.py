"""The admin's questions: is the audit log intact, what happened, what did we disclose, is all well."""

from __future__ import annotations

import difflib
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.adapters.fsio import Folder, shown
from gateway.adapters.gpg import MAX_SIGNATURE_BYTES, Purpose
from gateway.adapters.store import INBOX
from gateway.core.errors import GatewayError, UsageError
from gateway.core.manifest import MAX_MANIFEST_BYTES
from gateway.core.model import Period
from gateway.exchange.folders import orphaned_folders
from gateway.exchange.health import KeyWarning, key_warnings, late_agencies
from gateway.exchange.intake import open_outbox, scan_outbox
from gateway.state.audit import Verdict, Witness
from gateway.state.disclosure import register, to_json, write_csv, write_html
from gateway.state.journal import ABANDONED, IN_FLIGHT, MAIL_QUEUED, REJECTED
from gateway.state.journal import DeferredDelivery as JournalDeferred
from gateway.state.requests import Requests, local_day
from gateway.state.root import Root

MANIFEST_SUFFIX = ".manifest.json"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def gateway_signature_check(root: Root, purpose: Purpose = Purpose.AUDIT) -> Callable[[bytes, bytes], str | None]:
    """A checker for gateway signatures made for `purpose` (audit checkpoints and anchors, or manifests):
    the signer must be one of this gateway's keys, current or retired; a key that has since expired
    still vouches for what it signed before."""
    known = {fingerprint for fingerprint, *_ in root.journal.gateway_keys()}
    # the journal lives in state/ too: a writer of it must not disown the keys whose secret is in keys/
    held = root.keyring.keys()
    known |= {str(info.fingerprint) for info in held if info.has_secret}

    def check(data: bytes, signature: bytes) -> str | None:
        result = root.keyring.verify_bytes(data, signature, purpose=purpose)
        signer = str(result.fingerprint) if result.fingerprint else None
        if signer not in known:
            return None
        return signer if result.valid or result.key_expired else None

    return check


@dataclass(frozen=True, slots=True)
class AuditCheck:
    """`audit verify`: the verdict, and the manifests that did not count as witnesses (file, why)."""

    verdict: Verdict
    ignored: tuple[tuple[str, str], ...] = ()


def verify_audit(root: Root, witness_folders: Sequence[Path] = ()) -> AuditCheck:
    """Check the audit log (see AuditLog.verify): chain, checkpoints, head, anchor, genesis, bounds, and
    as witnesses the manifests in the root's inbox/ and in `witness_folders` (e.g. a recipient's copy).

    Raises UsageError if a witness folder is not a folder.
    """
    check = gateway_signature_check(root)
    witnesses: list[Witness] = []
    ignored: list[tuple[str, str]] = []
    inbox = root.path / INBOX
    own = sorted(inbox.glob(f"*/*{MANIFEST_SUFFIX}")) if inbox.is_dir() and not inbox.is_symlink() else []
    sources = [(path, str(path.relative_to(root.path))) for path in own]
    for folder in witness_folders:
        if not folder.is_dir():
            raise UsageError(f"--witness {str(folder)!r} is not a folder: name the folder the manifests were copied to")
        sources += [(path, str(path)) for path in sorted(folder.rglob(f"*{MANIFEST_SUFFIX}"))]
    manifest_check = gateway_signature_check(root, Purpose.MANIFEST)
    for path, name in sources:
        found = _witness(path, name, manifest_check)
        if isinstance(found, Witness):
            witnesses.append(found)
        else:
            ignored.append((name, found))
    made = root.journal.deliveries_made()
    delivered = f"the journal ({made} deliveries)" if made else None
    return AuditCheck(root.audit.verify(check, witnesses=witnesses, delivered=delivered), tuple(ignored))


def _witness(path: Path, name: str, check: Callable[[bytes, bytes], str | None]) -> Witness | str:
    """The witness a manifest holds if the gateway signed it; otherwise why it does not count."""
    try:
        with Folder.open(path.parent) as folder:
            data = folder.read(path.name, MAX_MANIFEST_BYTES)
            signature = folder.read(path.name + ".sig", MAX_SIGNATURE_BYTES)
        if data is None or signature is None:
            missing = path.name if data is None else path.name + ".sig"
            return f"{missing!r} is missing or not a regular file"
    except GatewayError as exc:
        return exc.message
    if check(data, signature) is None:
        return "its signature does not verify with a gateway key: it was not made by this gateway"
    try:
        document: Any = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        document = None
    stamp = document.get("audit") if isinstance(document, dict) else None
    if not isinstance(stamp, dict):
        return "it carries no audit witness (sealed before manifests carried one)"
    seq, head = stamp.get("seq"), stamp.get("head")
    package, recipient = document.get("package"), document.get("recipient")
    if not (isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 and isinstance(head, str)):
        return "its audit witness is malformed"
    if not (_HEX64.fullmatch(head) and isinstance(package, str) and isinstance(recipient, str)):
        return "its audit witness is malformed"
    return Witness(name, package, recipient, seq, head)


# Every event the gateway writes to the audit log (a test checks the code writes no other), so that
# `audit show --event` can tell a misspelt name from one that has simply not happened yet.
AUDIT_EVENTS = frozenset(
    {
        "access.account.fixed",
        "access.account.locked",
        "access.account.made",
        "access.chroot.made",
        "access.folders.shared",
        "access.group.joined",
        "access.group.made",
        "access.keys_command.installed",
        "access.mount.made",
        "access.mount.unit",
        "access.sshd.installed",
        "audit.checkpoint",
        "audit.genesis",
        "audit.purged",
        "audit.repaired",
        "delivery.abandoned",
        "delivery.deferred",
        "gateway.key.created",
        "gateway.key.rotated",
        "journal.moved",
        "journal.password_set",
        "mail.gave_up",
        "mail.sent",
        "officer.added",
        "officer.password_set",
        "officer.reencrypted",
        "officer.rekeyed",
        "officer.revoked",
        "officer.ssh_key.set",
        "package.delivered",
        "package.pulled",
        "package.received",
        "password.created",
        "password.exported",
        "password.imported",
        "password.reencrypted",
        "password.rotated",
        "password.shown",
        "receipt.refused",
        "relay.password_set",
        "request.answered",
        "request.received",
        "request.refused",
        "request.rejected",
        "request.shown",
        "retention.purged",
        "sar.key.created",
        "sar.key.rotated",
        "sar.lookup",
        "smtp.locked_out",
        "submission.abandoned",
        "submission.delivered",
        "submission.duplicate",
        "submission.mailed",
        "submission.rejected",
        "submission.submitted",
        "submission.unreadable",
        "unsafe.fault_injection",
        "vault.rotated",
    }
)


def audit_events(root: Root, since: datetime | None, event: str | None) -> list[dict[str, object]]:
    """The audit entries at or after `since` whose event is `event` or under it (`submission` = `submission.*`).

    Raises UsageError for an event name the gateway never writes, naming the closest known ones.
    """
    entries = root.audit.select(since, None)
    if event is None:
        return entries
    known = AUDIT_EVENTS | {str(entry.get("event")) for entry in entries}
    families = {".".join(name.split(".")[:depth]) for name in known for depth in range(1, name.count(".") + 1)}
    if event not in known | families:
        close = difflib.get_close_matches(event, sorted(known | families), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}?" if close else f"events: {', '.join(sorted(families))}"
        raise UsageError(
            f"no audit event {event!r}: {hint} (a name, or the part before a dot: submission = submission.*)"
        )
    return [e for e in entries if e.get("event") == event or str(e.get("event")).startswith(event + ".")]


def disclosure_report(root: Root, month: Period, form: str) -> str:
    """The disclosure register of the data for `month` (Warwickshire 2.3.3.3, Solihull 4.4.3), whenever it
    was delivered, as csv, html or json text."""
    rows = register(root.audit.entries(), month.year, month.month)
    if form == "json":
        return json.dumps(to_json(rows), indent=2, ensure_ascii=False) + "\n"
    out = io.StringIO()
    if form == "html":
        title = f"{root.config.partnership}: information disclosed for {month} (the data's period, whenever delivered)"
        write_html(rows, out, title)
    else:
        write_csv(rows, out)
    return out.getvalue()


# ----------------------------------------------------------------------------------------- status


@dataclass(frozen=True, slots=True)
class WaitingFile:
    """A file in an outbox the gateway has not finished with, and why (for a person to read)."""

    agency: str
    file: str  # escaped with shown(): names in outboxes are hostile
    why: str
    age_seconds: int


@dataclass(frozen=True, slots=True)
class DeferredDelivery:
    """A delivery waiting for the gateway's configuration: to whom, of which file, since when, why and the fix."""

    agency: str
    file: str
    submission: str
    recipient: str
    since: str
    reason: str
    file_in_outbox: bool


@dataclass(frozen=True, slots=True)
class OrphanedFolder:
    """outbox/<name>/ or inbox/<name>/ for a name that is no agency in gateway.toml: files there wait for ever."""

    folder: str
    files: int


@dataclass(frozen=True, slots=True)
class Unreceipted:
    """A package delivered longer ago than [packages] receipt_days that no officer of its agency receipted."""

    agency: str
    package: str
    delivered: str


@dataclass(frozen=True, slots=True)
class NewGatewayKey:
    """Since the last `keys rotate --gateway`: the current key, since when, and the recipient agencies none of
    whose officers has yet pulled (or receipted) a package it signed, so may still lack it."""

    fingerprint: str
    since: str
    not_pulled_by: list[str]


@dataclass(frozen=True, slots=True)
class OpenRequest:
    """An information request waiting for its answer: ids, agencies and dates only (its text is encrypted)."""

    id: str
    from_agency: str
    to_agency: str
    due: str
    urgent: bool
    days_overdue: int


@dataclass(frozen=True, slots=True)
class Status:
    now: str
    outbox_waiting: dict[str, int]
    inbox_unpulled: dict[str, int]
    in_flight: int
    last_run: dict[str, object] | None
    errors_24h: dict[str, int]  # audit events in the last 24 h: rejected, abandoned (every one, not per file)
    keys: list[KeyWarning]
    late: list[str]
    period: str
    due_day: int
    waiting: list[WaitingFile] = field(default_factory=list)
    deferred: list[DeferredDelivery] = field(default_factory=list)
    orphaned: list[OrphanedFolder] = field(default_factory=list)
    unreceipted: list[Unreceipted] = field(default_factory=list)  # delivered [packages] receipt_days ago, no receipt
    new_gateway_key: NewGatewayKey | None = None  # None until the gateway key was first rotated
    mail_queued: int = 0  # messages the relay has still to send
    mail_gave_up_24h: int = 0  # messages the relay gave up on in the last 24 h
    requests: list[OpenRequest] = field(default_factory=list)  # open information requests, urgent first, by due date

    @property
    def attention(self) -> list[str]:
        """What an admin must act on, one line each; `status` exits 1 while there is any."""
        lines = [
            f"delivery of {d.agency}/{d.file} to {d.recipient} deferred since {d.since}: {d.reason}"
            + ("" if d.file_in_outbox else " (its file has left the outbox: the next restart closes it)")
            for d in self.deferred
        ]
        lines += [
            f"{u.agency} has not receipted {u.package} (delivered {u.delivered}): ask its officers to pull it and "
            "upload the receipt"
            for u in self.unreceipted
        ]
        lines += [f"{k.owner}: {k.problem}" for k in self.keys]
        lines += [f"{agency} has not submitted for {self.period} (due by day {self.due_day})" for agency in self.late]
        lines += [
            f"{o.folder}/ holds {o.files} file(s) but {o.folder.partition('/')[2]} is no agency in gateway.toml: "
            "nothing takes or pulls them (add the agency, or move the files to the right folder)"
            for o in self.orphaned
            if o.files
        ]
        if self.mail_gave_up_24h:
            lines.append(
                f"{self.mail_gave_up_24h} message(s) could not be sent through [smtp.relay] in the last 24 h: "
                "see `audit show --event mail.gave_up` for each reason (the packages are in their inboxes)"
            )
        lines += [
            f"request {r.id} from {r.from_agency} to {r.to_agency} is OVERDUE by {r.days_overdue} day(s) (due {r.due}):"
            f" a DO/PDO of {r.to_agency} answers it (`iom-gateway request answer {r.id} ...`)"
            for r in self.requests
            if r.days_overdue
        ]
        if self.last_run is None:
            lines.append("the gateway has never run: start it (`systemctl start iom-gateway` or `iom-gateway run`)")
        return lines

    @property
    def notes(self) -> list[str]:
        """Worth knowing, nothing to act on: each sender got a report for each refusal."""
        rejected, abandoned = self.errors_24h.get(REJECTED, 0), self.errors_24h.get(ABANDONED, 0)
        lines = []
        if rejected:
            lines.append(f"{rejected} submission(s) refused in the last 24 h: see `audit show --event submission`")
        if abandoned:
            lines.append(f"{abandoned} submission(s) abandoned in the last 24 h (their files left mid-flight)")
        if self.mail_queued:
            lines.append(f"{self.mail_queued} message(s) waiting for [smtp.relay] (sent as soon as it takes them)")
        rotated = self.new_gateway_key
        if rotated is not None and rotated.not_pulled_by:
            lines.append(
                f"no officer of {', '.join(rotated.not_pulled_by)} has yet pulled a package signed by the new "
                f"gateway key {rotated.fingerprint} (current since {rotated.since}): check they have it "
                "(`iom-gateway keys export --gateway --to FILE`)"
            )
        return lines

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["attention"] = self.attention
        data["notes"] = self.notes
        return data


def status(root: Root, now: datetime) -> Status:
    """Queues and why each file waits, deferred deliveries, last run, refusals in 24 h, keys near expiry,
    agencies late for the month. Reads only (no lock): it runs beside the daemon."""
    period = Period.of(now.date())
    deferred = root.journal.deferred()
    waiting = [w for a in root.config.agencies for w in _waiting(root, a, now, deferred)]
    counts = {
        a: sum(1 for w in waiting if w.agency == a and not w.why.startswith("ignored")) for a in root.config.agencies
    }
    unpulled = {a: root.journal.unpulled(a) for a in root.config.agencies}
    since = now - timedelta(hours=24)
    errors = {s: len(root.audit.select(since, f"submission.{s}")) for s in (REJECTED, ABANDONED)}
    due = root.config.submissions.due_day
    return Status(
        now=now.isoformat(timespec="seconds"),
        outbox_waiting=counts,
        inbox_unpulled=unpulled,
        in_flight=root.journal.in_flight(),
        last_run=root.journal.last_run(),
        errors_24h=errors,
        keys=key_warnings(root, now),
        late=late_agencies(root, now),
        period=str(period),
        due_day=due,
        waiting=waiting,
        deferred=[_deferred(root, d, _sha256(root, d.submission)) for d in deferred],
        orphaned=_orphaned(root),
        unreceipted=[
            Unreceipted(d.recipient, d.package, d.created)
            for d in root.journal.unreceipted((now - timedelta(days=root.config.packages.receipt_days)).isoformat())
            if d.recipient in root.config.agencies
        ],
        new_gateway_key=_new_gateway_key(root),
        mail_queued=len(root.journal.mail(MAIL_QUEUED)),
        mail_gave_up_24h=len(root.audit.select(since, "mail.gave_up")),
        requests=[
            OpenRequest(r.id, r.from_agency, r.to_agency, r.due, r.urgent, r.days_overdue(local_day(now)))
            for r in Requests(root.db).all(open_only=True)
        ],
    )


def _new_gateway_key(root: Root) -> NewGatewayKey | None:
    """After a gateway key rotation: the recipients with no pull (or receipt) of a package the new key signed."""
    keys = root.journal.gateway_keys()
    current = [(fingerprint, created) for fingerprint, created, _, state in keys if state == "current"]
    if len(keys) < 2 or not current:
        return None
    fingerprint, since = current[0]
    config = root.config
    recipients = {r.id for sender in config.agencies.values() for r in config.recipients(sender)}
    missing = sorted(recipients - root.journal.agencies_holding(fingerprint))
    return NewGatewayKey(fingerprint, since, missing)


def _waiting(root: Root, agency: str, now: datetime, deferred: list[JournalDeferred]) -> list[WaitingFile]:
    """Every file in `agency`'s outbox the gateway has not finished with, and why it waits."""
    limits, settle = root.config.submissions, root.config.daemon.settle_seconds
    try:
        folder = open_outbox(root.path, agency)
    except UsageError:
        return []
    except GatewayError as exc:
        return [WaitingFile(agency, "", f"ignored: the outbox cannot be read safely ({exc.message})", 0)]
    with folder:
        intake = scan_outbox(folder, now.timestamp(), limits.pairing_timeout_seconds)
    found = [WaitingFile(agency, shown(name), f"ignored: {why}", 0) for name, why in intake.ignored]
    for pair in intake.pairs:
        age = max(0, int(pair.age_seconds))
        recorded = root.journal.named(agency, pair.csv)
        waits = sorted(
            d.recipient
            for d in deferred
            if d.agency == agency and d.name == pair.csv and recorded is not None and recorded.id == d.submission
        )
        if waits:
            why = f"its delivery to {', '.join(waits)} is deferred (see below); the others are made"
        elif recorded is not None and recorded.status in IN_FLIGHT:
            why = "being processed, or left by an interrupted run: the daemon's next pass finishes it"
        elif pair.signature is None and age < limits.pairing_timeout_seconds:
            left = limits.pairing_timeout_seconds - age
            why = f"no signature yet: refused as unsigned in {left} s unless its .sig or .asc arrives"
        elif pair.signature is None:
            why = "no signature within the pairing timeout: refused at the daemon's next pass"
        elif age < settle:
            why = f"still being written: taken once unchanged for {settle} s"
        else:
            why = "complete: the daemon takes it at its next pass (is it running?)"
        found.append(WaitingFile(agency, shown(pair.csv), why, age))
    return found


def _deferred(root: Root, found: JournalDeferred, sha256: str) -> DeferredDelivery:
    here = _still_there(root, found.agency, found.name, sha256)
    return DeferredDelivery(
        found.agency, shown(found.name), found.submission, found.recipient, found.since, found.reason, here
    )


def _sha256(root: Root, submission: str) -> str:
    record = root.journal.submission(submission)
    return record.sha256 if record is not None else ""


def _still_there(root: Root, agency: str, name: str, sha256: str) -> bool:
    """Whether the outbox still holds these bytes under `name` (read, never changed)."""
    try:
        with open_outbox(root.path, agency) as folder, folder.open_file(name) as file:
            return file.hash() == sha256
    except (GatewayError, OSError):
        return False


def _orphaned(root: Root) -> list[OrphanedFolder]:
    """Folders in outbox/ and inbox/ that are no agency of gateway.toml, with how many files wait in each."""
    return [OrphanedFolder(o.folder, o.files) for o in orphaned_folders(root.path, root.config.agencies)]
