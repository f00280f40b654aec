"""OpenPGP signatures made through the gpg-agent of a GnuPG home: one socket, not one gpg per signature.

Every package the gateway delivers carries a signed manifest per recipient agency, and the audit
log is signed at checkpoints: small documents the gateway itself composed. Starting gpg for each
costs ~11 ms and ~9 ms of CPU, which in a burst of small files was half of all the work. gpg itself
hands the private-key operation to its agent (gpg-agent, over the Assuan protocol on the home's
socket): the gateway does the same, and builds the signature packet around it. The key never leaves
the agent, exactly as with gpg.

What is built is what `gpg --detach-sign --digest-algo SHA256 --sig-notation N=V` makes (RFC 4880
5.2.3): a v4 binary-document signature (class 0x00) with the hashed subpackets issuer fingerprint
(33), creation time (2) and the notations (20, human-readable, not critical), and the issuer key id
(16) unhashed, in gpg's order and with gpg's packet header. Like gpg, the signature is verified
before it is returned (a fault in the signing code or the machine must never let a bad signature
out): with the public key the agent holds, using the `cryptography` package.

Only primary keys that sign themselves (the gateway keys `keys generate` makes, ed25519 or RSA) go
this way; anything else (a signing subkey, another algorithm, an agent that is not running or asks
for a passphrase) is `AgentUnavailable`, and the caller uses gpg.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass

EDDSA, RSA = 22, 1  # RFC 4880 9.1 public-key algorithm numbers (22: EdDSA, RFC 4880bis)
SHA256 = 8  # RFC 4880 9.4
BINARY_DOCUMENT = 0x00
_CREATED, _ISSUER, _NOTATION, _ISSUER_FINGERPRINT = 2, 16, 20, 33
_HUMAN_READABLE = b"\x80\0\0\0"
TIMEOUT_SECONDS = 30.0
MAX_LINE = 1 << 16


class AgentUnavailable(Exception):
    """The agent cannot make this signature (not running, refused, or a key it does not serve this way)."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A primary key that signs for itself, as the agent knows it."""

    fingerprint: bytes  # 20 bytes, v4
    keygrip: str  # 40 hex digits: the agent's name for the secret key
    algorithm: int  # EDDSA or RSA
    expires: float | None  # epoch seconds; a key past it is gpg's to refuse

    @property
    def key_id(self) -> bytes:
        return self.fingerprint[-8:]


