"""OpenPGP through GnuPG: the only module that runs python-gnupg or the gpg binary.

Every decision is taken from gpg's machine-readable status lines (`[GNUPG:] VALIDSIG …`), never from
its English messages. Data never reaches gpg by name: signing, verifying, encrypting and decrypting
run gpg on pipes (`_Pipes`), the data on stdin from the caller's one open file, the result on stdout
into the caller's file, so what gpg checks is exactly what the caller hashed and seals; python-gnupg
is used for keys only.

Threat-model notes:
- Status lines come on a pipe of their own on the data path; python-gnupg (keys only) reads them
  from stderr, the stream gpg also logs to, where a log line carrying attacker text (a file name, a
  user id) could pass for a status line (SigSpoof, CVE-2018-12020): gpg's log goes to /dev/null.
- Every gateway signature names its purpose in a signed notation (`Purpose`), and every verifier
  asks for one, so a signature lifted out of a package never passes for a manifest's.
- gpg and its agent see only ENVIRONMENT; the agents a process started are stopped by stop_agents().
- Trust is membership: a public key is in a keyring only because an admin registered it, so gpg's
  web of trust is not consulted; revocation and expiry still are.
- Nothing here touches the network (`--disable-dirmngr`, local key location only) or asks for a
  passphrase (`--pinentry-mode error`: gateway and demo keys are unprotected; the folder is the guard).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import re
import shutil
import socket
import stat
import subprocess
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from gateway.adapters.agent import EDDSA, RSA, Agent, AgentUnavailable, SigningKey
from gateway.adapters.fsio import private_dirs
from gateway.core.errors import CryptoError

GPG_BINARY = "/usr/bin/gpg"
GPGCONF_BINARY = "/usr/bin/gpgconf"
MAX_SIGNATURE_BYTES = 64 * 1024  # a detached signature is a few hundred bytes
MAX_KEY_BYTES = 1024 * 1024  # a public key with many certifications stays far below this
ALGORITHMS = ("ed25519", "rsa3072")
DIGEST = "SHA256"  # for every signature the gateway makes; read by every OpenPGP implementation
CHUNK = 1 << 20
# Signed notations (RFC 4880 5.2.3.16), documented for partners who sign with plain gpg:
PURPOSE_NOTATION = "purpose@iom-gateway"  # what a gateway signature was made for
MARKING_NOTATION = "marking@iom-gateway"  # the marking a sender intends, e.g. RESTRICTED
PERIOD_NOTATION = "period@iom-gateway"  # the month the data is for, YYYY-MM
CORRECTS_NOTATION = "corrects@iom-gateway"  # the package this file corrects (its name or submission id)
REQUEST_NOTATION = "request@iom-gateway"  # the information request this file answers (its id)
# gpg and the gpg-agent it starts see only this environment: never the vault passphrase or
# anything else the gateway was started with.
ENVIRONMENT = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
_SIDE_INPUT = "\0side-input"  # in a gpg argv: replaced by the special file name of the side pipe


class Purpose(enum.Enum):
    """What a gateway signature vouches for; signed into it, checked by every verifier."""

    MANIFEST = "manifest"
    AUDIT = "audit"  # checkpoints, the genesis, the purge anchor
    PACKAGE = "package"
    QUARANTINE = "quarantine"
    REQUEST = "request"  # an information request's text, kept encrypted under state/requests/


_OPTIONS = (
    "--log-file",
    "/dev/null",
    "--disable-dirmngr",
    "--auto-key-locate",
    "local",
    "--no-auto-key-retrieve",
    "--pinentry-mode",
    "error",
)
_HEX40 = re.compile(r"[0-9A-F]{40}")
_EMAIL = re.compile(r"[^@\s<>()]+@[^@\s<>()]+\.[^@\s<>()]+")
_PUBKEY_ALGOS = {"1": "rsa", "2": "rsa", "3": "rsa", "16": "elgamal", "17": "dsa"}
_INVALID_KEY_REASONS = {
    "1": "not in this keyring",
    "4": "revoked",
    "5": "expired",
    "9": "unusable here: its secret key is not in this keyring",
    "13": "disabled",
}

Status = tuple[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """An OpenPGP v4 fingerprint: 40 upper-case hex digits or it is never built."""

    value: str

    def __post_init__(self) -> None:
        if not _HEX40.fullmatch(self.value):
            raise CryptoError(
                f"{self.value[:80]!r} is not an OpenPGP fingerprint: expected 40 hexadecimal digits"
                " (spaces allowed), as `gpg --fingerprint` prints them"
            )

    @classmethod
    def parse(cls, text: str) -> Fingerprint:
        """Read a fingerprint written with spaces or in lower case; raise CryptoError naming the form."""
        compact = "".join(text.split()).upper()
        if not _HEX40.fullmatch(compact):
            raise CryptoError(
                f"{text[:80]!r} is not an OpenPGP fingerprint: expected 40 hexadecimal digits"
                " (spaces allowed), as `gpg --fingerprint` prints them"
            )
        return cls(compact)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What a keyring knows about one primary key. `can_sign`/`can_encrypt` mean usable now."""

    fingerprint: Fingerprint
    user_ids: tuple[str, ...]
    algorithm: str
    created: datetime
    expires: datetime | None
    revoked: bool
    expired: bool
    has_secret: bool
    can_sign: bool
    can_encrypt: bool


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """The verdict on one signature; `problem` says why it is not valid, for a person to read.

    `valid` means a good signature by a key in this keyring that is neither revoked nor expired now
    (gpg's EXPKEYSIG/REVKEYSIG are judged at verification time: fail closed). `fingerprint` is the
    primary key's, also for a signing subkey; it is None when gpg could not identify the key.
    """

    valid: bool
    fingerprint: Fingerprint | None
    signed_at: datetime | None
    problem: str | None
    key_expired: bool = False  # good signature by a key that has expired since (gpg's EXPKEYSIG)
    hash_algorithm: str | None = None  # RFC 4880 9.4 number, as gpg reports it ("8" is SHA-256)
    signature_class: str | None = None  # "00" binary document, "01" canonical text
    notations: tuple[tuple[str, str], ...] = ()  # the signed notations, in order
    intact: bool = False  # the bytes are exactly what `fingerprint` signed (its key may be revoked or expired since)
    unknown_key: str | None = None  # signed by a key not in the keyring: its fingerprint or key id, as gpg gives it

    def notation(self, name: str) -> str | None:
        """The value of the signed notation `name`; raise CryptoError if it is given twice."""
        values = [value for key, value in self.notations if key == name]
        if len(values) > 1:
            raise CryptoError(f"the signature carries the notation {name} {len(values)} times: sign with it once")
        return values[0] if values else None


