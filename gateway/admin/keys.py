"""Hand out the gateway's and the officers' public keys and the agencies' AES passwords, and take in a chosen
password."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.adapters.fsio import open_regular
from gateway.adapters.gpg import Fingerprint
from gateway.adapters.passwords import PasswordPolicy
from gateway.adapters.passwords import check as check_password
from gateway.adapters.vault import RELAY_CREDENTIAL
from gateway.core.errors import InputFileError, PolicyError, UsageError
from gateway.core.model import Delivery
from gateway.core.secret import Secret
from gateway.state.root import Root


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


@dataclass(frozen=True, slots=True)
class Exported:
    """Public keys in one armored block, and whose they are (fingerprint, whose or why it is there)."""

    armored: str
    keys: tuple[tuple[str, str], ...]


def export_gateway_keys(root: Root) -> Exported:
    """Every gateway public key a recipient still needs, armored in one block: the current one, and each
    retired one that signed a package still in an inbox (partners verify those manifests with it)."""
    current = str(root.gateway_key())
    needed: list[tuple[str, str]] = []
    for fingerprint, *_ in root.journal.gateway_keys():
        live = root.journal.live_packages(signed_by=fingerprint)
        if fingerprint == current:
            needed.append((fingerprint, "current"))
        elif live:
            needed.append((fingerprint, f"retired, signed {live} live package(s)"))
    needed.sort(key=lambda entry: entry[0] != current)  # the current key first
    armored = root.keyring.export_public_keys([Fingerprint.parse(f) for f, _ in needed])
    return Exported(armored, tuple(needed))


def export_officers(root: Root, agency_id: str | None) -> Exported:
    """The active officers' public keys (of `agency_id`, or of every agency), armored in one block from the
    gateway's keyring, so partners can check a sender's own signature with plain `gpg --verify`.

    Raises UsageError for an agency not in gateway.toml; PolicyError if it has no active officer.
    """
    if agency_id is not None:
        root.config.agency(agency_id)
    active = [o for o in root.registry.all(agency_id) if o.active]
    if not active:
        where = f"{agency_id} has" if agency_id else "the register has"
        raise PolicyError(f"{where} no active officer: nothing to export (register one with `officers add`)")
    armored = root.keyring.export_public_keys([Fingerprint.parse(o.fingerprint) for o in active])
    return Exported(armored, tuple((o.fingerprint, f"{o.id} ({o.role.value} of {o.agency})") for o in active))


def read_password_file(source: Path) -> Secret:
    """The password in `source`, a 0600 file holding only it (a trailing newline dropped).

    Raises PolicyError for a file others may read, InputFileError for one that is not a short
    UTF-8 text, UsageError (from open_regular) for one that is missing or not a regular file.
    """
    stream, _ = open_regular(source)
    with stream:
        if os.fstat(stream.fileno()).st_mode & 0o077:
            raise PolicyError(f"{str(source)!r} is readable by others: chmod 600 it (it holds a password)")
        raw = stream.read(4097)
    if len(raw) > 4096:
        raise InputFileError(f"{str(source)!r} is longer than a password: give a file holding only the password")
    try:
        return Secret(raw.decode("utf-8").strip())
    except UnicodeDecodeError:
        raise InputFileError(f"{str(source)!r} is not UTF-8 text: give a file holding only the password") from None


def set_relay_password(root: Root, source: Path) -> str:
    """Keep the password in `source` (a 0600 file) in the vault as the [smtp.relay] login's; return the login."""
    relay = root.config.smtp_relay
    if relay is None or not relay.user:
        raise UsageError('gateway.toml has no [smtp.relay] user: add the relay\'s login there (user = "...") first')
    password = read_password_file(source)
    if not password:
        raise InputFileError(f"{str(source)!r} is empty: give a file holding the relay password")
    with root.changing_vault() as vault:
        vault.set_credential(RELAY_CREDENTIAL, password)
    root.audit.append("relay.password_set", actor="admin", user=relay.user)
    return relay.user


def import_password(root: Root, agency_id: str, source: Path) -> str:
    """Make the password in `source` (a 0600 file) the agency's current one, if it meets the policy."""
    agency = root.config.agency(agency_id)
    if agency.delivery is not Delivery.AES_ZIP:
        raise UsageError(f"{agency_id} takes OpenPGP delivery and has no password")
    password = read_password_file(source)
    check_password(password, PasswordPolicy(min_length=root.config.passwords.min_length))
    with root.changing_vault() as vault:
        record = vault.add(agency_id, password, datetime.now(UTC))
    root.audit.append("password.imported", actor="admin", agency=agency_id, password_id=record.id)
    return record.id
