"""What the gateway sends through [smtp.relay]: packages by e-mail, and notices that carry no data.

A package for an agency with `email = true` goes to each of its active officers as its own message:
for an OpenPGP agency, RFC 3156 PGP/MIME (`multipart/encrypted`), the inner entity (a short text and
the CSV attached under the package's marked name) encrypted to the agency's officers and signed by
the gateway key while the file is sealed, and kept only as ciphertext (`state/mail/`) until sent; for
an AES-ZIP agency, the package's ZIP attached, never its password. A package larger than
`[smtp.relay] max_message_bytes` is not mailed: its officers get a notice to fetch it.

Notices are plain text of agency ids, months, counts and the names of reports: a recipient agency's
officers hear that packages landed, a sending officer that a file was refused, the admins that an
agency is late, a key is near expiry or a message could not be sent. Each kind can be switched off
(`[smtp.notices]`). Every message is queued in the journal with the state change that causes it,
under an id derived from what it is about, so a redo after a crash queues nothing twice.
"""

from __future__ import annotations

import hashlib
import io
import ssl
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from gateway.adapters.config import SmtpRelay
from gateway.adapters.db import STATE
from gateway.adapters.fsio import OpenFile, atomic_write_bytes
from gateway.adapters.gpg import Fingerprint
from gateway.core.errors import ConfigError
from gateway.core.manifest import armor_message
from gateway.core.marking import Marking
from gateway.core.model import Agency, Delivery, Period, package_suffix
from gateway.exchange.intake import OUTBOX
from gateway.exchange.intake import REJECTED as REJECTED_FOLDER
from gateway.state.journal import MailItem
from gateway.state.registry import Officer
from gateway.state.root import Root

MAIL_SPOOL = "mail"  # under state/: each package's encrypted entity until every officer's message is sent
PACKAGE, LANDED, REJECTED, LATE, KEY_EXPIRY, RELAY_GAVE_UP = (
    "package",
    "landed",
    "rejected",
    "late",
    "key_expiry",
    "relay_gave_up",
)
_BASE64_GROWTH = 4 / 3 * 1.03  # base64 and its line breaks, then the armor's own: what a byte costs in a message


def mail_id(*parts: str) -> str:
    """The id of the message about `parts` (its kind first): the same parts, the same message."""
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:32]


def spool(root: Root) -> Path:
    return root.path / STATE / MAIL_SPOOL


def subject(marking: Marking, sender: str, period: Period | str) -> str:
    """`[PROTECT - PERSONAL] IOM data from police, 2026-11`: the marking first, as the protocols ask."""
    return f"[{marking.text}] IOM data from {sender}, {period}"


def _officers(root: Root, agency: str) -> list[Officer]:
    return [o for o in root.registry.all(agency) if o.active and o.email]


def package_mail(
    root: Root,
    *,
    recipient: Agency,
    base: str,
    marking: Marking,
    sender: str,
    period: Period,
    rows: int,
    source: OpenFile,
    gateway: Fingerprint,
) -> tuple[MailItem, ...]:
    """The messages one delivered package causes: itself by e-mail to each officer of an `email`
    agency (its encrypted entity spooled now, while the plaintext is at hand), else a notice that it
    landed. Nothing without [smtp.relay]. Raises what encrypting or writing the spool raises."""
    relay = root.config.smtp_relay
    if relay is None:
        return ()
    officers = _officers(root, recipient.id)
    about = f"{sender}, {period}: {rows:,} row(s), {marking.text}"
    if recipient.email and _fits(root, relay, recipient, base, source.size):
        how = (
            "inside this encrypted message"
            if recipient.delivery is Delivery.GPG
            else "as an AES-256 ZIP (its password is never sent by e-mail: your agency has it)"
        )
        body = (
            f"IOM data from {about}.\n\nThe file is attached {how}. It is also in your agency's inbox on the "
            "gateway, with its signed manifest: `iom-gateway pull` checks both.\n"
        )
        attachment = base + package_suffix(recipient.delivery)
        if recipient.delivery is Delivery.GPG:
            attachment = _spool_entity(root, recipient, base, body, source, gateway)
        return tuple(
            MailItem(
                mail_id(PACKAGE, base, o.id),
                PACKAGE,
                o.email,
                subject(marking, sender, period),
                body,
                officer=o.id,
                agency=recipient.id,
                package=base,
                sender=sender,
                period=str(period),
                attachment=attachment,
            )
            for o in officers
        )
    if not root.config.notices.landed and not recipient.email:
        return ()
    too_large = recipient.email  # an e-mail agency that gets a notice: the package was too large to mail
    return tuple(
        MailItem(
            mail_id(LANDED, base, o.id),
            LANDED,
            o.email,
            "",  # composed when sent: every package waiting for this officer in one notice
            "too large to send by e-mail" if too_large else "",
            officer=o.id,
            agency=recipient.id,
            package=base,
            sender=sender,
            period=str(period),
        )
        for o in officers
    )


