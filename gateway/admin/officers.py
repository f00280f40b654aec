"""The officer register: add, re-key and list the Designated Officers who send and receive, and set
the SSH public key each one connects with."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.adapters.fsio import open_regular
from gateway.adapters.gpg import Fingerprint
from gateway.adapters.passwords import PasswordPolicy, hash_login
from gateway.adapters.passwords import check as check_password
from gateway.admin.keys import read_password_file
from gateway.core.errors import InputFileError, PolicyError
from gateway.core.sshkey import MAX_SSH_KEY_BYTES, SshKey, parse_ssh_key
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


def read_ssh_key(path: Path) -> SshKey:
    """The one SSH public key in the file `path`; a refusal names the rule (see core/sshkey)."""
    stream, size = open_regular(path)
    with stream:
        if size > MAX_SSH_KEY_BYTES:
            raise InputFileError(
                f"{str(path)!r} is {size:,} bytes: an SSH public key file is one line of a few KB; give the .pub file"
            )
        data = stream.read(MAX_SSH_KEY_BYTES + 1)  # one past: parse_ssh_key refuses a file that grew meanwhile
    return parse_ssh_key(data, str(path))


def add_officer(
    root: Root,
    *,
    agency: str,
    role: str,
    name: str,
    email: str,
    key: Path,
    officer_id: str | None,
    ssh_key: Path | None = None,
) -> Officer:
    """Register a DO/PDO of `agency` with the OpenPGP public key in `key` and the SSH one in `ssh_key`."""
    root.config.agency(agency)
    chosen = officer_id or f"{agency}-{slug(name)}"
    ssh = read_ssh_key(ssh_key) if ssh_key is not None else None  # before the keyring: a refusal changes nothing
    fingerprint = _import_officer_key(root, key)
    officer = root.registry.add(
        Officer(
            chosen,
            agency,
            Role(role),
            name,
            email,
            str(fingerprint),
            "active",
            ssh_key=ssh.line if ssh else None,
            ssh_fingerprint=ssh.fingerprint if ssh else None,
        )
    )
    root.audit.append("officer.added", actor="admin", agency=agency, officer=officer.id, fingerprint=str(fingerprint))
    if ssh is not None:
        _audit_ssh_key(root, officer, ssh, old=None)
    return officer


def set_ssh_key(root: Root, officer_id: str, path: Path) -> tuple[Officer, bool]:
    """Make the SSH public key in `path` the officer's (replacing any); return the officer and whether
    anything changed (the same key again changes nothing and records nothing)."""
    officer = root.registry.get(officer_id)
    if not officer.active:  # before reading the file: the revocation is the answer, whatever the key
        raise PolicyError(f"officer {officer_id!r} is revoked: a revoked officer gets no SSH key; nothing changed")
    ssh = read_ssh_key(path)
    if officer.ssh_fingerprint == ssh.fingerprint:
        return officer, False
    updated = root.registry.set_ssh_key(officer_id, ssh.line, ssh.fingerprint)
    _audit_ssh_key(root, updated, ssh, old=officer.ssh_fingerprint)
    return updated, True


def _audit_ssh_key(root: Root, officer: Officer, ssh: SshKey, *, old: str | None) -> None:
    root.audit.append(
        "officer.ssh_key.set",
        actor="admin",
        agency=officer.agency,
        officer=officer.id,
        ssh_fingerprint=ssh.fingerprint,
        key_type=ssh.type,
        bits=ssh.bits,
        old=old,
    )


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


def set_password(root: Root, officer_id: str, source: Path) -> Officer:
    """Make the password in `source` (a 0600 file) the one `officer_id` logs in to the SMTP intake
    with, if it meets the partnership's policy. Only its scrypt hash is kept; never printed or logged."""
    officer = root.registry.get(officer_id)
    if not officer.active:
        raise PolicyError(f"{officer_id} is revoked: only an active officer logs in; nothing changed")
    password = read_password_file(source)
    check_password(password, PasswordPolicy(min_length=root.config.passwords.min_length))
    root.registry.set_login(officer.id, hash_login(password))
    root.audit.append("officer.password_set", actor="admin", agency=officer.agency, officer=officer.id)
    return officer


def officers(root: Root, agency: str | None) -> Sequence[Officer]:
    """Every registered officer, or those of `agency` (a UsageError if it is not configured)."""
    if agency is not None:
        root.config.agency(agency)
    return root.registry.all(agency)