class Agent:
    """One connection to a gpg-agent's socket, opened at the first signature and kept."""

    def __init__(self, socket_path: str) -> None:
        self._path = socket_path
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._public: dict[str, object] = {}  # keygrip -> the cryptography public key

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self._buffer = b""

    def sign(self, data: bytes, key: SigningKey, notations: Mapping[str, str], *, now: float | None = None) -> bytes:
        """The binary detached signature by `key` over `data` with these signed notations.

        Raises AgentUnavailable when the agent cannot make it (the caller then runs gpg).
        """
        created = int(time.time() if now is None else now)
        if key.expires is not None and created >= key.expires:
            raise AgentUnavailable("the key has expired")
        hashed = _subpacket(_ISSUER_FINGERPRINT, b"\x04" + key.fingerprint)  # gpg's order
        hashed += _subpacket(_CREATED, struct.pack(">I", created))
        for name, value in notations.items():
            raw_name, raw_value = name.encode("ascii"), value.encode("ascii")
            body = _HUMAN_READABLE + struct.pack(">HH", len(raw_name), len(raw_value)) + raw_name + raw_value
            hashed += _subpacket(_NOTATION, body)
        prefix = bytes([4, BINARY_DOCUMENT, key.algorithm, SHA256]) + struct.pack(">H", len(hashed)) + hashed
        digest = hashlib.sha256(data + prefix + b"\x04\xff" + struct.pack(">I", len(prefix))).digest()
        values = self._pksign(key, digest)
        self._check(key, digest, values)
        unhashed = _subpacket(_ISSUER, key.key_id)
        body = prefix + struct.pack(">H", len(unhashed)) + unhashed + digest[:2] + b"".join(map(_mpi, values))
        if len(body) < 256:  # old-format packet header, tag 2, as gpg writes it (RFC 4880 4.2.1)
            return b"\x88" + bytes([len(body)]) + body
        return b"\x89" + struct.pack(">H", len(body)) + body

    # ------------------------------------------------------------------------------- the agent

    def _pksign(self, key: SigningKey, digest: bytes) -> list[bytes]:
        """The signature values (r, s for EdDSA; s for RSA) the agent makes over `digest`."""
        self._command(f"SIGKEY {key.keygrip}")
        self._command(f"SETHASH {SHA256} {digest.hex().upper()}")
        sexp = _parse_sexp(self._command("PKSIGN"))
        if not isinstance(sexp, list) or sexp[:1] != [b"sig-val"] or len(sexp) != 2 or not isinstance(sexp[1], list):
            raise AgentUnavailable("the agent's answer is not a signature")
        scheme, *parts = sexp[1]
        named = {p[0]: p[1] for p in parts if isinstance(p, list) and len(p) == 2 and isinstance(p[1], bytes)}
        if key.algorithm == EDDSA and scheme == b"eddsa" and {b"r", b"s"} <= named.keys():
            return [named[b"r"], named[b"s"]]
        if key.algorithm == RSA and scheme == b"rsa" and b"s" in named:
            return [named[b"s"]]
        raise AgentUnavailable(f"the agent signed with {scheme!r}")

    def _check(self, key: SigningKey, digest: bytes, values: list[bytes]) -> None:
        """Verify the agent's signature with its public key, as gpg does before it writes one."""
        from cryptography.exceptions import InvalidSignature  # noqa: PLC0415 (only signing needs it)
        from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils  # noqa: PLC0415

        public = self._public.get(key.keygrip)
        if public is None:
            public = self._public[key.keygrip] = self._read_key(key)
        try:
            if isinstance(public, ed25519.Ed25519PublicKey):
                r, s = (v.rjust(32, b"\0") for v in values)
                public.verify(r + s, digest)  # legacy EdDSA in OpenPGP signs the digest itself
            elif isinstance(public, rsa.RSAPublicKey):
                public.verify(values[0], digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
            else:
                raise AgentUnavailable("no public key to check the signature with")
        except (InvalidSignature, ValueError):
            self.close()
            raise AgentUnavailable("the agent's signature does not verify") from None

    def _read_key(self, key: SigningKey) -> object:
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa  # noqa: PLC0415

        sexp = _parse_sexp(self._command(f"READKEY {key.keygrip}"))
        if not isinstance(sexp, list) or sexp[:1] != [b"public-key"] or len(sexp) != 2 or not isinstance(sexp[1], list):
            raise AgentUnavailable("the agent holds no public key for the keygrip")
        scheme, *parts = sexp[1]
        named = {p[0]: p[1] for p in parts if isinstance(p, list) and len(p) == 2 and isinstance(p[1], bytes)}
        try:
            if key.algorithm == EDDSA and scheme == b"ecc" and named.get(b"curve") == b"Ed25519" and b"q" in named:
                point = named[b"q"]
                return ed25519.Ed25519PublicKey.from_public_bytes(point[1:] if len(point) == 33 else point)
            if key.algorithm == RSA and scheme == b"rsa" and {b"n", b"e"} <= named.keys():
                numbers = rsa.RSAPublicNumbers(int.from_bytes(named[b"e"]), int.from_bytes(named[b"n"]))
                return numbers.public_key()
        except ValueError:
            pass
        raise AgentUnavailable(f"the agent's key is {scheme!r}, not one this signer serves")

    def _command(self, line: str) -> bytes:
        """Send one Assuan command; return its data (D lines, unescaped), or raise AgentUnavailable."""
        try:
            sock = self._connect()
            sock.sendall(line.encode("ascii") + b"\n")
            data = bytearray()
            while True:
                reply = self._line()
                if reply.startswith(b"D "):
                    data += _unescape(reply[2:])
                elif reply == b"OK" or reply.startswith(b"OK "):
                    return bytes(data)
                elif reply.startswith(b"ERR"):
                    raise AgentUnavailable(reply.decode("ascii", "replace"))
                elif reply.startswith(b"INQUIRE"):  # a passphrase or a confirmation: not for a daemon
                    sock.sendall(b"CAN\n")
                elif not (reply.startswith(b"S ") or reply.startswith(b"#")):
                    raise AgentUnavailable("the agent's answer is not Assuan")
        except OSError as exc:
            self.close()
            raise AgentUnavailable(str(exc)) from None
        except AgentUnavailable:
            self.close()  # a fresh connection (fresh SIGKEY state) for the next signature
            raise

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(TIMEOUT_SECONDS)
            try:
                sock.connect(self._path)
            except OSError:
                sock.close()
                raise
            self._sock, self._buffer = sock, b""
            greeting = self._line()
            if not greeting.startswith(b"OK"):
                raise AgentUnavailable("the socket does not answer as a gpg-agent")
            # never a pinentry: the gateway's keys are unprotected (their folder is the guard)
            self._command("OPTION pinentry-mode=error")
        return self._sock

    def _line(self) -> bytes:
        assert self._sock is not None  # noqa: S101 (connected by _connect)
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise OSError("the agent closed the connection")
            self._buffer += chunk
            if len(self._buffer) > MAX_LINE and b"\n" not in self._buffer:
                raise OSError("the agent's line is too long")
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line


# ----------------------------------------------------------------------------------------- formats


def _subpacket(kind: int, body: bytes) -> bytes:
    """One signature subpacket (RFC 4880 5.2.3.1); ours are all shorter than 192 bytes."""
    if len(body) + 1 >= 192:
        raise ValueError("a signature subpacket of 191 bytes or more")
    return bytes([len(body) + 1, kind]) + body


def _mpi(value: bytes) -> bytes:
    """An OpenPGP multiprecision integer (RFC 4880 3.2): bit count, then the big-endian bytes."""
    stripped = value.lstrip(b"\0")
    return struct.pack(">H", int.from_bytes(stripped).bit_length()) + stripped


def _unescape(data: bytes) -> bytes:
    """Assuan's percent-escaping of D lines (%25, %0A, %0D)."""
    if b"%" not in data:
        return data
    out, i = bytearray(), 0
    while i < len(data):
        if data[i] == 0x25 and i + 2 < len(data):
            try:
                out.append(int(data[i + 1 : i + 3], 16))
            except ValueError:
                raise AgentUnavailable("the agent's answer is not Assuan") from None
            i += 3
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


Sexp = bytes | list["Sexp"]


def _parse_sexp(data: bytes) -> Sexp:
    """A canonical S-expression (`(7:sig-val(5:eddsa(1:r32:…)…))`) as nested lists of bytes."""
    stack: list[list[Sexp]] = [[]]
    i = 0
    try:
        while i < len(data):
            char = data[i]
            if char == 0x28:  # (
                stack.append([])
                i += 1
            elif char == 0x29:  # )
                done = stack.pop()
                stack[-1].append(done)
                i += 1
            else:
                colon = data.index(b":", i)
                length = int(data[i:colon])
                atom = data[colon + 1 : colon + 1 + length]
                if len(atom) != length:
                    raise ValueError("short atom")
                stack[-1].append(atom)
                i = colon + 1 + length
    except (ValueError, IndexError):
        raise AgentUnavailable("the agent's answer is not an S-expression") from None
    if len(stack) != 1 or len(stack[0]) != 1:
        raise AgentUnavailable("the agent's answer is not one S-expression")
    return stack[0][0]
