"""A CSV signed inside a PGP/MIME message (RFC 3156 `multipart/signed`), kept as evidence.

An officer's mail client (Thunderbird, GpgOL) signs the MIME entity the CSV is attached to, not the
CSV's bytes: its headers, a text part, the CSV in base64 lines, maybe the officer's public key. The
gateway relays only the CSV, so it keeps the rest, the `Envelope`: the entity's bytes before and
after the CSV's base64 body, and the length of its lines. Anyone holding the CSV and the envelope
rebuilds exactly the bytes the officer signed (`Envelope.signed`), and checks the officer's own
signature over them, end to end, as for a detached signature over the file.

An envelope is hostile until checked: it counts only if, with a placeholder where the CSV's body
goes, it parses as a MIME entity whose one CSV attachment, base64-encoded, has exactly that body.
Then the signed bytes decode to this CSV and nothing else. The envelope may hold the officer's
words (a text part, a subject): it stays in the outbox it came from and travels sealed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser

EVIDENCE_SUFFIX = ".pgpmime"  # beside the CSV in an outbox, in place of its .sig or .asc
EVIDENCE_FORMAT = "iom-gateway-pgp-mime"
MAX_ENVELOPE_BYTES = 256 * 1024  # headers, a text part, a public key: a few KB
MAX_EVIDENCE_BYTES = 2 * MAX_ENVELOPE_BYTES  # base64 of the envelope and an armored signature
SIGNATURE_TYPE = "application/pgp-signature"
_PLACEHOLDER = "QUFB"  # stands for the CSV's base64 body when the envelope's structure is checked
_CRLF = b"\r\n"


@dataclass(frozen=True, slots=True)
class Envelope:
    """The signed entity around a CSV's base64 body: `before` + the body's lines + `after`."""

    before: bytes
    after: bytes
    line_length: int

    def signed(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The bytes the officer signed, with the CSV the chunks yield base64-encoded in its place."""
        yield self.before
        pending, text, first = b"", b"", True
        for chunk in chunks:
            data = pending + chunk
            whole = len(data) - len(data) % 3
            pending, text = data[whole:], text + base64.b64encode(data[:whole])
            lines, text = _full_lines(text, self.line_length)
            if lines:
                yield (b"" if first else _CRLF) + _CRLF.join(lines)
                first = False
        text += base64.b64encode(pending)
        if text:
            yield (b"" if first else _CRLF) + _CRLF.join(_wrapped(text, self.line_length))
        yield self.after

    def dump(self, signature: str | None = None) -> bytes:
        """The envelope as JSON; with `signature` (armored) that is the evidence file an outbox holds."""
        document: dict[str, object] = {
            "format": EVIDENCE_FORMAT,
            "version": 1,
            "line_length": self.line_length,
            "before": base64.b64encode(self.before).decode("ascii"),
            "after": base64.b64encode(self.after).decode("ascii"),
        }
        if signature is not None:
            document["signature"] = signature
        return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"