@dataclass(frozen=True, slots=True)
class Decryption:
    """What decrypting a message found: the check of its signature, and the primary key (of this
    keyring) that opened it, as gpg's DECRYPTION_KEY names it (None if gpg did not say)."""

    signature: SignatureCheck
    key: Fingerprint | None


class Keyring:
    """One GnuPG home (created 0700 if missing) and the one python-gnupg object that drives it."""

    def __init__(self, home: Path) -> None:
        """Open or create the keyring folder `home`.

        Raises CryptoError if `home` is not a folder or others may read it, or gpg cannot run.
        """
        import gnupg  # noqa: PLC0415 (here, not at the top: `validate` imports this module and never runs gpg)

        self._home = _private_folder(home)
        try:
            self._gpg: Any = gnupg.GPG(
                gpgbinary=GPG_BINARY, gnupghome=str(self._home), options=list(_OPTIONS), env=dict(ENVIRONMENT)
            )
        except (OSError, ValueError) as exc:
            raise CryptoError(f"gpg cannot run on keyring {str(self._home)!r} ({exc}): install GnuPG 2.2+") from None
        if self._home not in _AGENTS:  # the first Keyring of a home in this process tells whose agent it is
            _AGENTS[self._home] = not _agent_running(self._home)
        # what gpg listed or exported, kept while the keyring's files are unchanged (see `_cached`)
        self._cache: dict[tuple[object, ...], object] = {}
        self._cache_state: tuple[int, ...] = ()
        self._agent: Agent | None = None
        self._agent_lock = threading.Lock()
        self._cache_lock = threading.RLock()

    def stop_agent(self) -> None:
        """Stop the gpg-agent serving this home, before the home is deleted (a stale agent would
        answer for a new home made at the same path)."""
        _kill_agent(self._home)

    @property
    def home(self) -> Path:
        """The GnuPG home folder."""
        return self._home

    def generate(
        self,
        name: str,
        email: str,
        *,
        algorithm: str = "ed25519",
        expire_days: int | None = 730,
        comment: str = "",
    ) -> Fingerprint:
        """Make an unprotected key pair: a signing primary key and an encryption subkey.

        Raises ValueError for an unknown algorithm or a non-positive `expire_days`; CryptoError for a
        name, e-mail or comment gpg would misread, or if gpg fails.
        """
        params = _key_parameters(algorithm, expire_days) + _identity_parameters(name, email, comment)
        text = "".join(f"{key}: {value}\n" for key, value in params) + "%no-protection\n%commit\n"
        # bytes, not str: python-gnupg would encode text as Latin-1 and mangle "Siobhán" in the user id
        result = self._gpg.gen_key(text.encode("utf-8"))
        created = [args for code, args in _statuses(result) if code == "KEY_CREATED" and len(args) >= 2]
        if _returncode(result) != 0 or not created:
            raise CryptoError(f"gpg could not generate a key for {email!r}: check that {str(self._home)!r} is writable")
        return Fingerprint.parse(created[-1][1])

    def import_public(self, armored: bytes) -> tuple[Fingerprint, ...]:
        """Add public keys (or revocation certificates) and return the fingerprints they touched.

        Raises CryptoError if the data holds secret key material, or nothing could be imported.
        """
        if len(armored) > MAX_KEY_BYTES:
            raise CryptoError(f"the key file is larger than {MAX_KEY_BYTES} bytes: export only the officer's key")
        if _has_secret_material(self._gpg.scan_keys_mem(armored)):
            raise CryptoError(
                "the key file contains secret key material: send only the public key (gpg --armor --export FINGERPRINT)"
                " and treat this private key as compromised"
            )
        result = self._gpg.import_keys(armored)
        statuses = _statuses(result)
        touched = [args[1] for code, args in statuses if code == "IMPORT_OK" and len(args) >= 2]
        if _count(statuses, "IMPORT_RES", 8) > 0:
            touched += _revoked_by_import(statuses)
        if _returncode(result) != 0 or not touched:
            raise CryptoError(
                "nothing was imported: the data is not an OpenPGP public key; export it with gpg --armor --export"
            )
        return tuple(Fingerprint.parse(fpr) for fpr in dict.fromkeys(touched))

    def export_public(self, fingerprint: Fingerprint) -> str:
        """The armored public key.

        Raises CryptoError if the keyring has no such key.
        """
        armored = self._cached(("export", fingerprint), lambda: self._gpg.export_keys(str(fingerprint), armor=True))
        if not isinstance(armored, str) or "BEGIN PGP PUBLIC KEY BLOCK" not in armored:
            self._cache.pop(("export", fingerprint), None)
            raise CryptoError(_unknown_key(fingerprint))
        return armored

    def export_public_keys(self, fingerprints: Sequence[Fingerprint]) -> str:
        """Several armored public keys in one block (what `gpg --armor --export A B` writes).

        Raises CryptoError naming the first key the keyring does not hold (gpg would silently skip it).
        """
        if not fingerprints:
            raise ValueError("no key to export")
        for fingerprint in fingerprints:
            self.key(fingerprint)
        armored = self._gpg.export_keys([str(f) for f in fingerprints], armor=True)
        if not isinstance(armored, str) or "BEGIN PGP PUBLIC KEY BLOCK" not in armored:
            raise CryptoError(_unknown_key(fingerprints[0]))
        return armored

    def key(self, fingerprint: Fingerprint) -> KeyInfo:
        """Describe one primary key.

        Raises CryptoError if the keyring has no primary key with this fingerprint.
        """
        for info in self._key_infos([str(fingerprint)]):
            if info.fingerprint == fingerprint:
                return info
        raise CryptoError(_unknown_key(fingerprint))

    def keys(self) -> tuple[KeyInfo, ...]:
        """Describe every primary key in the keyring."""
        return self._key_infos(None)

    # --- data: every byte reaches gpg through a pipe; gpg never opens a file by name -------------

    def sign_detached(
        self, data: Iterable[bytes], signer: Fingerprint, *, notations: Mapping[str, str] | None = None
    ) -> bytes:
        """Return a binary detached signature made by `signer` over the bytes `data` yields (fed on stdin).

        `notations` become signed notations of the signature (`name@domain` = value). Raises CryptoError
        if `signer` has no usable secret key here; ValueError for a malformed notation; whatever
        iterating `data` raises.
        """
        args = ["--detach-sign", "--local-user", str(signer), "--digest-algo", DIGEST, "--output", "-"]
        for name, value in (notations or {}).items():
            args += ["--sig-notation", _notation(name, value)]
        output = bytearray()
        run = self._run(args, stdin=data, stdout=output.extend)
        made = [fields for code, fields in run.statuses if code == "SIG_CREATED" and len(fields) >= 6]
        if run.returncode != 0 or not made or made[-1][0] != "D" or not output:
            raise CryptoError(_signer_problem(run.statuses, signer))
        self._require_own_key(Fingerprint.parse(made[-1][5]), signer)
        return bytes(output)

    def sign_bytes(self, data: bytes, signer: Fingerprint, *, purpose: Purpose) -> bytes:
        """Sign what the gateway itself composed (a manifest, a checkpoint), naming what it is for.

        The purpose is a signed notation, so a signature made for one kind of document is never
        accepted for another (`verify_bytes(..., purpose=...)`). Raises CryptoError as sign_detached.
        """
        notations = {PURPOSE_NOTATION: purpose.value}
        key = self._cached(("signing-key", signer), lambda: self._agent_key(signer))
        if isinstance(key, SigningKey):
            with self._agent_lock:
                if self._agent is None:
                    socket_path = _agent_socket(self._home)
                    self._agent = None if socket_path is None else Agent(socket_path)
                if self._agent is not None:
                    try:
                        return self._agent.sign(data, key, notations)
                    except AgentUnavailable:
                        pass  # not running yet, or refused: gpg starts it, or says why
        return self.sign_detached((data,), signer, notations=notations)

    def _agent_key(self, signer: Fingerprint) -> SigningKey | None:
        """`signer` as the agent can sign with it directly: a primary key that signs for itself and
        has no signing subkey (which gpg would prefer), ed25519 or RSA, usable now. Otherwise None."""
        for raw in self._gpg.list_keys(keys=[str(signer)]):
            if raw.get("fingerprint") != str(signer):
                continue
            capabilities, grip = str(raw.get("cap") or ""), str(raw.get("keygrip") or "")
            algorithm = {"22": EDDSA, "1": RSA}.get(str(raw.get("algo")))
            if algorithm == EDDSA and raw.get("curve") != "ed25519":
                algorithm = None
            subkeys_sign = any("s" in str(sub[1] or "") for sub in raw.get("subkeys", []))
            if "s" not in capabilities or "S" not in capabilities or subkeys_sign or algorithm is None:
                return None
            if not _HEX40.fullmatch(grip):
                return None
            expires = _epoch(raw.get("expires"))
            until = None if expires is None else expires.timestamp()
            return SigningKey(bytes.fromhex(str(signer)), grip, algorithm, until)
        return None

    def _cached(self, key: tuple[object, ...], make: Callable[[], object]) -> object:
        """`make()`, remembered until the keyring's files change (an import, a revocation, a rotation,
        a deleted secret key: each rewrites one of them). One stat per call instead of one gpg."""
        with self._cache_lock:
            state = self._keyring_state()
            if state != self._cache_state:
                self._cache.clear()
                self._cache_state = state
            if key not in self._cache:
                self._cache[key] = make()
            return self._cache[key]

    def _keyring_state(self) -> tuple[int, ...]:
        state: list[int] = []
        for name in ("pubring.kbx", "pubring.gpg", "trustdb.gpg", "private-keys-v1.d"):
            try:
                info = os.stat(self._home / name)
            except FileNotFoundError:
                state += (0, 0, 0, 0)
                continue
            state += (info.st_ino, info.st_mtime_ns, info.st_ctime_ns, info.st_size)
        return tuple(state)

    def verify_detached(self, data: Iterable[bytes], signature: bytes) -> SignatureCheck:
        """Check a detached signature (binary, or armored) over the bytes `data` yields (fed on stdin).

        gpg reads the signature from a pipe and the data from another: nothing is read by name.
        Never raises for a bad, unknown or malformed signature (the verdict is in the result);
        raises whatever iterating `data` raises.
        """
        if len(signature) > MAX_SIGNATURE_BYTES:
            return SignatureCheck(False, None, None, _not_a_signature(f"{len(signature)} bytes is too large"))
        args = ["--enable-special-filenames", "--verify", "--", _SIDE_INPUT, "-"]
        run = self._run(args, stdin=data, side_input=signature)
        return _signature_check(run.statuses, run.returncode, missing=_not_a_signature("no signature found"))

    def verify_bytes(self, data: bytes, signature: bytes, *, purpose: Purpose) -> SignatureCheck:
        """Check a gateway signature over `data`: valid only if it was made for `purpose`."""
        return _for_purpose(self.verify_detached((data,), signature), purpose)

    def encrypt(
        self,
        source: Iterable[bytes],
        target: BinaryIO,
        *,
        recipients: Sequence[Fingerprint],
        signer: Fingerprint,
        literal_name: str,
        purpose: Purpose = Purpose.PACKAGE,
        compress_level: int = 1,
    ) -> None:
        """Encrypt the bytes `source` yields (AES-256, binary OpenPGP) to every recipient, signed by
        `signer` for `purpose`, writing the message to `target` as gpg makes it.

        Memory does not grow with the data. On an error `target` holds a partial message: discard it.
        Raises ValueError for a bad `literal_name` or `compress_level`; CryptoError if there are no
        recipients, a recipient key is unknown, revoked or expired, or the signer has no secret key;
        OSError when writing fails; whatever iterating `source` raises.
        """
        _check_literal_name(literal_name)
        if not 0 <= compress_level <= 9:
            raise ValueError(f"compress_level must be 0-9, not {compress_level}")
        if not recipients:
            raise CryptoError("no recipients for this package: register an active officer key for the agency")
        args = ["--encrypt", "--sign", "--local-user", str(signer), "--cipher-algo", "AES256", "--digest-algo", DIGEST]
        args += ["--compress-level", str(compress_level), "--set-filename", literal_name, "--trust-model", "always"]
        args += ["--sig-notation", _notation(PURPOSE_NOTATION, purpose.value), "--output", "-"]
        for fingerprint in recipients:
            args += ["--recipient", str(fingerprint)]
        run = self._run(args, stdin=source, stdout=target.write)
        made = [fields for code, fields in run.statuses if code == "SIG_CREATED" and len(fields) >= 6]
        if run.returncode != 0 or "END_ENCRYPTION" not in {code for code, _ in run.statuses} or not made:
            _raise_if_out_of_space(self._home)
            raise CryptoError(self._encrypt_problem(run.statuses, signer))
        self._require_own_key(Fingerprint.parse(made[-1][5]), signer)

    def decrypt(
        self,
        source: Iterable[bytes],
        target: BinaryIO,
        *,
        signers: Collection[Fingerprint] | None = None,
        purpose: Purpose = Purpose.PACKAGE,
        name: str = "the package",
    ) -> SignatureCheck:
        """Decrypt the OpenPGP message `source` yields into `target`; return the check of its signature.

        gpg writes plaintext as it goes, and on a tampered message writes the corrupted plaintext
        before it fails: `target` must be private and is to be discarded unless this returns. With
        `signers`, the signature must also be valid, made for `purpose` and by one of those primary
        keys. Raises CryptoError (naming `name`) for a tampered, damaged or unencrypted message, one
        not encrypted to a key here, or (with `signers`) a bad signer; OSError when writing fails.
        """
        return self.open_message(source, target, signers=signers, purpose=purpose, name=name).signature

    def open_message(
        self,
        source: Iterable[bytes],
        target: BinaryIO,
        *,
        signers: Collection[Fingerprint] | None = None,
        purpose: Purpose = Purpose.PACKAGE,
        name: str = "the package",
    ) -> Decryption:
        """Decrypt as `decrypt` does; also say which of this keyring's keys opened the message.

        Without `signers` a signature gpg cannot check (its key is not here) does not fail the
        decryption: the caller vouches for the bytes otherwise (a signed manifest's SHA-256).
        """
        run = self._run(["--decrypt", "--output", "-"], stdin=source, stdout=target.write)
        _require_decrypted(run.statuses, run.returncode, name)
        check = _signature_check(run.statuses, 0, missing="the package is not signed")
        if signers is not None:
            check = _for_purpose(check, purpose)  # a gateway key that expired since still vouches for it
            if check.unknown_key is not None:
                raise CryptoError(
                    f"{name!r} is signed by gateway key {check.unknown_key}, which this GnuPG home lacks"
                    " (the gateway rotated its key?): get the gateway's keys (`iom-gateway keys export"
                    " --gateway` on the gateway), import them with `gpg --import`, and pull again"
                )
            if not ((check.valid or check.key_expired) and check.fingerprint in signers):
                raise CryptoError(
                    f"{name!r} is not signed by a gateway key this keyring accepts"
                    f" ({check.problem or 'signed by another key'}): import the gateway's current public key"
                )
        opened = [args for code, args in run.statuses if code == "DECRYPTION_KEY" and len(args) >= 2]
        return Decryption(check, _fingerprint_or_none(opened[-1][1]) if opened else None)

    def _run(
        self,
        args: Sequence[str],
        *,
        stdin: Iterable[bytes] | None = None,
        stdout: Callable[[bytes], object] | None = None,
        side_input: bytes | None = None,
    ) -> _Run:
        """Run gpg on this home with its status lines on a pipe of their own; see `_Pipes`."""
        return _Pipes(self._home, args, stdin, stdout, side_input).run()

    def delete_secret_key(self, fingerprint: Fingerprint) -> None:
        """Delete the secret half of a key, keeping the public half (it still verifies old signatures).

        Raises CryptoError if gpg refuses.
        """
        result = self._gpg.delete_keys(str(fingerprint), secret=True, expect_passphrase=False)
        if str(result) != "ok":
            raise CryptoError(f"gpg could not delete the secret key {fingerprint} ({result}): check keys/gnupg")

    def key_ids(self, fingerprint: Fingerprint) -> frozenset[str]:
        """The 16-hex key IDs of the key and its subkeys (what an OpenPGP message's recipients name).

        Raises CryptoError if the keyring has no such key.
        """
        for raw in self._gpg.list_keys(keys=[str(fingerprint)]):
            if raw.get("fingerprint") == str(fingerprint):
                return frozenset({str(raw["keyid"]).upper(), *(str(sub[0]).upper() for sub in raw.get("subkeys", []))})
        raise CryptoError(_unknown_key(fingerprint))

    def recipient_key_ids(self, fingerprints: Collection[Fingerprint]) -> dict[Fingerprint, frozenset[str]]:
        """The key IDs of each of these keys and its subkeys, from one gpg listing (see `key_ids`).

        Raises CryptoError naming the first key the keyring does not hold.
        """
        found = self._cached(("key-ids", *sorted(map(str, fingerprints))), lambda: self._list_key_ids(fingerprints))
        assert isinstance(found, dict)  # noqa: S101 (what _list_key_ids returns)
        for fingerprint in fingerprints:
            if str(fingerprint) not in found:
                raise CryptoError(_unknown_key(fingerprint))
        return {f: found[str(f)] for f in fingerprints}

    def _list_key_ids(self, fingerprints: Collection[Fingerprint]) -> dict[str, frozenset[str]]:
        found: dict[str, frozenset[str]] = {}
        for raw in self._gpg.list_keys(keys=[str(f) for f in fingerprints]):
            ids = {str(raw["keyid"]).upper(), *(str(sub[0]).upper() for sub in raw.get("subkeys", []))}
            found[str(raw.get("fingerprint"))] = frozenset(ids)
        return found

    def _key_infos(self, patterns: list[str] | None) -> tuple[KeyInfo, ...]:
        secret = frozenset(str(key.get("fingerprint", "")) for key in self._gpg.list_keys(secret=True))
        now = datetime.now(UTC)
        return tuple(_key_info(raw, secret, now) for raw in self._gpg.list_keys(keys=patterns))

    def _encrypt_problem(self, statuses: list[Status], signer: Fingerprint) -> str:
        """Why encryption failed, for a person; gpg 2.2 often gives reason 0 for a revoked recipient."""
        for code, args in statuses:
            if code != "INV_RECP" or len(args) < 2:
                continue
            reason = _INVALID_KEY_REASONS.get(args[0], "unusable")
            recipient = _fingerprint_or_none(args[1])
            info = next((k for k in self._key_infos([args[1]]) if k.fingerprint == recipient), None)
            if info is None:
                reason = _INVALID_KEY_REASONS["1"]
            elif info.revoked or info.expired:
                reason = "revoked" if info.revoked else "expired"
            elif not info.can_encrypt:
                reason = "without a usable encryption subkey"
            return f"recipient key {args[1]} is {reason}: import the officer's current key or remove the officer"
        return _signer_problem(statuses, signer)

    def _require_own_key(self, used: Fingerprint, signer: Fingerprint) -> None:
        """Raise CryptoError unless `used` is `signer` or one of its subkeys."""
        if used == signer:
            return
        for raw in self._gpg.list_keys(keys=[str(signer)]):
            subkeys = {str(sub[2]) for sub in raw.get("subkeys", [])}
            if raw.get("fingerprint") == str(signer) and str(used) in subkeys:
                return
        raise CryptoError(f"gpg signed with key {used}, not with {signer}: check the gateway key configuration")


