"""The package manifest: what a recipient needs to check what they were sent (SPEC: Packages)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

MANIFEST_VERSION = 1
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


def armor_signature(signature: bytes) -> str:
    """ASCII armor (RFC 4880 6.2) for a binary OpenPGP signature; an armored one is returned as is."""
    if signature.lstrip().startswith(b"-----BEGIN PGP SIGNATURE-----"):
        return signature.decode("ascii")
    body = base64.b64encode(signature).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    checksum = base64.b64encode(_crc24(signature).to_bytes(3, "big")).decode("ascii")
    return "\n".join(["-----BEGIN PGP SIGNATURE-----", "", *lines, f"={checksum}", "-----END PGP SIGNATURE-----", ""])