def _full_lines(text: bytes, length: int) -> tuple[list[bytes], bytes]:
    """Every line of `length` that is surely not the last (more text follows it), and the rest."""
    count = max(0, (len(text) - 1) // length)
    return [text[i * length : (i + 1) * length] for i in range(count)], text[count * length :]


def parse(raw: bytes) -> tuple[Envelope, str | None]:
    """The envelope in `raw` (an evidence file or a sealed envelope) and its armored signature, if any.

    Raises ValueError saying what is wrong: not JSON of this format, too large, or an envelope that
    does not hold one base64 CSV attachment where its body goes.
    """
    if len(raw) > MAX_EVIDENCE_BYTES:
        raise ValueError(f"it is over {MAX_EVIDENCE_BYTES // 1024} KB")
    try:
        data = json.loads(raw)
        valid = isinstance(data, dict) and data.get("format") == EVIDENCE_FORMAT and data.get("version") == 1
        length, signature = data["line_length"], data.get("signature")
        before = base64.b64decode(data["before"], validate=True)
        after = base64.b64decode(data["after"], validate=True)
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
        valid = False
    if not valid or not isinstance(length, int) or isinstance(length, bool) or not 4 <= length <= 998:
        raise ValueError(f"it is not the {EVIDENCE_FORMAT} evidence iom-gateway writes")
    if signature is not None and not isinstance(signature, str):
        raise ValueError("its signature is not armored text")
    envelope = Envelope(before, after, length)
    check_envelope(envelope)
    return envelope, signature


def check_envelope(envelope: Envelope) -> None:
    """Raise ValueError unless the envelope, its body filled by a placeholder, is one MIME entity
    whose one CSV attachment is base64 and has exactly the placeholder as body."""
    if len(envelope.before) + len(envelope.after) > MAX_ENVELOPE_BYTES:
        raise ValueError(f"the message around the CSV is over {MAX_ENVELOPE_BYTES // 1024} KB")
    entity = _parse_entity(envelope.before + _PLACEHOLDER.encode() + envelope.after)
    part = csv_part(entity)
    body = part.get_payload()
    if not isinstance(body, str) or body.rstrip("\r\n") != _PLACEHOLDER:
        raise ValueError("the CSV's body is not where the envelope says")


def _parse_entity(data: bytes) -> EmailMessage:
    try:
        entity = BytesParser(policy=policy.default).parsebytes(data)
        malformed = bool(entity.defects) or any(part.defects for part in entity.walk())
    except (RecursionError, ValueError, LookupError, TypeError):
        malformed = True
    if malformed:
        raise ValueError("the signed part's MIME structure is malformed")
    return entity


def csv_part(entity: Message) -> Message:
    """The one CSV attachment in a signed entity, base64-encoded; ValueError naming the problem.

    Text parts without a name and the sender's public key (application/pgp-keys) may ride along;
    any other named attachment, a second CSV or a CSV in another encoding is refused."""
    csvs = []
    for part in entity.walk():
        if part.is_multipart():
            continue
        name = part.get_filename() or ""
        if name.lower().endswith(".csv"):
            csvs.append(part)
        elif name and part.get_content_type() != "application/pgp-keys":
            raise ValueError(f"attachment {name[:80]!r} is not a CSV: sign and send only the CSV")
    if len(csvs) != 1:
        raise ValueError("the signed part carries no CSV" if not csvs else f"the signed part carries {len(csvs)} CSVs")
    (part,) = csvs
    if part.get("Content-Transfer-Encoding", "").strip().lower() != "base64":
        raise ValueError("the CSV is not base64-encoded in the signed part")
    return part


@dataclass(frozen=True, slots=True)
class SignedMail:
    """What a `multipart/signed` message carries: the CSV's name and bytes, the envelope, the signature."""

    csv_name: str
    csv: bytes
    envelope: Envelope
    signature: bytes  # as the second part carries it (armored)


def read_signed(raw: bytes, boundary: str) -> SignedMail:
    """Split a whole `multipart/signed` message (`raw`, its top-level `boundary`) into the signed
    entity and the signature (RFC 3156 5, RFC 2046 5.1.1), and find the CSV in the entity.

    Raises ValueError naming the problem: not exactly two parts, a second part that is not
    `application/pgp-signature`, no CSV or a CSV in another form than base64 lines of one length.
    """
    canonical = re.sub(rb"(?<!\r)\n", b"\r\n", raw)
    start = canonical.find(b"\r\n\r\n")
    body = b"\r\n" + canonical[start + 4 :]
    delimiter = re.compile(rb"\r\n--" + re.escape(boundary.encode("ascii", "replace")) + rb"(--)?[ \t]*(?=\r\n|$)")
    marks = list(delimiter.finditer(body))
    closes = [m for m in marks if m.group(1)]
    if len(marks) < 3 or len(closes) != 1 or marks[2] is not closes[0] or any(m.group(1) for m in marks[:2]):
        raise ValueError("it is not two parts, the signed one and its signature, between its boundaries")
    entity = body[marks[0].end() + 2 : marks[1].start()]
    signature_part = _parse_entity(body[marks[1].end() + 2 : marks[2].start()])
    if signature_part.get_content_type() != SIGNATURE_TYPE:
        raise ValueError(f"its second part is {signature_part.get_content_type()}, not {SIGNATURE_TYPE}")
    signature = signature_part.get_payload(decode=True)
    if not isinstance(signature, bytes) or not signature.strip():
        raise ValueError("its signature part is empty")
    part = csv_part(_parse_entity(entity))
    encoded = part.get_payload()
    lines = encoded.rstrip("\r\n").split("\r\n") if isinstance(encoded, str) else []
    try:
        csv = base64.b64decode("".join(lines), validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("the CSV's base64 is damaged") from None
    length = len(lines[0]) if lines else 0
    wrapped = _CRLF.join(_wrapped(base64.b64encode(csv), length)) if 4 <= length <= 998 else b""
    if not csv or not wrapped or entity.count(wrapped) != 1:
        raise ValueError("the CSV's base64 is not in lines of one length")
    at = entity.index(wrapped)
    envelope = Envelope(entity[:at], entity[at + len(wrapped) :], length)
    check_envelope(envelope)
    return SignedMail(part.get_filename() or "", csv, envelope, signature)


def _wrapped(text: bytes, length: int) -> list[bytes]:
    return [text[i : i + length] for i in range(0, len(text), length)]
