"""`iom-gateway init`: create a gateway root, its gateway key and vault (and, with --demo, the demo partnership)."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.adapters.config import CONFIG_NAME
from gateway.adapters.fsio import atomic_write_bytes, private_dirs
from gateway.adapters.gpg import Fingerprint, Keyring, Purpose
from gateway.adapters.passwords import generate
from gateway.adapters.store import INBOX
from gateway.adapters.vault import Vault
from gateway.core.errors import GatewayError, UsageError
from gateway.core.model import Delivery
from gateway.exchange.intake import OUTBOX
from gateway.state.registry import Officer, Role, slug
from gateway.state.root import KEYS, QUARANTINE, SAMPLES, Root

log = logging.getLogger(__name__)
SOURCE = Path(__file__).resolve().parents[2]
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
