"""Admin use cases: create a root, keep the officer register, hand out keys and passwords."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.adapters.config import CONFIG_NAME
from gateway.adapters.fsio import atomic_write_bytes, open_regular, private_dirs
from gateway.adapters.gpg import Fingerprint, Keyring, Purpose
from gateway.adapters.passwords import PasswordPolicy, generate
from gateway.adapters.passwords import check as check_password
from gateway.adapters.store import INBOX
from gateway.adapters.vault import Vault
from gateway.core.errors import GatewayError, InputFileError, PolicyError, UsageError
from gateway.core.model import Delivery
from gateway.core.secret import Secret
from gateway.exchange.intake import OUTBOX
from gateway.state.registry import Officer, Role, slug
from gateway.state.root import KEYS, QUARANTINE, SAMPLES, Root

log = logging.getLogger(__name__)
SOURCE = Path(__file__).resolve().parents[2]
MAX_KEY_BYTES = 1 << 20
DEMO_PASSPHRASE_FILE = "vault-passphrase"  # noqa: S105 (a file name, not a secret)


@dataclass(frozen=True, slots=True)
class InitResult:
    root: Path
    gateway_key: str
    officers: tuple[str, ...]
    passwords: tuple[str, ...]


def init_root(path: Path, *, demo: bool, algorithm: str = "ed25519") -> InitResult:
    """Create (or complete) a gateway root at `path`: folders, gateway key, vault; `demo` adds the demo partnership."""
    private_dirs(path)
    if not (path / CONFIG_NAME).exists():
        if not demo:
            raise UsageError(
                f"no {CONFIG_NAME} in {str(path)!r}: write one (the repository's is an example) "
                "or run `iom-gateway init --demo`"
            )
        atomic_write_bytes(path / CONFIG_NAME, (SOURCE / CONFIG_NAME).read_bytes())  # 0600, whatever the umask
    if not (path / "schemas").exists():
        shutil.copytree(SOURCE / "schemas", path / "schemas")
    for private in (KEYS, "state"):
        (path / private).mkdir(mode=0o700, exist_ok=True)
        os.chmod(path / private, 0o700)
    if demo:
        _demo_passphrase(path)
    with Root.open(path) as root:  # closing it ends the log with a signed checkpoint
        for folder in (OUTBOX, INBOX, QUARANTINE):
            for agency in root.config.agencies:
                private_dirs(path / folder / agency)
        gateway = _gateway_key(root, algorithm)
        passwords = _vault(root)
        officers = _demo_officers(root, gateway) if demo else ()
    if demo and (SOURCE / SAMPLES).is_dir() and path != SOURCE:
        shutil.copytree(SOURCE / SAMPLES, path / SAMPLES, dirs_exist_ok=True)
    return InitResult(path, str(gateway), officers, passwords)


def _demo_passphrase(path: Path) -> None:
    secret = path / KEYS / DEMO_PASSPHRASE_FILE
    if not secret.exists():
        atomic_write_bytes(secret, generate(32).reveal().encode())


def _gateway_key(root: Root, algorithm: str) -> Fingerprint:
    current = root.journal.current_gateway_key()
    if current is not None:
        return Fingerprint.parse(current)
    name = f"iom-gateway {root.config.partnership}"
    fingerprint = root.keyring.generate(
        name, f"gateway@{slug(root.config.partnership) or 'iom'}.invalid", algorithm=algorithm
    )
    expires = root.keyring.key(fingerprint).expires
    root.journal.add_gateway_key(str(fingerprint), expires.isoformat() if expires else None)
    # entry 1, signed: whoever deletes or rebuilds the log from scratch cannot make another
    root.audit.genesis(lambda data: root.keyring.sign_bytes(data, fingerprint, purpose=Purpose.AUDIT), str(fingerprint))
    root.audit.append("gateway.key.created", actor="admin", fingerprint=str(fingerprint))
    return fingerprint


def _vault(root: Root) -> tuple[str, ...]:
    aes = [a for a in root.config.agencies.values() if a.delivery is Delivery.AES_ZIP]
    if not aes:
        return ()
    if not root.vault_path.exists():
        Vault.create(root.vault_path, root.config.vault_passphrase())
    made = []
    with root.changing_vault() as vault:
        for agency in aes:
            try:
                vault.current(agency.id)
            except GatewayError:
                record = vault.add(agency.id, generate(root.config.passwords.generated_length), datetime.now(UTC))
                root.audit.append("password.created", actor="admin", agency=agency.id, password_id=record.id)
                made.append(record.id)
    return tuple(made)


def _demo_officers(root: Root, gateway: Fingerprint) -> tuple[str, ...]:
    made = []
    gateway_public = root.keyring.export_public(gateway).encode()
    for agency in root.config.agencies.values():
        for role in (Role.PDO, Role.DO):
            officer_id = f"{agency.id}-{role.value.lower()}"
            if any(o.id == officer_id for o in root.registry.all(agency.id)):
                continue
            home = Keyring(root.demo_home(officer_id))
            fingerprint = home.generate(
                f"Demo {agency.name} {role.value}",
                f"{officer_id}@demo.invalid",
                comment="DEMO KEY, never for real data",
            )
            home.import_public(gateway_public)
            root.keyring.import_public(home.export_public(fingerprint).encode())
            officer = Officer(
                officer_id,
                agency.id,
                role,
                f"Demo {role.value}, {agency.name}",
                f"{officer_id}@demo.invalid",
                str(fingerprint),
                "active",
                demo=True,
            )
            root.registry.add(officer)
            root.audit.append(
                "officer.added",
                actor="admin",
                agency=agency.id,
                officer=officer_id,
                fingerprint=str(fingerprint),
                demo=True,
            )
            made.append(officer_id)
    return tuple(made)


def _read_key(path: Path) -> bytes:
    stream, size = open_regular(path)
    with stream:
        if size > MAX_KEY_BYTES:
            raise InputFileError(f"{str(path)!r} is {size:,} bytes: a public key file is a few KB; check the file")
        return stream.read()


def _import_officer_key(root: Root, path: Path) -> Fingerprint:
    found = root.keyring.import_public(_read_key(path))
    if len(found) != 1:
        raise UsageError(f"{str(path)!r} holds {len(found)} keys: give one officer's public key")
    info = root.keyring.key(found[0])
    if info.revoked or info.expired:
        raise PolicyError(
            f"key {info.fingerprint} is {'revoked' if info.revoked else 'expired'}: ask for a current key"
        )
    if not (info.can_sign and info.can_encrypt):
        raise PolicyError(f"key {info.fingerprint} cannot both sign and encrypt: an officer's key must do both")
    return found[0]


def add_officer(
    root: Root, *, agency: str, role: str, name: str, email: str, key: Path, officer_id: str | None
) -> Officer:
    """Register a DO/PDO of `agency` with the public key in `key`."""
    root.config.agency(agency)
    chosen = officer_id or f"{agency}-{slug(name)}"
    fingerprint = _import_officer_key(root, key)
    officer = root.registry.add(Officer(chosen, agency, Role(role), name, email, str(fingerprint), "active"))
    root.audit.append("officer.added", actor="admin", agency=agency, officer=officer.id, fingerprint=str(fingerprint))
    return officer


def rekey_officer(root: Root, officer_id: str, key: Path, *, grace_days: int = 0) -> Officer:
    """Make the key in `key` the officer's; the old one is accepted for submissions `grace_days` more."""
    officer = root.registry.get(officer_id)
    if not officer.active:  # before importing anything: a refusal changes nothing
        raise PolicyError(f"officer {officer_id!r} is revoked: register a new officer instead; nothing changed")
    old = officer.fingerprint
    fingerprint = _import_officer_key(root, key)
    grace_until = datetime.now(UTC) + timedelta(days=grace_days) if grace_days else None
    officer = root.registry.rekey(officer_id, str(fingerprint), grace_until)
    root.audit.append(
        "officer.rekeyed",
        actor="admin",
        agency=officer.agency,
        officer=officer.id,
        fingerprint=str(fingerprint),
        old=old,
        grace_days=grace_days,
    )
    return officer