# --- gpg-agents ----------------------------------------------------------------------------------

_AGENTS: dict[Path, bool] = {}  # every home this process opened -> whether any agent there is ours


def stop_agents() -> int:
    """Stop the gpg-agents this process started (not one that was already serving a home, such as an
    officer's own ~/.gnupg); return how many homes were stopped. Call when a command ends."""
    ours = [home for home, started in _AGENTS.items() if started]
    for home in ours:
        _kill_agent(home)
    _AGENTS.clear()
    return len(ours)


def _kill_agent(home: Path) -> None:
    subprocess.run(
        [GPGCONF_BINARY, "--homedir", str(home), "--kill", "all"],
        capture_output=True,
        timeout=30,
        check=False,
        env=ENVIRONMENT,
    )


_SOCKETS: dict[Path, str | None] = {}  # home -> its agent's socket, as gpgconf names it


def _agent_socket(home: Path) -> str | None:
    """The path of the socket `home`'s gpg-agent listens on (None if gpgconf cannot say)."""
    if home not in _SOCKETS:
        listed = subprocess.run(
            [GPGCONF_BINARY, "--homedir", str(home), "--list-dirs", "agent-socket"],
            capture_output=True,
            timeout=30,
            check=False,
            env=ENVIRONMENT,
        )
        path = listed.stdout.decode("utf-8", "replace").strip()
        _SOCKETS[home] = path.replace("%3a", ":") if listed.returncode == 0 and path else None
    return _SOCKETS[home]


