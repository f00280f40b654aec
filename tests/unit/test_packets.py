"""Dropping a recipient from an OpenPGP message without its plaintext: the packet framing."""

from __future__ import annotations

import io

import pytest

from gateway.adapters.gpg import strip_recipients
from gateway.core.errors import CryptoError

ALICE, BOB = "1111111111111111", "2222222222222222"


def pkesk(key_id: str, *, old_format: bool = False) -> bytes:
    body = bytes([3]) + bytes.fromhex(key_id) + bytes([18]) + b"\x55" * 40  # v3, key id, ECDH, session key
    if old_format:
        return bytes([0x80 | (1 << 2) | 0]) + bytes([len(body)]) + body  # tag 1, one-octet length
    return bytes([0xC0 | 1, len(body)]) + body


SEIPD = bytes([0xC0 | 18, 0xE0]) + b"\x01" + b"\xaa" * 0  # a partial-length data packet: copied, never parsed
DATA = SEIPD + b"\x99" * 300


@pytest.mark.parametrize("old_format", [False, True])
def test_only_the_named_recipient_is_dropped_and_the_rest_is_copied_byte_for_byte(old_format: bool) -> None:
    message = pkesk(ALICE, old_format=old_format) + pkesk(BOB, old_format=old_format) + DATA
    out = io.BytesIO()
    assert strip_recipients(io.BytesIO(message), out, {ALICE.lower()}) == 1
    assert out.getvalue() == pkesk(BOB, old_format=old_format) + DATA


def test_a_marker_packet_and_unrelated_recipients_are_kept() -> None:
    marker = bytes([0xC0 | 10, 3]) + b"PGP"
    message = marker + pkesk(BOB) + DATA
    out = io.BytesIO()
    assert strip_recipients(io.BytesIO(message), out, {ALICE}) == 0
    assert out.getvalue() == message


def test_dropping_the_last_recipient_is_refused() -> None:
    with pytest.raises(CryptoError, match="no recipient would be left"):
        strip_recipients(io.BytesIO(pkesk(ALICE) + DATA), io.BytesIO(), {ALICE})


@pytest.mark.parametrize("junk", [b"", b"plain text, not OpenPGP", pkesk(ALICE)[:5]])
def test_what_is_not_a_whole_binary_message_is_refused(junk: bytes) -> None:
    with pytest.raises(CryptoError):
        strip_recipients(io.BytesIO(junk), io.BytesIO(), {BOB})