def export_password(root: Root, agency_id: str, to: Path) -> str:
    """Write the agency's current AES password to a new 0600 file `to`; return its id (never the value)."""
    agency = root.config.agency(agency_id)
    if agency.delivery is not Delivery.AES_ZIP:
        raise UsageError(f"{agency_id} takes OpenPGP delivery and has no password: its officers use their own keys")
    record, password = root.vault.current(agency_id)
    try:
        fd = os.open(to, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise UsageError(f"{str(to)!r} already exists: name a new file (it will be created 0600)") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(password.reveal() + "\n")
    root.audit.append("password.exported", actor="admin", agency=agency_id, password_id=record.id)
    return record.id


def show_password(root: Root, agency_id: str) -> tuple[str, Secret]:
    """The agency's current password, for a terminal only (the caller checks); recorded as shown."""
    agency = root.config.agency(agency_id)
    if agency.delivery is not Delivery.AES_ZIP:
        raise UsageError(f"{agency_id} takes OpenPGP delivery and has no password: its officers use their own keys")
    record, password = root.vault.current(agency_id)
    root.audit.append("password.shown", actor="admin", agency=agency_id, password_id=record.id)
    return record.id, password


def export_gateway_key(root: Root) -> str:
    return root.keyring.export_public(root.gateway_key())


def officers(root: Root, agency: str | None) -> Sequence[Officer]:
    if agency is not None:
        root.config.agency(agency)
    return root.registry.all(agency)


def import_password(root: Root, agency_id: str, source: Path) -> str:
    """Make the password in `source` (a 0600 file) the agency's current one, if it meets the policy."""
    agency = root.config.agency(agency_id)
    if agency.delivery is not Delivery.AES_ZIP:
        raise UsageError(f"{agency_id} takes OpenPGP delivery and has no password")
    stream, _ = open_regular(source)
    with stream:
        if os.fstat(stream.fileno()).st_mode & 0o077:
            raise PolicyError(f"{str(source)!r} is readable by others: chmod 600 it (it holds a password)")
        password = Secret(stream.read(4096).decode("utf-8").strip())
    check_password(password, PasswordPolicy(min_length=root.config.passwords.min_length))
    with root.changing_vault() as vault:
        record = vault.add(agency_id, password, datetime.now(UTC))
    root.audit.append("password.imported", actor="admin", agency=agency_id, password_id=record.id)
    return record.id
