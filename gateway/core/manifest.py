"""The package manifest: what a recipient needs to check what they were sent (SPEC: Packages)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few KB; a larger one was not made by the gateway
_CRC24_INIT, _CRC24_POLY = 0xB704CE, 0x1864CFB


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """The manifest's bytes: sorted keys, UTF-8, a final newline (what the gateway signs)."""
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False).encode() + b"\n"


def _crc24(data: bytes) -> int:
    crc = _CRC24_INIT
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= _CRC24_POLY
    return crc & 0xFFFFFF


def _armor(kind: str, data: bytes, newline: str) -> str:
    """ASCII armor (RFC 4880 6.2): `-----BEGIN PGP {kind}-----`, base64 in 64-column lines, the CRC-24."""
    body = base64.b64encode(data).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    checksum = base64.b64encode(_crc24(data).to_bytes(3, "big")).decode("ascii")
    return newline.join([f"-----BEGIN PGP {kind}-----", "", *lines, f"={checksum}", f"-----END PGP {kind}-----", ""])


def armor_signature(signature: bytes) -> str:
    """The armored form of a binary OpenPGP signature; an armored one is returned as is."""
    if signature.lstrip().startswith(b"-----BEGIN PGP SIGNATURE-----"):
        return signature.decode("ascii")
    return _armor("SIGNATURE", signature, "\n")


def armor_message(message: bytes) -> bytes:
    """The armored form, CRLF lines, of a binary OpenPGP message: what PGP/MIME's second part carries."""
    return _armor("MESSAGE", message, "\r\n").encode("ascii")


_BEGIN, _END = b"-----BEGIN PGP SIGNATURE-----", b"-----END PGP SIGNATURE-----"


def binary_signature(raw: bytes) -> bytes:
    """The binary OpenPGP signature in a .sig or .asc file: what gpg checks and the manifest carries.

    A binary signature is returned as it is. From an armored one only the armor block counts: text
    around it (a note, an e-mail footer, bytes that are not ASCII) is dropped, so what travels is a
    clean signature that plain `gpg --verify` reads. Raises ValueError naming what is wrong.
    """
    if raw[:1] and raw[0] & 0x80:
        return raw
    if raw.count(_BEGIN) != 1:
        found = "no" if _BEGIN not in raw else "more than one"
        raise ValueError(f"{found} armored signature block ({_BEGIN.decode()})")
    block = raw.split(_BEGIN, 1)[1]
    if _END not in block:
        raise ValueError(f"the armored signature has no {_END.decode()} line: it was cut short")
    lines = [line.strip() for line in block.split(_END, 1)[0].splitlines()][1:]  # [0]: the rest of BEGIN's line
    body = lines[lines.index(b"") + 1 :] if b"" in lines else lines  # armor headers end at a blank line
    checksum = [line for line in body if line.startswith(b"=")]
    data = b"".join(line for line in body if line and not line.startswith(b"="))
    try:
        signature = base64.b64decode(data, validate=True)
        expected = base64.b64decode(checksum[0][1:], validate=True) if checksum else None
    except ValueError:
        raise ValueError("the armored signature is not valid base64") from None
    if not signature:
        raise ValueError("the armored signature block is empty")
    if expected is not None and expected != _crc24(signature).to_bytes(3, "big"):
        raise ValueError("the armored signature's checksum does not match: it was damaged")
    return signature
