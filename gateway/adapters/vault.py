"""The AES-ZIP password vault: agency passwords at rest under a passphrase; the only user of `cryptography`.

The file is JSON: a header (format, version, scrypt parameters and salt), a fresh 96-bit nonce for
every save, and the AES-256-GCM ciphertext of the records. The header is the associated data, so
editing any of it (say, weakening the scrypt cost) fails authentication like a wrong passphrase.

Threat-model limits: Python cannot wipe memory, so the derived key and the passwords live in this
process until it exits; two processes saving at once lose one update (the caller holds a lock).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.adapters.fsio import atomic_write_bytes, open_regular
from gateway.core.errors import GatewayError, PolicyError, VaultError
from gateway.core.model import AGENCY_ID
from gateway.core.secret import Secret

FORMAT = "iom-gateway-vault"
VERSION = 1
MIN_PASSPHRASE = 12
SCRYPT_N, SCRYPT_R, SCRYPT_P = 32768, 8, 1
_MAX_FILE = 16 << 20
_MAX_SCRYPT_MEMORY = 256 << 20  # refuse a header that would make opening the vault exhaust memory
_NONCE = 12
CURRENT, RETIRED = "current", "retired"

_WILL_NOT_OPEN = "the vault passphrase is wrong, or the vault was altered: check IOM_GATEWAY_VAULT_PASSPHRASE"


@dataclass(frozen=True, slots=True)
class PasswordRecord:
    """One agency password's public facts: never the password itself."""

    id: str
    agency: str
    created: datetime  # UTC
    status: str  # CURRENT | RETIRED


@dataclass(frozen=True, slots=True)
class _Kdf:
    salt: bytes
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    def header(self) -> dict[str, Any]:
        kdf = {"name": "scrypt", "salt": _b64(self.salt), "n": self.n, "r": self.r, "p": self.p}
        return {"format": FORMAT, "version": VERSION, "kdf": kdf}

    def associated_data(self) -> bytes:
        return json.dumps(self.header(), sort_keys=True, separators=(",", ":")).encode()

    def derive(self, passphrase: Secret) -> bytes:
        # cryptography is imported where it is used: `validate` opens a root (which imports this
        # module) and never the vault, and loading cryptography costs it start-up time
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt  # noqa: PLC0415

        return Scrypt(salt=self.salt, length=32, n=self.n, r=self.r, p=self.p).derive(passphrase.reveal().encode())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _not_a_vault(path: Path, why: str) -> VaultError:
    return VaultError(f"{str(path)!r} is not an iom-gateway vault ({why}): restore keys/ from a backup, or fix --root")


def _field(table: dict[str, Any], key: str, kind: type) -> Any:
    """`table[key]` if it has type `kind` (never a bool for int); raise KeyError or TypeError."""
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(key)
    return value


def _parse_kdf(kdf: dict[str, Any]) -> _Kdf:
    """Raise ValueError/KeyError/TypeError for anything but sane scrypt parameters."""
    if _field(kdf, "name", str) != "scrypt":
        raise ValueError("kdf")
    salt = base64.b64decode(_field(kdf, "salt", str), validate=True)
    n, r, p = _field(kdf, "n", int), _field(kdf, "r", int), _field(kdf, "p", int)
    if len(salt) < 16 or n < 2 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError("kdf")
    if 128 * n * r * p > _MAX_SCRYPT_MEMORY:
        raise ValueError("kdf")
    return _Kdf(salt, n, r, p)


def _parse_file(path: Path, data: bytes) -> tuple[_Kdf, bytes, bytes]:
    """Split the vault file into its scrypt parameters, nonce and ciphertext; raise VaultError."""
    try:
        document = json.loads(data)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise _not_a_vault(path, "no iom-gateway-vault format marker")
        if _field(document, "version", int) != VERSION:
            raise VaultError(f"{str(path)!r} is vault version {document['version']}: upgrade iom-gateway to open it")
        kdf = _parse_kdf(_field(document, "kdf", dict))
        nonce = base64.b64decode(_field(document, "nonce", str), validate=True)
        ciphertext = base64.b64decode(_field(document, "ciphertext", str), validate=True)
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
        raise _not_a_vault(path, "damaged JSON or header") from None
    if len(nonce) != _NONCE or len(ciphertext) < 16:
        raise _not_a_vault(path, "damaged nonce or ciphertext")
    return kdf, nonce, ciphertext


