"""A submission by e-mail: the CSV and its detached signature, attached to a message from the officer.

The SMTP intake (daemon/smtp.py) hands each message it accepts for delivery here, with the officer
its login authenticated. Everything in the message is hostile: its headers, its MIME structure, the
attachments' names and bytes. What it may carry is exactly one CSV and one detached signature
(`.sig` binary or `.asc` armored) over that CSV's bytes, or be a PGP/MIME signed message (RFC 3156)
whose signed part carries exactly one CSV; either way made by the same officer's registered key.
Then the pair is written into the officer's agency outbox, signature first, each by temp file and
rename, as `submit` does, and the daemon takes it like any folder drop; a PGP/MIME message's
signature goes as `NAME.csv.pgpmime`, with the envelope it covers (core/pgpmime). The SMTP login
only says who may send; the signature is what authenticates the file, here as for a drop.

A message that breaks a rule is a `Refusal`: an SMTP reply (a 5xx code, its enhanced status code
and a sentence a mail client shows) and no file written.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser

from gateway.adapters.config import SmtpIntake
from gateway.adapters.fsio import shown
from gateway.core.errors import ConfigError, GatewayError, PolicyError
from gateway.core.manifest import armor_signature, binary_signature
from gateway.core.pgpmime import EVIDENCE_SUFFIX, SIGNATURE_TYPE, Envelope, read_signed
from gateway.exchange.intake import drop_pair
from gateway.state.registry import Officer
from gateway.state.root import Root

MAX_HEADER_BYTES = 64 * 1024  # a real message's header block is a few KB
MAX_ATTACHMENTS = 4  # a CSV, its signature, and room for a mail client's own (refused by name)
SAFE_CSV_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._() -]{0,150}\.csv", re.IGNORECASE)
SIGNATURE_SUFFIXES = (".sig", ".asc")


class Refusal(Exception):  # an answer to the sender, not a failure of the gateway
    """Why a message is not taken: `reply` is the SMTP line sent back, e.g. `554 5.6.0 ...`."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class MailedPair:
    """The CSV and signature a message carries, under the names they get in the outbox."""

    csv_name: str
    csv: bytes
    signature_suffix: str  # .sig (binary) or .asc (armored), as attached; .pgpmime for a signed message
    signature: bytes  # the file written beside the CSV
    envelope: Envelope | None = None  # a PGP/MIME message: what the signature covers around the CSV
    binary: bytes | None = None  # and the signature itself


def read_message(raw: bytes, officer: Officer) -> MailedPair:
    """The CSV and signature attached to `raw` (a whole RFC 5322 message) from `officer`.

    Raises Refusal for headers too large, a malformed structure, a `From:` that is not the officer's
    registered address, and anything but exactly one CSV and one signature attached.
    """
    end = _header_end(raw)
    if end is None or end > MAX_HEADER_BYTES:
        raise Refusal(
            f"552 5.3.4 the message's headers are over {MAX_HEADER_BYTES // 1024} KB or never end: "
            "send an ordinary message with the CSV and its signature attached"
        )
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
        malformed = bool(message.defects) or any(part.defects for part in message.walk())
    except (RecursionError, ValueError, LookupError, TypeError):  # nested past the stack, or undecodable
        malformed = True
    if malformed:
        raise Refusal("554 5.6.0 the message's MIME structure is malformed: send it again from an ordinary mail client")
    _check_from(message, officer)
    if message.get_content_type() == "multipart/signed":
        return _read_signed(raw, message)
    parts = list(message.iter_attachments()) if message.is_multipart() else []
    if not parts:
        raise Refusal(
            "554 5.6.0 the message has no attachment: attach the CSV and its detached signature "
            "(gpg --detach-sign FILE.csv makes FILE.csv.sig)"
        )
    if len(parts) > MAX_ATTACHMENTS:
        raise Refusal(f"552 5.3.4 {len(parts)} attachments: send one CSV and its signature per message")
    csvs, signatures = [], []
    for part in parts:
        name = part.get_filename() or ""
        if name.lower().endswith(".csv"):
            csvs.append((name, part))
        elif name.lower().endswith(SIGNATURE_SUFFIXES):
            signatures.append((name, part))
        else:
            shown = _shown(name) if name else "one without a name"
            raise Refusal(
                f"554 5.6.0 attachment {shown} is neither a CSV nor a signature (.sig, .asc): "
                "send only the CSV and its detached signature"
            )
    if len(csvs) != 1:
        raise Refusal(
            "554 5.6.0 the message carries no CSV: attach the CSV"
            if not csvs
            else f"554 5.6.0 the message carries {len(csvs)} CSVs: send one file (and its signature) per message"
        )
    if len(signatures) != 1:
        raise Refusal(
            "554 5.7.1 the CSV has no signature attached: attach its detached signature "
            "(gpg --detach-sign FILE.csv makes FILE.csv.sig)"
            if not signatures
            else f"554 5.6.0 the message carries {len(signatures)} signatures: attach only the CSV's own"
        )
    (csv_name, csv_part), (signature_name, signature_part) = csvs[0], signatures[0]
    _check_name(csv_name)
    csv = csv_part.get_payload(decode=True)
    signature = signature_part.get_payload(decode=True)
    if not isinstance(csv, bytes) or not isinstance(signature, bytes) or not csv or not signature:
        raise Refusal("554 5.6.0 an attachment is empty or cannot be decoded: attach the files again")
    suffix = ".asc" if signature_name.lower().endswith(".asc") else ".sig"
    return MailedPair(csv_name, csv, suffix, signature)


