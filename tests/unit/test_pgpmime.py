"""A CSV signed in a PGP/MIME message: split from the message, kept as an envelope, and rebuilt into
exactly the bytes the officer's mail client signed, for any CSV and any chunking; a hostile envelope
(one that would make other bytes stand for the CSV) is refused."""

from __future__ import annotations

import base64
import os
import random
from collections.abc import Callable
from email import policy
from email.message import EmailMessage

import pytest

from gateway.core.pgpmime import Envelope, parse, read_signed

SIGNATURE = b"-----BEGIN PGP SIGNATURE-----\r\n\r\niHUEARYIAB0WIQ\r\n=abcd\r\n-----END PGP SIGNATURE-----\r\n"
CSV = b"Surname,Forename,DOB\r\n" + b"Ashcroft,Jane,01/02/1980\r\n" * 300
ENCODED = base64.b64encode(CSV)


def python_entity(csv: bytes = CSV, *, name: str = "police-2026-11.csv", extra: int = 0) -> bytes:
    """The signed part as Python's email package writes it: a text part, the CSV in 76-column base64."""
    entity = EmailMessage()
    entity.set_content("The month's file.")
    for n in range(1 + extra):
        entity.add_attachment(csv, maintype="text", subtype="csv", filename=name if n == 0 else f"{n}{name}")
    return entity.as_bytes(policy=policy.SMTP)


def thunderbird_entity(csv: bytes = CSV, *, encoding: str = "base64") -> bytes:
    """The signed part as Thunderbird writes it: protected headers, a text part, the CSV in 72-column
    base64, and the officer's public key attached."""
    encoded = base64.b64encode(csv)
    body = b"\r\n".join(encoded[i : i + 72] for i in range(0, len(encoded), 72))
    if encoding != "base64":
        body = csv.replace(b",", b"=2C")
    return (
        b'Content-Type: multipart/mixed; boundary="------------mixed7Hk2"; protected-headers="v1"\r\n'
        b"Subject: IOM return\r\nFrom: Police DO <police-do@demo.invalid>\r\n\r\n"
        b"This is a multi-part message in MIME format.\r\n--------------mixed7Hk2\r\n"
        b"Content-Type: text/plain; charset=UTF-8; format=flowed\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        b"Attached.\r\n\r\n--------------mixed7Hk2\r\n"
        b'Content-Type: text/csv; charset=UTF-8; name="police-2026-11.csv"\r\n'
        b'Content-Disposition: attachment; filename="police-2026-11.csv"\r\n'
        b"Content-Transfer-Encoding: " + encoding.encode() + b"\r\n\r\n" + body + b"\r\n"
        b"--------------mixed7Hk2\r\n"
        b'Content-Type: application/pgp-keys; name="OpenPGP_0x1234ABCD.asc"\r\n'
        b'Content-Disposition: attachment; filename="OpenPGP_0x1234ABCD.asc"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nLS0tLS1CRUdJTiBQR1A=\r\n\r\n--------------mixed7Hk2--\r\n"
    )


def signed_message(entity: bytes, *, second: bytes | None = None, close: bool = True) -> bytes:
    second = b"Content-Type: application/pgp-signature; name=OpenPGP_signature.asc\r\n\r\n" + SIGNATURE
    return (
        b"From: police-do@demo.invalid\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/signed; micalg=pgp-sha256; protocol="application/pgp-signature";'
        b' boundary="sig8Xq"\r\n\r\nThis is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n'
        b"--sig8Xq\r\n" + entity + b"\r\n--sig8Xq\r\n" + second + (b"\r\n--sig8Xq--\r\n" if close else b"")
    )


def rebuilt(envelope: Envelope, csv: bytes, seed: int) -> bytes:
    chooser = random.Random(seed)
    chunks, at = [], 0
    while at < len(csv):
        size = chooser.choice([1, 2, 3, 57, 4096, 1 << 20])
        chunks.append(csv[at : at + size])
        at += size
    return b"".join(envelope.signed(chunks))


@pytest.mark.parametrize("make", [python_entity, thunderbird_entity])
def test_the_signed_bytes_are_rebuilt_exactly_from_the_csv_and_the_envelope(make: Callable[[bytes], bytes]) -> None:
    for size in (1, 2, 3, 56, 57, 58, 71, 72, 73, 5000, len(CSV)):
        csv = os.urandom(size)
        entity = make(csv)
        mail = read_signed(signed_message(entity), "sig8Xq")
        assert mail.csv == csv and mail.csv_name == "police-2026-11.csv"
        assert mail.signature == SIGNATURE
        for seed in range(3):
            assert rebuilt(mail.envelope, csv, seed) == entity