def _agent_running(home: Path) -> bool:
    """Whether a gpg-agent already answers on `home`'s socket (so it is not ours to stop)."""
    path = _agent_socket(home)
    if path is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


# --- running gpg on pipes --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Run:
    statuses: list[Status]
    returncode: int


class _Pipes:
    """One gpg process fed only through pipes: the data on stdin, what gpg makes on stdout, its status
    lines on a pipe of their own (so nothing gpg logs, such as a file name or a user id, can pass for
    a status line: SigSpoof, CVE-2018-12020), and a side input (a detached signature) on a fourth.

    An exception from the data source or the output sink kills gpg and is raised once gpg is gone.
    """

    def __init__(
        self,
        home: Path,
        args: Sequence[str],
        source: Iterable[bytes] | None,
        sink: Callable[[bytes], object] | None,
        side_input: bytes | None,
    ) -> None:
        self.home, self.args, self.source, self.sink, self.side_input = home, args, source, sink, side_input
        self.failures: list[BaseException] = []
        self.status = bytearray()

    def run(self) -> _Run:
        status_read, status_write = os.pipe()
        side = os.pipe() if self.side_input is not None else None
        inherited = [status_write, *([side[0]] if side else [])]
        argv = [GPG_BINARY, "--homedir", str(self.home), "--batch", "--no-tty", "--status-fd", str(status_write)]
        argv += [*_OPTIONS, *(f"-&{side[0]}" if side and arg == _SIDE_INPUT else arg for arg in self.args)]
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if self.source is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.sink is not None else subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=inherited,
                env=ENVIRONMENT,
            )
        except OSError as exc:
            for fd in (status_read, *(side or ())):
                os.close(fd)
            raise CryptoError(f"gpg cannot run ({exc.strerror}): install GnuPG 2.2+ as {GPG_BINARY}") from None
        finally:
            for fd in inherited:
                os.close(fd)
        threads = [threading.Thread(target=self._collect, args=(status_read,), daemon=True)]
        if side is not None and self.side_input is not None:
            threads.append(threading.Thread(target=_write_and_close, args=(side[1], self.side_input), daemon=True))
        if self.source is not None:
            threads.append(threading.Thread(target=self._feed, args=(process,), daemon=True))
        for thread in threads:
            thread.start()
        try:
            self._drain(process)
        finally:
            process.wait()
            for thread in threads:
                thread.join()
        if self.failures:
            raise self.failures[0]
        return _Run(_parse_statuses(bytes(self.status)), process.returncode)

    def _collect(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            while chunk := pipe.read(65536):
                self.status += chunk

    def _feed(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None  # noqa: S101 (opened as a pipe)
        assert self.source is not None  # noqa: S101
        try:
            for chunk in self.source:
                process.stdin.write(chunk)
        except BrokenPipeError:
            pass  # gpg stopped reading: its status lines say why
        except BaseException as exc:  # handed to the caller's thread, which re-raises it
            self.failures.append(exc)
            process.kill()
        finally:
            with contextlib.suppress(OSError):
                process.stdin.close()

    def _drain(self, process: subprocess.Popen[bytes]) -> None:
        if process.stdout is None or self.sink is None:
            return
        with process.stdout as output:
            try:
                while chunk := os.read(output.fileno(), CHUNK):
                    self.sink(chunk)
            except BaseException as exc:
                self.failures.append(exc)
                process.kill()


def _write_and_close(fd: int, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError), os.fdopen(fd, "wb") as pipe:  # the close flushes, too
        pipe.write(data)


def _parse_statuses(raw: bytes) -> list[Status]:
    text = raw.decode("utf-8", "replace")
    lines = (line[len("[GNUPG:] ") :].split() for line in text.splitlines() if line.startswith("[GNUPG:] "))
    return [(parts[0], tuple(parts[1:])) for parts in lines if parts]


def _notation(name: str, value: str) -> str:
    """`name=value` for --sig-notation; raise ValueError for what gpg would refuse or misread."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*@[a-z0-9.-]+", name) or not value.isprintable() or not value.isascii():
        raise ValueError(f"notation {name}={value!r} must be name@domain=printable ASCII")
    return f"{name}={value}"


def _for_purpose(check: SignatureCheck, purpose: Purpose) -> SignatureCheck:
    """`check`, made invalid unless the signature names `purpose` (a signature lifted out of a
    package, say, must never pass for a manifest's)."""
    if not (check.valid or check.key_expired):
        return check
    try:
        made_for = check.notation(PURPOSE_NOTATION)
    except CryptoError as exc:
        made_for, problem = None, exc.message
    else:
        problem = (
            f"the signature was made for {made_for or 'no stated purpose'}, not for {purpose.value}:"
            " it was taken from another document"
        )
    if made_for == purpose.value:
        return check
    return SignatureCheck(
        False,
        check.fingerprint,
        check.signed_at,
        problem,
        False,
        check.hash_algorithm,
        check.signature_class,
        check.notations,
        check.intact,
    )


# --- keyring folder and arguments ---------------------------------------------------------------


def _private_folder(home: Path) -> Path:
    """Create `home` with mode 0700, or check an existing one is a private folder; raise CryptoError."""
    home = home.absolute()
    with contextlib.suppress(FileExistsError):
        private_dirs(home)  # and its parents (keys/demo-officers/): the umask can only narrow 0700
    info = home.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise CryptoError(f"keyring {str(home)!r} is not a folder: point the gateway at a folder of its own")
    if info.st_mode & 0o077:
        raise CryptoError(f"keyring {str(home)!r} is open to other users: run chmod 700 {str(home)!r}")
    return home


def _check_literal_name(name: str) -> None:
    """Raise ValueError unless `name` is a plain file name a recipient's gpg could safely use."""
    if not name or name in {".", ".."} or len(name.encode("utf-8")) > 255:
        raise ValueError(f"literal_name {name!r} must be a file name of 1-255 bytes")
    if any(ch in "/\\" or ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise ValueError(f"literal_name {name!r} must not contain a path separator or control character")


# --- key generation ------------------------------------------------------------------------------


def _key_parameters(algorithm: str, expire_days: int | None) -> list[tuple[str, str]]:
    """gpg batch parameters for the key types; raise ValueError for anything else."""
    if expire_days is not None and expire_days < 1:
        raise ValueError(f"expire_days must be at least 1 (or None for no expiry), not {expire_days}")
    expiry = [("Expire-Date", "0" if expire_days is None else f"{expire_days}d")]
    if algorithm == "ed25519":
        return [
            ("Key-Type", "eddsa"),
            ("Key-Curve", "ed25519"),
            ("Key-Usage", "sign"),
            ("Subkey-Type", "ecdh"),
            ("Subkey-Curve", "cv25519"),
            ("Subkey-Usage", "encrypt"),
            *expiry,
        ]
    if algorithm == "rsa3072":
        return [
            ("Key-Type", "RSA"),
            ("Key-Length", "3072"),
            ("Key-Usage", "sign"),
            ("Subkey-Type", "RSA"),
            ("Subkey-Length", "3072"),
            ("Subkey-Usage", "encrypt"),
            *expiry,
        ]
    raise ValueError(f"unknown key algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")


def _identity_parameters(name: str, email: str, comment: str) -> list[tuple[str, str]]:
    """The user id as batch parameters; raise CryptoError for text that would break the parameter file."""
    for label, value, banned in (("name", name, "<>"), ("comment", comment, "()")):
        if any(ord(ch) < 32 or ord(ch) == 127 or ch in banned for ch in value):
            raise CryptoError(
                f"the {label} {value!r} contains a line break, control character or one of {banned!r}: use plain text"
            )
    if len(name.strip()) < 2:
        raise CryptoError(f"the name {name!r} is too short: give the officer's full name")
    if not _EMAIL.fullmatch(email):
        raise CryptoError(f"{email!r} is not an e-mail address: write it as name@agency.example")
    params = [("Name-Real", name.strip()), ("Name-Email", email)]
    return params + ([("Name-Comment", comment.strip())] if comment.strip() else [])


# --- reading gpg's answers -------------------------------------------------------------------------


def _statuses(result: Any) -> list[Status]:
    """gpg's status lines, in order. Empty if python-gnupg could not read them (then every check fails)."""
    text = getattr(result, "stderr", None)
    if not isinstance(text, str):
        return []
    lines = (line[len("[GNUPG:] ") :].split() for line in text.splitlines() if line.startswith("[GNUPG:] "))
    return [(parts[0], tuple(parts[1:])) for parts in lines if parts]


def _returncode(result: Any) -> int:
    """gpg's exit status; -1 if unknown."""
    code = getattr(result, "returncode", None)
    return code if isinstance(code, int) else -1


def _count(statuses: list[Status], code: str, index: int) -> int:
    """Integer field `index` of the last `code` line, 0 if absent."""
    for found, args in reversed(statuses):
        if found == code and len(args) > index and args[index].isdigit():
            return int(args[index])
    return 0


def _revoked_by_import(statuses: list[Status]) -> list[str]:
    """Keys a revocation certificate applied to: it yields no IMPORT_OK, only KEY_CONSIDERED lines.

    Only those before IMPORT_RES count; after it, gpg's trust-database check considers other keys.
    """
    considered: list[str] = []
    for code, args in statuses:
        if code == "IMPORT_RES":
            break
        if code == "KEY_CONSIDERED" and args:
            considered.append(args[0])
    return considered


def _has_secret_material(scanned: Any) -> bool:
    """Whether a dry-run import listing shows a secret primary key or secret subkey."""
    for key in scanned:
        subkeys = key.get("subkey_info", {}).values()
        if key.get("type") == "sec" or any(sub.get("type") == "ssb" for sub in subkeys):
            return True
    return False


def _timestamp(text: str) -> datetime | None:
    """A status-line time: seconds since the epoch or ISO 8601 basic (`20260101T120000`); UTC."""
    if "T" in text:
        try:
            return datetime.strptime(text, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        except ValueError:
            return None
    return datetime.fromtimestamp(int(text), UTC) if text.isdigit() and int(text) > 0 else None


def _fingerprint_or_none(text: str) -> Fingerprint | None:
    try:
        return Fingerprint.parse(text)
    except CryptoError:
        return None


def _signature_check(statuses: list[Status], returncode: int, *, missing: str) -> SignatureCheck:
    """Judge the signatures in `statuses`: exactly one, good, by a live key; `missing` if there is none."""
    groups: list[dict[str, tuple[str, ...]]] = []
    notations: list[list[tuple[str, str]]] = []
    for code, args in statuses:
        if code == "NEWSIG":
            groups.append({})
            notations.append([])
        elif groups and code == "NOTATION_NAME":
            notations[-1].append((" ".join(args), ""))
        elif groups and code == "NOTATION_DATA" and notations[-1]:
            name, value = notations[-1][-1]  # gpg splits long values over several lines
            notations[-1][-1] = (name, value + _unescape(" ".join(args)))
        elif groups:
            groups[-1].setdefault(code, args)
    if not groups:
        return SignatureCheck(False, None, None, missing)
    if len(groups) > 1:
        return SignatureCheck(False, None, None, "more than one signature: sign the file with one key only")
    codes = groups[0]
    check = _one_signature(codes, returncode)
    valid_args = codes.get("VALIDSIG", ())
    hash_algorithm = valid_args[7] if len(valid_args) > 8 else None
    signature_class = valid_args[8] if len(valid_args) > 8 else None
    good = {"GOODSIG", "EXPKEYSIG", "REVKEYSIG"} & codes.keys() and not {"BADSIG", "ERRSIG"} & codes.keys()
    return SignatureCheck(
        check.valid,
        check.fingerprint,
        check.signed_at,
        check.problem,
        check.key_expired,
        hash_algorithm,
        signature_class,
        tuple(notations[0]),
        bool(good and valid_args and check.fingerprint is not None),
        check.unknown_key,
    )


def _unescape(text: str) -> str:
    """A status-line string: gpg writes %XX for bytes that would break the line (UTF-8 underneath)."""
    raw = re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m[1], 16)]), text.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "replace")


def _one_signature(codes: Mapping[str, tuple[str, ...]], returncode: int) -> SignatureCheck:
    """The verdict for one signature's status codes (BADSIG, ERRSIG, REVKEYSIG, EXPKEYSIG, VALIDSIG…)."""
    valid_args = codes.get("VALIDSIG", ())
    primary = _fingerprint_or_none(valid_args[9] if len(valid_args) > 9 else valid_args[0]) if valid_args else None
    signed_at = _timestamp(valid_args[2]) if len(valid_args) > 2 else None
    if "BADSIG" in codes:
        return SignatureCheck(False, None, None, "the file was changed after it was signed (BAD signature)")
    if "ERRSIG" in codes:
        args = codes["ERRSIG"]
        key_id = args[0] if args else "?"
        when = _timestamp(args[4]) if len(args) > 4 else None
        if "NO_PUBKEY" in codes or (len(args) > 5 and args[5] == "9"):
            problem = f"no public key for this signature (key ID {key_id}): the signer is not registered"
            issuer = args[6] if len(args) > 6 and re.fullmatch(r"[0-9A-Fa-f]{40,64}", args[6]) else key_id
            return SignatureCheck(False, None, when, problem, unknown_key=issuer)
        problem = f"the signature cannot be checked (gpg error {args[5] if len(args) > 5 else '?'}): sign again"
        return SignatureCheck(False, None, when, problem)
    if "REVKEYSIG" in codes:
        return SignatureCheck(False, primary, signed_at, "the signing key is revoked: the officer must rekey")
    if "EXPKEYSIG" in codes:
        return SignatureCheck(
            False, primary, signed_at, "the signing key has expired: the officer must renew it", key_expired=True
        )
    if "EXPSIG" in codes:
        return SignatureCheck(False, primary, signed_at, "the signature has expired: sign the file again")
    if "GOODSIG" in codes and primary is not None and returncode == 0:
        return SignatureCheck(True, primary, signed_at, None)
    return SignatureCheck(False, None, None, _not_a_signature("gpg could not check it"))


def _not_a_signature(detail: str) -> str:
    return f"not an OpenPGP signature ({detail}): sign with gpg --detach-sign FILE"


_NEARLY_FULL = 1 << 20


def _raise_if_out_of_space(folder: Path) -> None:
    """gpg gives no status code for a failed write to its own home (only exit 2): when gpg failed and
    that file system is (nearly) full, raise the OSError it is, so the caller defers the file instead of
    blaming a key."""
    try:
        info = os.statvfs(folder)
    except OSError:
        return
    if info.f_bavail * info.f_frsize < _NEARLY_FULL:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))