def _fits(root: Root, relay: SmtpRelay, recipient: Agency, base: str, size: int) -> bool:
    if recipient.delivery is Delivery.AES_ZIP:
        try:
            size = root.store.size(recipient.id, base + package_suffix(recipient.delivery))
        except OSError:
            return False
    return size * _BASE64_GROWTH * (_BASE64_GROWTH if recipient.delivery is Delivery.GPG else 1) + 16384 <= (
        relay.max_message_bytes
    )


def _spool_entity(root: Root, recipient: Agency, base: str, text: str, source: OpenFile, gateway: Fingerprint) -> str:
    """Encrypt the inner MIME entity (a text and the CSV attached) to `recipient`'s officers, signed by
    the gateway; keep the armored ciphertext in the spool; return its name there."""
    name = f"{base}.{recipient.id}.asc"
    path = spool(root) / name
    if path.exists():  # made before a crash: the same entity, already encrypted
        return name
    entity = EmailMessage()
    entity.set_content(text)
    csv = b"".join(source.chunks())  # hash-checked against the first read: the bytes the sender signed
    entity.add_attachment(csv, maintype="text", subtype="csv", filename=base + ".csv")
    fingerprints = [Fingerprint.parse(o.fingerprint) for o in root.registry.all(recipient.id) if o.active]
    out = io.BytesIO()
    root.keyring.encrypt(
        (entity.as_bytes(),),
        out,
        recipients=fingerprints,
        signer=gateway,
        literal_name=base + ".eml",
        compress_level=root.config.packages.compress_level,
    )
    spool(root).mkdir(mode=0o700, exist_ok=True)
    atomic_write_bytes(path, armor_message(out.getvalue()), 0o600)
    return name


def rejection_notice(
    root: Root, officer: Officer, submission: str, file: str, counts: dict[str, int]
) -> tuple[MailItem, ...]:
    """The notice to the officer whose signed file was refused: the rule counts and where the report is."""
    if root.config.smtp_relay is None or not root.config.notices.rejected or not officer.email:
        return ()
    lines = [f"- {rule}: {count:,}" for rule, count in sorted(counts.items())] or ["- (see the report)"]
    body = (
        f"The file {file} you sent for {officer.agency} was not delivered: nothing was disclosed.\n\n"
        "What failed (rules and how many cells; the values are only in the report):\n"
        + "\n".join(lines)
        + "\n\nThe full report, with each row and column and the fix, is on the gateway in "
        f"{OUTBOX}/{officer.agency}/{REJECTED_FOLDER}/ ({REJECTED_FOLDER}/ in your outbox over SFTP). Correct the "
        "file, sign it again and send it.\n"
    )
    return (
        MailItem(
            mail_id(REJECTED, submission, officer.id),
            REJECTED,
            officer.email,
            f"[iom-gateway] {file} was not delivered: see its report",
            body,
            officer=officer.id,
            agency=officer.agency,
        ),
    )