def _read_file(path: Path) -> bytes:
    if not os.path.lexists(path):
        raise VaultError(
            f"no password vault at {str(path)!r}: check --root, or create the vault with `iom-gateway init`"
        )
    try:
        handle, size = open_regular(path)
    except GatewayError as exc:
        raise VaultError(f"the vault cannot be opened: {exc.message}") from None
    with handle:
        if size > _MAX_FILE:
            raise _not_a_vault(path, f"{size:,} bytes is far too large")
        return handle.read(_MAX_FILE + 1)


def _record_to_json(record: PasswordRecord, password: Secret) -> dict[str, str]:
    created = record.created.isoformat()
    return {
        "id": record.id,
        "agency": record.agency,
        "created": created,
        "status": record.status,
        "password": password.reveal(),
    }


def _record_from_json(item: dict[str, Any]) -> tuple[PasswordRecord, Secret]:
    created = datetime.fromisoformat(_field(item, "created", str))
    status = _field(item, "status", str)
    if created.tzinfo is None or status not in (CURRENT, RETIRED):
        raise ValueError("record")
    record = PasswordRecord(_field(item, "id", str), _field(item, "agency", str), created.astimezone(UTC), status)
    return record, Secret(_field(item, "password", str))


def _parse_records(path: Path, plaintext: bytes) -> tuple[tuple[tuple[PasswordRecord, Secret], ...], dict[str, Secret]]:
    try:
        document = json.loads(plaintext)
        items = _field(document, "records", list)
        credentials = document.get("credentials", {})  # absent in a vault no credential was ever put in
        if not isinstance(credentials, dict) or not all(isinstance(v, str) for v in credentials.values()):
            raise ValueError("credentials")
        return tuple(_record_from_json(item) for item in items), {k: Secret(v) for k, v in credentials.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise _not_a_vault(path, "its records are malformed") from None


RELAY_CREDENTIAL = "smtp.relay"  # the [smtp.relay] login's password (`keys relay-password`)


class Vault:
    """An open vault: the derived key and the records in memory, every change saved at once."""

    __slots__ = ("_credentials", "_entries", "_kdf", "_key", "_path")

    def __init__(
        self,
        path: Path,
        kdf: _Kdf,
        key: bytes,
        entries: tuple[tuple[PasswordRecord, Secret], ...],
        credentials: dict[str, Secret] | None = None,
    ) -> None:
        self._path = path
        self._kdf = kdf
        self._key = key
        self._entries = entries
        self._credentials = dict(credentials or {})

    def __repr__(self) -> str:
        return f"Vault({str(self._path)!r}, {len(self._entries)} records)"

    @classmethod
    def create(cls, path: Path, passphrase: Secret) -> Vault:
        """Create an empty vault at `path` (mode 0600) under `passphrase`.

        Raises PolicyError for an empty passphrase or one under 12 characters, VaultError if `path`
        exists or its folder does not, OSError if it cannot be written.
        """
        if len(passphrase.reveal()) < MIN_PASSPHRASE:
            raise PolicyError(
                f"the vault passphrase needs at least {MIN_PASSPHRASE} characters: "
                "set a longer IOM_GATEWAY_VAULT_PASSPHRASE"
            )
        try:  # reserve the name first, so a vault made meanwhile is never replaced
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        except FileExistsError:
            raise VaultError(f"a vault already exists at {str(path)!r}: open it, or move it away first") from None
        except FileNotFoundError:
            raise VaultError(f"the folder {str(path.parent)!r} does not exist: run `iom-gateway init` first") from None
        try:
            kdf = _Kdf(secrets.token_bytes(16))
            vault = cls(path, kdf, kdf.derive(passphrase), ())
            vault._save(())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return vault

    @classmethod
    def open(cls, path: Path, passphrase: Secret) -> Vault:
        """Open the vault at `path`; raise VaultError if it is missing, not a vault, or will not decrypt."""
        kdf, nonce, ciphertext = _parse_file(path, _read_file(path))
        key = kdf.derive(passphrase)
        from cryptography.exceptions import InvalidTag  # noqa: PLC0415 (see _Kdf.derive)
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415

        try:
            plaintext = AESGCM(key).decrypt(nonce, ciphertext, kdf.associated_data())
        except InvalidTag:
            raise VaultError(_WILL_NOT_OPEN) from None
        return cls(path, kdf, key, *_parse_records(path, plaintext))

    def rekey(self, passphrase: Secret) -> None:
        """Re-encrypt the vault under `passphrase` (fresh salt) in one atomic replace: a crash leaves
        the old file or the new, never neither. Raises PolicyError for a passphrase under 12 characters."""
        if len(passphrase.reveal()) < MIN_PASSPHRASE:
            raise PolicyError(f"the new vault passphrase needs at least {MIN_PASSPHRASE} characters: nothing changed")
        old_kdf, old_key = self._kdf, self._key
        self._kdf = _Kdf(secrets.token_bytes(16))
        self._key = self._kdf.derive(passphrase)
        try:
            self._save(self._entries)
        except BaseException:
            self._kdf, self._key = old_kdf, old_key
            raise

    def _save(
        self, entries: tuple[tuple[PasswordRecord, Secret], ...], credentials: dict[str, Secret] | None = None
    ) -> None:
        records = [_record_to_json(record, password) for record, password in entries]
        document: dict[str, Any] = {"records": records}
        kept = self._credentials if credentials is None else credentials
        if kept:
            document["credentials"] = {name: secret.reveal() for name, secret in kept.items()}
        plaintext = json.dumps(document, sort_keys=True).encode()
        nonce = secrets.token_bytes(_NONCE)
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: PLC0415 (see _Kdf.derive)

        ciphertext = AESGCM(self._key).encrypt(nonce, plaintext, self._kdf.associated_data())
        document = {**self._kdf.header(), "nonce": _b64(nonce), "ciphertext": _b64(ciphertext)}
        atomic_write_bytes(self._path, json.dumps(document, indent=2).encode() + b"\n", 0o600)

    def _new_id(self, agency: str) -> str:
        taken = {record.id for record, _ in self._entries}
        while (candidate := f"pw-{agency}-{secrets.token_hex(4)}") in taken:
            pass
        return candidate

    def add(self, agency: str, password: Secret, now: datetime) -> PasswordRecord:
        """Store `password` as `agency`'s current one, retire the previous, and save at once.

        Raises ValueError for an agency that is not an id, an empty password or a naive `now`;
        OSError if the vault cannot be written (then nothing changes).
        """
        if AGENCY_ID.fullmatch(agency) is None or not password or now.tzinfo is None:
            raise ValueError("add() needs an agency id, a non-empty password and a timezone-aware time")
        record = PasswordRecord(self._new_id(agency), agency, now.astimezone(UTC), CURRENT)
        retired = tuple(
            (PasswordRecord(old.id, old.agency, old.created, RETIRED), secret)
            if old.agency == agency and old.status == CURRENT
            else (old, secret)
            for old, secret in self._entries
        )
        entries = (*retired, (record, password))
        self._save(entries)
        self._entries = entries
        return record

    def remove(self, record_ids: set[str]) -> tuple[PasswordRecord, ...]:
        """Delete retired passwords for good and save at once; return what was removed.

        Raises VaultError if one of them is an agency's current password (rotate first).
        """
        current = [record.id for record, _ in self._entries if record.id in record_ids and record.status == CURRENT]
        if current:
            raise VaultError(f"{current[0]} is an agency's current password: rotate it before it can be removed")
        removed = tuple(record for record, _ in self._entries if record.id in record_ids)
        entries = tuple((record, secret) for record, secret in self._entries if record.id not in record_ids)
        if removed:
            self._save(entries)
            self._entries = entries
        return removed

    def current(self, agency: str) -> tuple[PasswordRecord, Secret]:
        """`agency`'s current password and its record; raise VaultError if it has none."""
        for record, secret in self._entries:
            if record.agency == agency and record.status == CURRENT:
                return record, secret
        raise VaultError(
            f"no password for agency {agency!r}: run `iom-gateway init` to make one, "
            f"or set one with `iom-gateway keys import --agency {agency} --password-file F`"
        )

    def password(self, record_id: str) -> Secret:
        """The password with id `record_id`, current or retired; raise VaultError if it is unknown."""
        for record, secret in self._entries:
            if record.id == record_id:
                return secret
        raise VaultError(
            f"no password with id {record_id!r} in the vault: it was purged, or the package is from "
            "another gateway; ask its admin to send it again"
        )

    def set_credential(self, name: str, secret: Secret) -> None:
        """Store `secret` as the credential `name` (replacing any before) and save at once."""
        if not secret:
            raise ValueError("set_credential() needs a non-empty secret")
        credentials = {**self._credentials, name: secret}
        self._save(self._entries, credentials)
        self._credentials = credentials

    def credential(self, name: str) -> Secret | None:
        """The credential `name`, or None if none was stored."""
        return self._credentials.get(name)

    def records(self) -> tuple[PasswordRecord, ...]:
        """Every record, oldest first, without the passwords."""
        return tuple(record for record, _ in self._entries)