def _require_decrypted(statuses: list[Status], returncode: int, name: str) -> None:
    """Raise CryptoError unless gpg decrypted a public-key-encrypted message completely and intact."""
    codes = {code for code, _ in statuses}
    intact = {"BEGIN_DECRYPTION", "DECRYPTION_OKAY", "GOODMDC", "END_DECRYPTION"} <= codes
    # gpg exits 2 also when only the signature cannot be checked (its key is not here): that is the
    # signature's verdict, judged by the caller, not damage to the message
    unchecked = "ERRSIG" in codes and "BADSIG" not in codes
    if (returncode == 0 or unchecked) and intact and not codes & {"DECRYPTION_FAILED", "BADMDC"}:
        return
    if "NO_SECKEY" in codes and "DECRYPTION_OKAY" not in codes:
        key_ids = sorted({args[0] for code, args in statuses if code == "ENC_TO" and args})
        raise CryptoError(
            f"{name!r} is not encrypted to a key in this keyring: it is encrypted to key ID(s)"
            f" {', '.join(key_ids) or 'none named'}, whose secret key this GnuPG home lacks; pull it with"
            " the GnuPG home of an officer it was sent to (`gpg --list-secret-keys --with-subkey-fingerprints`"
            " shows which keys a home holds)"
        )
    if "NEED_PASSPHRASE_SYM" in codes:
        raise CryptoError(f"{name!r} is encrypted with a password, not to a key: open it with the agency password")
    if "BEGIN_DECRYPTION" in codes or "ENC_TO" in codes:
        raise CryptoError(
            f"{name!r} failed its integrity check: it was damaged or tampered with; nothing was kept,"
            " ask the sender to send it again"
        )
    raise CryptoError(f"{name!r} is not an OpenPGP encrypted file: nothing was decrypted")