def _check_name(csv_name: str) -> None:
    if not SAFE_CSV_NAME.fullmatch(csv_name):
        raise Refusal(
            f"554 5.6.0 the CSV's name {_shown(csv_name)} is not a plain file name: rename it to letters, "
            "digits, '.', '-', '_', spaces and brackets, ending .csv (e.g. police-2026-11.csv)"
        )


def _read_signed(raw: bytes, message: EmailMessage) -> MailedPair:
    """The CSV in a PGP/MIME signed message (RFC 3156), with its envelope and signature as evidence."""
    protocol = str(message.get_param("protocol") or "").lower()
    boundary = message.get_boundary()
    if protocol != SIGNATURE_TYPE or not boundary:
        raise Refusal(
            f"554 5.6.0 the signed message's protocol is not {SIGNATURE_TYPE}: sign it with OpenPGP "
            "(PGP/MIME), not S/MIME, or attach the CSV and its detached signature to an ordinary message"
        )
    try:
        signed = read_signed(raw, boundary)
        signature = binary_signature(signed.signature)
    except ValueError as exc:
        raise Refusal(
            f"554 5.6.0 the PGP/MIME signed message cannot be taken ({exc}): attach the CSV to a message your "
            "mail client signs with OpenPGP, or attach the CSV and its detached signature (gpg --detach-sign)"
        ) from None
    _check_name(signed.csv_name)
    evidence = signed.envelope.dump(armor_signature(signature))
    return MailedPair(signed.csv_name, signed.csv, EVIDENCE_SUFFIX, evidence, signed.envelope, signature)


def take_mailed(root: Root, officer: Officer, pair: MailedPair) -> str:
    """Check `pair`'s signature is `officer`'s own, then drop it into the agency's outbox; return the
    CSV's outbox path (`outbox/AGENCY/NAME`). Raises Refusal; nothing is written then."""
    if pair.envelope is None:
        check = root.keyring.verify_detached((pair.csv,), pair.signature)
    else:
        check = root.keyring.verify_detached(pair.envelope.signed((pair.csv,)), pair.binary or b"")
    if not check.valid or check.fingerprint is None:
        problem = check.problem or "it does not verify"
        raise Refusal(
            f"554 5.7.1 the CSV's signature is not good ({problem}): "
            + (
                "sign the attached file itself with gpg --detach-sign and attach both again (a mail client must "
                "not change the CSV: attach, never paste)"
                if pair.envelope is None
                else "send the message again, signed by your mail client with your registered key"
            )
        )
    signer = root.registry.by_fingerprint(str(check.fingerprint), datetime.now(UTC))
    if signer is None or signer.id != officer.id:
        whose = "another agency's officer" if signer is not None and signer.agency != officer.agency else None
        whose = whose or ("another officer" if signer is not None else "a key no registered officer holds")
        raise Refusal(
            f"554 5.7.1 the CSV is signed by {whose}, not by you ({officer.id}): "
            "sign it with your own registered key and send it from your own login"
        )
    try:
        drop_pair(root.path, officer.agency, pair.csv_name, pair.signature_suffix, pair.signature, (pair.csv,))
    except PolicyError as exc:
        raise Refusal(f"550 5.7.0 {exc.message}") from None
    except GatewayError as exc:
        raise Refusal(f"451 4.3.0 the gateway cannot take the file now ({exc.message}): try again later") from None
    root.audit.append("submission.mailed", actor=officer.id, agency=officer.agency, bytes=len(pair.csv))
    return f"outbox/{officer.agency}/{pair.csv_name}"


def same_address(given: str, registered: str) -> bool:
    """Whether two addresses are the same mailbox: the domain compared without case, the local part exactly."""
    local, _, domain = given.strip().rpartition("@")
    want_local, _, want_domain = registered.strip().rpartition("@")
    return bool(local) and local == want_local and domain.lower() == want_domain.lower()


def _check_from(message: EmailMessage, officer: Officer) -> None:
    headers = message.get_all("From") or []
    addresses: tuple[Address, ...] = ()
    if len(headers) == 1:
        try:
            addresses = tuple(headers[0].addresses)
        except (AttributeError, ValueError, IndexError):
            addresses = ()
    if len(addresses) != 1 or not same_address(addresses[0].addr_spec, officer.email):
        raise Refusal(
            f"550 5.7.1 the message's From: is not your registered address <{officer.email}>: "
            "send from that address only"
        )


def _header_end(raw: bytes) -> int | None:
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else None


def _shown(name: str) -> str:
    """A hostile name as a mail client may show it: escaped (`fsio.shown`), quoted, cut short."""
    return repr(shown(name[:80]) + ("..." if len(name) > 80 else ""))


def tls_context(settings: SmtpIntake) -> ssl.SSLContext:
    """The server's TLS context (TLS 1.2 or later) from the PEM files; ConfigError naming the fix."""
    for path in (settings.tls_cert, settings.tls_key):
        if not path.is_file():
            raise ConfigError(f"[smtp.intake] names {str(path)!r}, which is not a file: give the PEM file's path")
    if settings.tls_key.stat().st_mode & 0o077:
        raise ConfigError(f"{str(settings.tls_key)!r} is readable by others: chmod 600 it (it is a private key)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"the [smtp.intake] certificate and key do not load ({exc}): give a PEM certificate chain and its key"
        ) from None
    return context
