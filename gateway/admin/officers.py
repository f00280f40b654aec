"""The officer register: add, re-key and list the Designated Officers who send and receive."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.adapters.fsio import open_regular
from gateway.adapters.gpg import Fingerprint
from gateway.core.errors import InputFileError, PolicyError
from gateway.state.registry import Officer, Role, slug
from gateway.state.root import Root

MAX_KEY_BYTES = 1 << 20


def _read_key(path: Path) -> bytes:
    stream, size = open_regular(path)
    with stream:
        if size > MAX_KEY_BYTES:
            raise InputFileError(f"{str(path)!r} is {size:,} bytes: a public key file is a few KB; check the file")
        return stream.read()


def _import_officer_key(root: Root, path: Path) -> Fingerprint:
    found = root.keyring.import_public(_read_key(path))
    if len(found) != 1:
        raise InputFileError(f"{str(path)!r} holds {len(found)} keys: give one officer's public key")
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


def officers(root: Root, agency: str | None) -> Sequence[Officer]:
    """Every registered officer, or those of `agency` (a UsageError if it is not configured)."""
    if agency is not None:
        root.config.agency(agency)
    return root.registry.all(agency)