def _signer_problem(statuses: list[Status], signer: Fingerprint) -> str:
    for code, args in statuses:
        if code == "INV_SGNR" and args:
            reason = _INVALID_KEY_REASONS.get(args[0], f"unusable (gpg reason {args[0]})")
            return (
                f"signing key {signer} is {reason}: use a current gateway key (re-run `iom-gateway init` to make one)"
            )
    return f"gpg could not sign with key {signer}: check it with `gpg --homedir keys/gnupg --list-keys`"


def _unknown_key(fingerprint: Fingerprint) -> str:
    return (
        f"no key {fingerprint} in this keyring: import the officer's public key first "
        "(iom-gateway officers add ... --key KEY.asc)"
    )


# --- key listings ----------------------------------------------------------------------------------


def _algorithm(raw: Mapping[str, Any]) -> str:
    """`ed25519`, `rsa3072`, … for a listing row (curve name for ECC keys, family + length otherwise)."""
    curve = str(raw.get("curve") or "")
    if curve:
        return curve
    family = _PUBKEY_ALGOS.get(str(raw.get("algo")), f"algo{raw.get('algo')}")
    return f"{family}{raw.get('length', '')}"


def _epoch(text: Any) -> datetime | None:
    value = str(text or "")
    return _timestamp(value) if value else None