def admin_notices(root: Root, kind: str, key: str, text: str) -> tuple[MailItem, ...]:
    """One notice of `kind` about `key` (an agency and month, a key and month, a message) to each admin."""
    notices = root.config.notices
    if root.config.smtp_relay is None or not notices.wanted(kind):
        return ()
    titles = {LATE: "an agency is late", KEY_EXPIRY: "a key needs renewing", RELAY_GAVE_UP: "a message was not sent"}
    return tuple(
        MailItem(mail_id(kind, key, admin), kind, admin, f"[iom-gateway] {titles[kind]}", text + "\n")
        for admin in notices.admins
    )


def landed_text(items: list[MailItem]) -> tuple[str, str]:
    """The subject and text of one notice for every package waiting for one officer."""
    groups: dict[tuple[str, str], int] = {}
    large = [i for i in items if i.body]
    for item in items:
        key = (item.sender or "?", item.period or "?")
        groups[key] = groups.get(key, 0) + 1
    lines = [
        f"{count} new package{'s' if count > 1 else ''} from {sender} for {period}"
        for (sender, period), count in sorted(groups.items())
    ]
    agency = items[0].agency
    text = (
        "\n".join(lines) + f": fetch {'them' if len(items) > 1 else 'it'} from {agency}'s inbox on the gateway "
        "(`iom-gateway pull`, or your SFTP client and `iom-gateway pull --from`).\n"
    )
    if large:
        text += f"\n{len(large)} of them {'is' if len(large) == 1 else 'are'} too large to send by e-mail.\n"
    return f"[iom-gateway] {lines[0]}" + (f" and {len(lines) - 1} more" if len(lines) > 1 else ""), text


def compose(root: Root, relay: SmtpRelay, items: list[MailItem], now: datetime) -> EmailMessage:
    """The message for `items` (one, or every landed notice for one officer), ready to send.

    Raises OSError if a package's attachment has gone (purged, or the spool lost): the caller gives up on it.
    """
    first = items[0]
    message = EmailMessage()
    message["From"] = relay.sender
    message["To"] = first.address
    message["Date"] = format_datetime(now)
    message["Message-ID"] = f"<{first.id}@{relay.sender.rpartition('@')[2]}>"  # the same on a retry
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to the gateway
    if first.kind == LANDED:
        title, text = landed_text(items)
        message["Subject"] = title
        message.set_content(text)
        return message
    message["Subject"] = first.subject
    if first.kind != PACKAGE:
        message.set_content(first.body)
        return message
    agency = root.config.agencies.get(first.agency or "")
    if agency is not None and agency.delivery is Delivery.AES_ZIP:
        message.set_content(first.body)
        data = root.store.read(agency.id, first.attachment or "", relay.max_message_bytes)
        if data is None:
            raise FileNotFoundError(first.attachment)
        message.add_attachment(data, maintype="application", subtype="zip", filename=first.attachment)
        return message
    armored = (spool(root) / (first.attachment or "")).read_bytes()
    message.set_type("multipart/encrypted")
    message.set_param("protocol", "application/pgp-encrypted")
    control = EmailMessage()
    control.set_content(b"Version: 1\r\n", maintype="application", subtype="pgp-encrypted", cte="7bit")
    del control["MIME-Version"]
    control["Content-Description"] = "PGP/MIME version identification"
    payload = EmailMessage()
    payload.set_content(armored, maintype="application", subtype="octet-stream", cte="7bit", filename="encrypted.asc")
    del payload["MIME-Version"]
    payload.replace_header("Content-Disposition", 'inline; filename="encrypted.asc"')
    payload["Content-Description"] = "OpenPGP encrypted message"
    message.attach(control)
    message.attach(payload)
    message.preamble = "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)."
    return message


def relay_tls_context(relay: SmtpRelay) -> ssl.SSLContext:
    """TLS 1.2 or later, the certificate checked (against `ca_file`, else the system's CAs) and its name."""
    if relay.ca_file is not None and not relay.ca_file.is_file():
        raise ConfigError(
            f"[smtp.relay] ca_file {str(relay.ca_file)!r} is not a file: give the PEM file of the relay's CA"
        )
    try:
        context = ssl.create_default_context(cafile=None if relay.ca_file is None else str(relay.ca_file))
    except ssl.SSLError as exc:
        raise ConfigError(f"[smtp.relay] ca_file does not load ({exc}): give a PEM file of CA certificates") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
