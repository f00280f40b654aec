"""Take a signed OpenPGP message apart the way a hostile recipient would: lift its signature packet
out as a detached signature over the literal data (RFC 4880 5.2, 5.6, 5.9)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

SIGNATURE, COMPRESSED, LITERAL = 2, 8, 11


def packets(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """Yield (tag, whole packet, body) for definite-length packets, old or new format."""
    offset = 0
    while offset < len(data):
        start, octet = offset, data[offset]
        if not octet & 0x80:
            raise ValueError(f"not an OpenPGP packet at offset {offset}")
        if octet & 0x40:
            tag, first = octet & 0x3F, data[offset + 1]
            if first < 192:
                length, offset = first, offset + 2
            elif first < 224:
                length, offset = ((first - 192) << 8) + data[offset + 2] + 192, offset + 3
            elif first == 255:
                length, offset = int.from_bytes(data[offset + 2 : offset + 6], "big"), offset + 6
            else:
                raise ValueError("partial body lengths are not handled here")
        else:
            tag, kind = (octet >> 2) & 0x0F, octet & 0x03
            if kind == 3:
                length, offset = len(data) - offset - 1, offset + 1
            else:
                size = (1, 2, 4)[kind]
                length, offset = int.from_bytes(data[offset + 1 : offset + 1 + size], "big"), offset + 1 + size
        yield tag, data[start : offset + length], data[offset : offset + length]
        offset += length


def lift_signature(inner: bytes) -> tuple[bytes, bytes]:
    """From a decrypted (`gpg --decrypt --unwrap`) signed message: (literal content, detached signature)."""
    content = signature = None
    for tag, packet, body in packets(inner):
        if tag == COMPRESSED:
            algorithm, rest = body[0], body[1:]
            plain = zlib.decompress(rest, -15) if algorithm == 1 else zlib.decompress(rest)
            return lift_signature(plain)
        if tag == LITERAL:
            name_length = body[1]
            content = body[2 + name_length + 4 :]
        elif tag == SIGNATURE:
            signature = packet
    if content is None or signature is None:
        raise ValueError("no literal data and signature in this message")
    return content, signature
