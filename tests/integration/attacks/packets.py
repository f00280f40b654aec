"""Take a signed OpenPGP message apart the way a hostile recipient would: lift its signature packet
out as a detached signature over the literal data (RFC 4880 5.2, 5.6, 5.9)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

SIGNATURE, COMPRESSED, LITERAL = 2, 8, 11


def _length(data: bytes, offset: int) -> tuple[int, int, bool]:
    """A new-format body length at `offset`: (length, offset after it, whether it is a partial length)."""
    first = data[offset]
    if first < 192:
        return first, offset + 1, False
    if first < 224:
        return ((first - 192) << 8) + data[offset + 1] + 192, offset + 2, False
    if first == 255:
        return int.from_bytes(data[offset + 1 : offset + 5], "big"), offset + 5, False
    return 1 << (first & 0x1F), offset + 1, True


def packets(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """Yield (tag, whole packet, body) for each packet, old or new format, partial lengths joined."""
    offset = 0
    while offset < len(data):
        start, octet = offset, data[offset]
        if not octet & 0x80:
            raise ValueError(f"not an OpenPGP packet at offset {offset}")
        if octet & 0x40:
            tag, body, partial = octet & 0x3F, b"", True
            offset += 1
            while partial:
                length, offset, partial = _length(data, offset)
                body += data[offset : offset + length]
                offset += length
            yield tag, data[start:offset], body
            continue
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