def _key_info(raw: Mapping[str, Any], secret: frozenset[str], now: datetime) -> KeyInfo:
    """A KeyInfo from one python-gnupg listing row (gpg's colon format, fixed-list-mode)."""
    fingerprint = Fingerprint.parse(str(raw["fingerprint"]))
    expires = _epoch(raw.get("expires"))
    capabilities = str(raw.get("cap", ""))  # upper case: usable by the key as a whole right now
    validity = str(raw.get("trust", ""))
    # python-gnupg decodes gpg's UTF-8 listing as Latin-1; undo that for names such as "Siobhán"
    user_ids = tuple(uid.encode("latin-1", "replace").decode("utf-8", "replace") for uid in raw.get("uids", []))
    return KeyInfo(
        fingerprint=fingerprint,
        user_ids=user_ids,
        algorithm=_algorithm(raw),
        created=_epoch(raw.get("date")) or datetime.fromtimestamp(0, UTC),
        expires=expires,
        revoked=validity == "r",
        expired=validity == "e" or (expires is not None and expires <= now),
        has_secret=str(fingerprint) in secret,
        can_sign="S" in capabilities,
        can_encrypt="E" in capabilities,
    )


# ----------------------------------------------------------------------------------------- packets

_PKESK, _MARKER = 1, 10


