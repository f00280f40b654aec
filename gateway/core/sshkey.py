"""OpenSSH public keys for the officer register: parse one `type base64 [comment]` line, refuse weak ones.

Parsed here in pure Python (the OpenSSH wire format is a base64 blob of length-prefixed strings, RFC 4253
6.6 and PROTOCOL.u2f), not with `cryptography`: a public key needs no cipher, and that package keeps its
one owner (adapters/vault). The blob's fields are checked against its type; the key itself is never used
here (sshd verifies signatures), so an ECDSA point is checked for its form, not its curve membership.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from gateway.core.errors import InputFileError, PolicyError

MAX_SSH_KEY_BYTES = 8 * 1024  # an RSA 16384-bit .pub is under 3 KB; anything bigger is not one key line
MIN_RSA_BITS = 3072
FIX = "make one with `ssh-keygen -t ed25519` and give its .pub file"

# type -> bits for the fixed-size ones; sk- (security key) types carry the FIDO application too
_ED25519 = "ssh-ed25519"
_SK_ED25519 = "sk-ssh-ed25519@openssh.com"
_SK_ECDSA = "sk-ecdsa-sha2-nistp256@openssh.com"
_ECDSA = {"ecdsa-sha2-nistp256": 256, "ecdsa-sha2-nistp384": 384, "ecdsa-sha2-nistp521": 521}
_RSA = "ssh-rsa"
_DSA = "ssh-dss"
ALLOWED = (_ED25519, *_ECDSA, _RSA, _SK_ED25519, _SK_ECDSA)
# every type OpenSSH knows, so an options prefix (`command="..." ssh-ed25519 ...`) is told from junk
_KNOWN = {*ALLOWED, _DSA} | {t.replace("@openssh.com", "") + "-cert-v01@openssh.com" for t in (*ALLOWED, _DSA)}
_PRIVATE_MARKS = ("PRIVATE KEY-----", "PuTTY-User-Key-File-")


@dataclass(frozen=True, slots=True)
class SshKey:
    """One accepted public key: its type, its wire-format blob and its size in bits."""

    type: str
    blob: bytes
    bits: int

    @property
    def line(self) -> str:
        """The normalised `type base64` line, with no comment and no options."""
        return f"{self.type} {base64.b64encode(self.blob).decode('ascii')}"

    @property
    def fingerprint(self) -> str:
        """`SHA256:...` as `ssh-keygen -lf` prints it: unpadded base64 of the blob's SHA-256."""
        return fingerprint_of(self.blob)