def test_a_message_with_bare_newlines_is_read_as_its_canonical_crlf_form() -> None:
    entity = thunderbird_entity()
    mail = read_signed(signed_message(entity).replace(b"\r\n", b"\n"), "sig8Xq")
    assert b"".join(mail.envelope.signed([CSV])) == entity


def test_the_evidence_file_round_trips_and_keeps_the_signature() -> None:
    mail = read_signed(signed_message(thunderbird_entity()), "sig8Xq")
    envelope, signature = parse(mail.envelope.dump("-----BEGIN PGP SIGNATURE-----"))
    assert envelope == mail.envelope and signature == "-----BEGIN PGP SIGNATURE-----"
    assert parse(mail.envelope.dump()) == (mail.envelope, None)


def test_an_envelope_that_would_make_other_bytes_stand_for_the_csv_is_refused() -> None:
    """Moving the CSV's first base64 line into `before` would make the signature cover a shorter CSV."""
    entity = python_entity()
    envelope = read_signed(signed_message(entity), "sig8Xq").envelope
    first_line = entity[len(envelope.before) :].split(b"\r\n", 1)[0] + b"\r\n"
    shifted = Envelope(envelope.before + first_line, envelope.after, envelope.line_length)
    assert b"".join(shifted.signed([CSV[57:]])) == entity  # the same signed bytes, a CSV cut short
    with pytest.raises(ValueError, match="not where the envelope says"):
        parse(shifted.dump())
    tail = Envelope(envelope.before, b"\r\nTWFu" + envelope.after, envelope.line_length)
    with pytest.raises(ValueError, match="not where the envelope says"):
        parse(tail.dump())


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"not json", "not the iom-gateway-pgp-mime evidence"),
        (b'{"format": "iom-gateway-pgp-mime", "version": 2}', "not the iom-gateway-pgp-mime evidence"),
        (b'{"format": "iom-gateway-pgp-mime", "version": 1, "line_length": 0, "before": "", "after": ""}', "not the"),
        (
            b'{"format": "iom-gateway-pgp-mime", "version": 1, "line_length": 76, "before": "", "after": ""}',
            "malformed",
        ),
        (b"[" * 100_000, "not the iom-gateway-pgp-mime evidence"),
        (b" " * 600_000, "over"),
    ],
)
def test_evidence_that_is_not_ours_is_refused(raw: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse(raw)


@pytest.mark.parametrize(
    ("message", "says"),
    [
        (signed_message(thunderbird_entity(encoding="quoted-printable")), "not base64-encoded"),
        (signed_message(thunderbird_entity(encoding="7bit")), "not base64-encoded"),
        (signed_message(python_entity(extra=1)), "2 CSVs"),
        (signed_message(python_entity(name="notes.txt")), "not a CSV"),
        (signed_message(python_entity(), close=False), "not two parts"),
        (signed_message(python_entity()).replace(b"application/pgp-signature; name", b"text/plain; name"), "second"),
        (signed_message(python_entity()).replace(b"\r\n--sig8Xq\r\nContent-Type: application/pgp", b"x"), "two"),
        (signed_message(python_entity().replace(ENCODED[:8], ENCODED[:7] + b"!")), "base64 is damaged"),
        (signed_message(python_entity()).replace(b"\r\n\r\n--sig8Xq--", b"\r\n--sig8Xq\r\n\r\nx\r\n--sig8Xq--"), "two"),
    ],
)
def test_a_signed_message_the_gateway_cannot_check_end_to_end_is_refused(message: bytes, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        read_signed(message, "sig8Xq")


def test_base64_in_lines_of_uneven_length_is_refused() -> None:
    entity = python_entity()
    body_at = entity.index(b"\r\n\r\n", entity.index(b"filename=")) + 4
    uneven = entity[:body_at] + entity[body_at : body_at + 10] + b"\r\n" + entity[body_at + 10 :]
    with pytest.raises(ValueError, match="lines of one length"):
        read_signed(signed_message(uneven), "sig8Xq")