def strip_recipients(source: BinaryIO, target: BinaryIO, key_ids: Collection[str]) -> int:
    """Copy the OpenPGP message `source` to `target` without the public-key-encrypted session-key
    packets addressed to `key_ids`; the encrypted data is copied untouched. Return how many were dropped.

    Whoever held those keys can no longer open the copy; every other recipient still can. This needs
    no plaintext, and it cannot add a recipient. Raises CryptoError for a message that is not
    binary OpenPGP, or that would be left with no recipient at all.
    """
    wanted = {k.upper() for k in key_ids}
    return _filter_recipients(source, target, lambda key_id: key_id is None or key_id not in wanted)


def keep_recipients(source: BinaryIO, target: BinaryIO, key_ids: Collection[str]) -> int:
    """Copy the OpenPGP message `source` to `target` with only the session-key packets addressed to
    `key_ids` (16-hex key ids, as `Keyring.key_ids` gives them); return how many were dropped.

    One message encrypted to the officers of several agencies becomes one package per agency, each
    opened only by its own officers' keys; the encrypted data is the same bytes in every copy.
    Raises CryptoError as `strip_recipients`, also when none of `key_ids` is a recipient.
    """
    wanted = {k.upper() for k in key_ids}
    return _filter_recipients(source, target, lambda key_id: key_id is not None and key_id in wanted)


def _filter_recipients(source: BinaryIO, target: BinaryIO, keep: Callable[[str | None], bool]) -> int:
    """Copy the message, keeping the session-key packets whose key id (None: not a v3 packet) `keep` accepts."""
    dropped = kept = 0
    while True:
        header, tag, length = _packet_header(source)
        if tag not in (_PKESK, _MARKER):
            break
        if length is None:
            raise CryptoError("a session-key packet of indeterminate length: not a message the gateway made")
        body = source.read(length)
        if len(body) != length:
            raise CryptoError("the package ends inside a session-key packet: it is damaged")
        if tag == _PKESK and not keep(body[1:9].hex().upper() if len(body) >= 9 and body[0] == 3 else None):
            dropped += 1
            continue
        kept += tag == _PKESK
        target.write(header + body)
    if kept == 0:
        raise CryptoError("no recipient would be left: the package cannot be re-encrypted without its plaintext")
    target.write(header)
    shutil.copyfileobj(source, target, 1 << 20)
    return dropped


def _packet_header(source: BinaryIO) -> tuple[bytes, int, int | None]:
    """Read one packet header: its bytes, its tag and its body length (None: partial or indeterminate)."""
    first = source.read(1)
    if not first or not first[0] & 0x80:
        raise CryptoError("not a binary OpenPGP message")
    octet = first[0]
    if octet & 0x40:  # new format
        tag, size = octet & 0x3F, source.read(1)
        if not size:
            raise CryptoError("the package ends inside a packet header: it is damaged")
        if size[0] < 192:
            return first + size, tag, size[0]
        if size[0] < 224:
            more = source.read(1)
            return first + size + more, tag, ((size[0] - 192) << 8) + more[0] + 192
        if size[0] == 255:
            more = source.read(4)
            return first + size + more, tag, int.from_bytes(more, "big")
        return first + size, tag, None
    tag, kind = (octet >> 2) & 0x0F, octet & 0x03
    if kind == 3:
        return first, tag, None
    more = source.read((1, 2, 4)[kind])
    return first + more, tag, int.from_bytes(more, "big")