def fingerprint_of(blob: bytes) -> str:
    """The OpenSSH SHA256 fingerprint of a key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def parse_ssh_key(data: bytes, source: str) -> SshKey:
    """The one public key in `data` (the contents of `source`, named in every refusal).

    Raises InputFileError for what is not one well-formed public key line (a private key, two keys,
    an options prefix, a type the blob contradicts) and PolicyError for a weak or disallowed type.
    """
    where = repr(source)
    if len(data) > MAX_SSH_KEY_BYTES:
        raise InputFileError(
            f"{where} is {len(data):,} bytes: an SSH public key file is one line of a few KB; give the .pub file"
        )
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise InputFileError(f"{where} is not text: give the officer's SSH public key (.pub file)") from None
    if any(mark in text for mark in _PRIVATE_MARKS):
        raise InputFileError(f"{where} is a private key: give the .pub (public key) file, and keep this one secret")
    if "BEGIN SSH2 PUBLIC KEY" in text:
        raise InputFileError(
            f"{where} is in the SSH2 (RFC 4716, PuTTYgen) format: convert it with `ssh-keygen -i -f FILE > key.pub`"
        )
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) != 1:
        raise InputFileError(f"{where} holds {len(lines)} key lines: give exactly one officer's SSH public key")
    return _parse_line(lines[0], where)


def _parse_line(line: str, where: str) -> SshKey:
    fields = line.split()
    kind = fields[0]
    if kind not in _KNOWN:
        if any(field in _KNOWN for field in fields[1:]):
            raise InputFileError(
                f"{where} starts with options ({kind[:40]!r}...): the register holds a bare key and the gateway "
                "adds its own restrictions; remove everything before the key type"
            )
        raise InputFileError(f"{where} is not an SSH public key line (`type base64 [comment]`): {FIX}")
    if kind.endswith("-cert-v01@openssh.com"):
        raise PolicyError(f"{where} is an SSH certificate ({kind}), not a key: give the officer's plain .pub key")
    if len(fields) < 2:
        raise InputFileError(f"{where} has a key type but no key after it: give the whole .pub line")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (binascii.Error, ValueError):
        raise InputFileError(
            f"{where}: the key after {kind!r} is not valid base64; give the .pub file unedited"
        ) from None
    reader = _Reader(blob, where)
    inner = reader.string()
    if inner != kind.encode("ascii"):
        raise InputFileError(
            f"{where} says {kind!r} but the key inside is {inner[:40].decode('ascii', 'replace')!r}: "
            "the line was edited or damaged; give the .pub file unedited"
        )
    if kind == _DSA:
        raise PolicyError(
            f"{where} is a DSA key (ssh-dss): DSA keys are refused (1024-bit, withdrawn by OpenSSH); {FIX}"
        )
    bits = _fields(kind, reader, where)
    reader.end()
    return SshKey(kind, blob, bits)


def _fields(kind: str, reader: _Reader, where: str) -> int:
    """Read the type's fields from the blob; return the key's size in bits."""
    if kind == _RSA:
        exponent, modulus = reader.mpint(), reader.mpint()
        if exponent < 3 or exponent % 2 == 0 or modulus <= 0:
            raise InputFileError(f"{where} is not a valid RSA key: give the .pub file unedited")
        bits = modulus.bit_length()
        if bits < MIN_RSA_BITS:
            raise PolicyError(
                f"{where} is an RSA key of {bits} bits: RSA keys need at least {MIN_RSA_BITS} bits; "
                f"{FIX} (or `ssh-keygen -t rsa -b 4096`)"
            )
        return bits
    if kind in (_ED25519, _SK_ED25519):
        if len(reader.string()) != 32:
            raise InputFileError(f"{where}: an Ed25519 key is 32 bytes; give the .pub file unedited")
        bits = 256
    else:
        bits = _ECDSA.get(kind, 256)
        curve = reader.string()
        if curve != f"nistp{bits}".encode("ascii"):
            raise InputFileError(f"{where} says {kind!r} but its curve is another: give the .pub file unedited")
        point = reader.string()
        if len(point) != 1 + 2 * ((bits + 7) // 8) or point[0] != 4:
            raise InputFileError(f"{where}: the ECDSA point is malformed; give the .pub file unedited")
    if kind in (_SK_ED25519, _SK_ECDSA) and not reader.string().startswith(b"ssh:"):
        raise InputFileError(f"{where}: a security key's application must start with 'ssh:'; give the .pub file")
    return bits


class _Reader:
    """Length-prefixed strings read off a key blob; any shortfall or leftover is a malformed key."""

    def __init__(self, blob: bytes, where: str) -> None:
        self.blob, self.at, self.where = blob, 0, where

    def string(self) -> bytes:
        if self.at + 4 > len(self.blob):
            raise self._broken()
        size = int.from_bytes(self.blob[self.at : self.at + 4], "big")
        start, self.at = self.at + 4, self.at + 4 + size
        if self.at > len(self.blob):
            raise self._broken()
        return self.blob[start : self.at]

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big", signed=True)

    def end(self) -> None:
        if self.at != len(self.blob):
            raise self._broken()

    def _broken(self) -> InputFileError:
        return InputFileError(f"{self.where}: the key is truncated or has extra bytes; give the .pub file unedited")
