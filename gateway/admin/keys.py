"""Hand out the gateway's public key and the agencies' AES passwords, and take in a chosen password."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from gateway.adapters.fsio import open_regular
from gateway.adapters.passwords import PasswordPolicy
from gateway.adapters.passwords import check as check_password
from gateway.core.errors import PolicyError, UsageError
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


def export_gateway_key(root: Root) -> str:
    """The gateway's current public key, armored, for recipients to verify manifests with."""
    return root.keyring.export_public(root.gateway_key())


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
