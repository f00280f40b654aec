"""Key management: list every key and password, and rotate them without stranding a live package.

Old keys and passwords stay, marked retired, for as long as a package made with them lives
(`purge` removes them after); `--reencrypt` moves live packages to the new secret at once.
Every operation is an audit event.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from gateway.adapters.aeszip import read_aes_zip, write_aes_zip
from gateway.adapters.fsio import OpenFile, atomic_write_bytes, open_regular, sha256_file
from gateway.adapters.gpg import MAX_SIGNATURE_BYTES, Fingerprint, Keyring, Purpose, strip_recipients
from gateway.adapters.passwords import generate
from gateway.admin.init import DEMO_COMMENT, gateway_identity
from gateway.core import faults
from gateway.core.errors import CryptoError, PolicyError, UsageError
from gateway.core.manifest import MAX_MANIFEST_BYTES, canonical_json
from gateway.core.model import Agency, Delivery
from gateway.core.secret import Secret
from gateway.exchange.envelope import reseal_zip, strip
from gateway.exchange.recover import REPACK_SUFFIX, finish_repacks
from gateway.state.journal import DeliveryRecord
from gateway.state.registry import Officer
from gateway.state.root import Root
from gateway.state.subjects import SubjectIndex, new_index_key

CURRENT, RETIRED, REVOKED = "current", "retired", "revoked"


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One key or password the gateway knows: never its value."""

    kind: str  # gateway | officer | password | vault
    id: str
    owner: str
    created: str | None
    expires: str | None
    status: str
    live_packages: int

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def list_keys(root: Root) -> list[KeyEntry]:
    """Every gateway key, officer key, AES password (by id) and the vault, with what depends on it."""
    entries = [_gateway_entry(root, *row) for row in root.journal.gateway_keys()]
    entries += _officer_entries(root)
    if root.vault_path.exists():
        records = root.vault.records()
        for record in records:
            entries.append(
                KeyEntry(
                    "password",
                    record.id,
                    record.agency,
                    record.created.isoformat(timespec="seconds"),
                    None,
                    record.status,
                    root.journal.live_packages(key_id_like=record.id),
                )
            )
        changed = datetime.fromtimestamp(root.vault_path.stat().st_mtime, UTC).isoformat(timespec="seconds")
        entries.append(KeyEntry("vault", "keys/vault.json", "gateway", changed, None, CURRENT, len(records)))
    return entries


def _gateway_entry(root: Root, fingerprint: str, created: str, expires: str | None, status: str) -> KeyEntry:
    live = root.journal.live_packages(signed_by=fingerprint) + root.journal.quarantined_with(fingerprint)
    return KeyEntry("gateway", fingerprint, "gateway", created, expires, status, live)


def _officer_entries(root: Root) -> list[KeyEntry]:
    entries = []
    for officer in root.registry.all():
        for fingerprint, added, retired in root.registry.keys_of(officer.id):
            if not officer.active:
                status = REVOKED
            elif fingerprint == officer.fingerprint and retired is None:
                status = CURRENT
            else:
                status = RETIRED
            try:
                info = root.keyring.key(Fingerprint.parse(fingerprint))
                expires = info.expires.isoformat(timespec="seconds") if info.expires else None
            except CryptoError:
                expires = None
            live = root.journal.live_packages(key_id_like=fingerprint)
            entries.append(
                KeyEntry("officer", fingerprint, f"{officer.id} ({officer.agency})", added, expires, status, live)
            )
    return entries


@dataclass(frozen=True, slots=True)
class Rotated:
    kind: str
    old: str
    new: str
    reencrypted: int = 0


def rotate_gateway(root: Root, algorithm: str = "ed25519") -> Rotated:
    """Make a new gateway key current for signing; the old one stays to verify (and open quarantine) until
    what it made expires. Demo officers' homes get the new public key, as real recipients get it with
    `keys export --gateway`."""
    old = root.journal.current_gateway_key() or ""
    old_ids = root.keyring.key(Fingerprint.parse(old)).user_ids if old else ()
    # named after [partnership] name as it is now, as init names it; a demo's key stays marked as one
    name, address, comment = gateway_identity(root.config.partnership, demo=any(DEMO_COMMENT in u for u in old_ids))
    new = root.keyring.generate(name, address, algorithm=algorithm, comment=comment)
    expires = root.keyring.key(new).expires
    root.journal.add_gateway_key(str(new), expires.isoformat() if expires else None)
    public = root.keyring.export_public(new).encode()
    demo_homes = root.path / "keys" / "demo-officers"
    for home in sorted(demo_homes.iterdir()) if demo_homes.is_dir() else []:
        Keyring(home).import_public(public)
    root.audit.append("gateway.key.rotated", actor="admin", old=old, new=str(new))
    root.audit.checkpoint(lambda data: root.keyring.sign_bytes(data, new, purpose=Purpose.AUDIT), str(new))
    return Rotated("gateway", old, str(new))


@dataclass(frozen=True, slots=True)
class SarKeyRotated:
    old: str | None  # the old key's id (None: the root had none)
    new: str
    deleted: int  # index entries made under the old key: no look-up could ever match them again
    kind: str = "sar"


def rotate_sar_key(root: Root) -> SarKeyRotated:
    """Make a new SAR key current and delete the subject access index made under the old one.

    Look-ups then find nothing delivered before the rotation. The key goes first (a crash in between
    leaves entries no look-up can match, which `purge` removes). Raises ConfigError/VaultError if the
    vault cannot be opened or made.
    """
    key, old = new_index_key(root)
    deleted = SubjectIndex(root.db).drop_other_keys(key.id)
    root.audit.append("sar.key.rotated", actor="admin", old=old or "", new=key.id, entries_deleted=deleted)
    return SarKeyRotated(old, key.id, deleted)


def rotate_agency(root: Root, agency_id: str, *, reencrypt: bool) -> Rotated:
    """Make a newly generated password current for an AES-ZIP agency.

    Without `reencrypt` the old ones stay (by id) for the packages made with them. With it, every
    package not yet pulled is re-packed with the new password and the old passwords are deleted at
    once. Raises PolicyError (exit 1, nothing changed) for an unknown or OpenPGP agency.
    """
    agency = _aes_agency(root, agency_id)
    finish_repacks(root)
    with root.changing_vault() as vault:
        old, _ = vault.current(agency.id)
        new = vault.add(agency.id, generate(root.config.passwords.generated_length), datetime.now(UTC))
    root.audit.append("password.rotated", actor="admin", agency=agency.id, old=old.id, new=new.id)
    if not reencrypt:
        return Rotated("password", old.id, new.id)
    repacked = [_repack(root, delivery, new.id) for delivery in root.journal.unpulled_deliveries(agency.id)]
    with root.changing_vault() as vault:
        needed = {d.key_id for d in root.journal.unpulled_deliveries(agency.id)}
        doomed = {
            r.id for r in vault.records() if r.agency == agency.id and r.status != "current" and r.id not in needed
        }
        removed = [r.id for r in vault.remove(doomed)]
    root.audit.append(
        "password.reencrypted", actor="admin", agency=agency.id, packages=repacked, password_ids_removed=removed
    )
    return Rotated("password", old.id, new.id, len(repacked))


def _aes_agency(root: Root, agency_id: str) -> Agency:
    agency = root.config.agencies.get(agency_id)
    if agency is None:
        known = ", ".join(sorted(root.config.agencies))
        raise UsageError(f"no agency {agency_id!r} in gateway.toml (agencies: {known}): nothing changed")
    if agency.delivery is not Delivery.AES_ZIP:
        raise UsageError(
            f"{agency_id} takes OpenPGP delivery and has no password to rotate (its officers' keys are "
            "changed with `officers rekey`): nothing changed"
        )
    return agency


def _repack(root: Root, delivery: DeliveryRecord, new_id: str) -> str:
    """Re-encrypt one AES-ZIP package with password `new_id`: the plaintext only ever passes through a pipe."""
    old_password, new_password = root.vault.password(delivery.key_id), root.vault.password(new_id)

    def write(payload: OpenFile, target: BinaryIO, plaintext_bytes: int) -> None:
        reader_r, writer_w = os.pipe()
        failure: list[BaseException] = []

        def unpack() -> None:
            try:
                with os.fdopen(writer_w, "wb") as pipe:
                    read_aes_zip(payload.stream(), password=old_password, target=pipe, max_bytes=plaintext_bytes)
            except BaseException as exc:  # handed to the main thread, which re-raises it
                failure.append(exc)

        thread = threading.Thread(target=unpack, name="repack")
        thread.start()
        try:
            with os.fdopen(reader_r, "rb") as pipe:
                write_aes_zip(pipe, target, member=f"{delivery.package}.csv", password=new_password)
        finally:
            thread.join()
        if failure:
            raise failure[0]

    name = f"{delivery.recipient}/{delivery.package}"
    return _restage(
        root, delivery, ".zip", write, new_id, lambda sealed: reseal_zip(sealed, old_password, new_password, name)
    )


def _strip(root: Root, delivery: DeliveryRecord, key_ids: frozenset[str], remaining: str) -> str:
    """Drop the revoked officer's session-key packets from one OpenPGP package (no plaintext needed)."""

    def write(payload: OpenFile, target: BinaryIO, _plaintext_bytes: int) -> None:
        strip_recipients(payload.stream(), target, key_ids)

    return _restage(root, delivery, ".csv.gpg", write, remaining, lambda sealed: strip(sealed, key_ids))


def _restage(
    root: Root,
    delivery: DeliveryRecord,
    suffix: str,
    write: Callable[[OpenFile, BinaryIO, int], None],
    key_id: str,
    reseal: Callable[[str], str],
) -> str:
    """Write a package's new payload, manifest and signature under .NAME.repack beside the old ones (fsynced),
    record them in the journal, and only then rename them over the old (a crash is finished by `recover`).
    A sealed sender envelope in the manifest (PGP/MIME) is sealed anew by `reseal`, as the payload was.

    The old manifest counts only if the gateway's signature over it holds, and the payload only if it
    is the one that manifest names: the gateway never re-signs what someone put into an inbox.
    Raises CryptoError naming the package otherwise.
    """
    folder = root.store.folder(delivery.recipient)
    payload = folder / f"{delivery.package}{suffix}"
    manifest_path = folder / f"{delivery.package}.manifest.json"
    manifest = _signed_manifest(root, delivery)
    staged_payload = folder / f".{payload.name}{REPACK_SUFFIX}"
    with root.store.open(delivery.recipient) as inbox, inbox.open_file(payload.name) as sealed:
        if sealed.hash() != manifest.get("payload_sha256"):
            raise CryptoError(f"{delivery.recipient}/{payload.name} is not the package its manifest names: {_ALTERED}")
        with _private(staged_payload) as target:
            write(sealed, target, int(manifest.get("plaintext_bytes", 0)))
    gateway = root.gateway_key()
    method = manifest["encryption"]["method"]
    # everything else stays as sealed, the audit witness too: it says what the log held at the sealing
    manifest |= {"payload_sha256": sha256_file(staged_payload), "encryption": {"method": method, "key_id": key_id}}
    if isinstance(manifest.get("sender_envelope"), str):
        manifest["sender_envelope"] = reseal(manifest["sender_envelope"])
    if suffix == ".zip":  # an OpenPGP payload keeps the signature of the key that made it
        manifest["gateway_key"] = str(gateway)
    document = canonical_json(manifest)
    staged_manifest = folder / f".{manifest_path.name}{REPACK_SUFFIX}"
    staged_signature = folder / f".{manifest_path.name}.sig{REPACK_SUFFIX}"
    for path, data in (
        (staged_manifest, document),
        (staged_signature, root.keyring.sign_bytes(document, gateway, purpose=Purpose.MANIFEST)),
    ):
        with _private(path) as target:
            target.write(data)
    names = [payload.name, manifest_path.name, manifest_path.name + ".sig"]
    root.journal.repack_ready(delivery, key_id, str(gateway), names)
    faults.reached("repack.recorded")
    finish_repacks(root)
    return f"{delivery.recipient}/{delivery.package}"


_ALTERED = "it was altered in the inbox; it was left as it is, tell whoever can write there"


def _signed_manifest(root: Root, delivery: DeliveryRecord) -> dict[str, Any]:
    """The package's manifest, read once, if the gateway signed those very bytes; raise CryptoError otherwise."""
    name = f"{delivery.package}.manifest.json"
    document = root.store.read(delivery.recipient, name, MAX_MANIFEST_BYTES)
    signature = root.store.read(delivery.recipient, name + ".sig", MAX_SIGNATURE_BYTES)
    known = {fingerprint for fingerprint, *_ in root.journal.gateway_keys()}
    check = root.keyring.verify_bytes(document or b"", signature or b"", purpose=Purpose.MANIFEST)
    if document is None or not (check.valid or check.key_expired) or str(check.fingerprint) not in known:
        raise CryptoError(f"{delivery.recipient}/{name}'s gateway signature does not verify: {_ALTERED}")
    manifest: dict[str, Any] = json.loads(document)
    return manifest


def revoke_officer(root: Root, officer_id: str, *, reencrypt: bool) -> tuple[Officer, list[str]]:
    """Revoke an officer at once: submissions signed by them are refused from now on.

    With `reencrypt`, packages not yet pulled that were encrypted to them are stripped of their
    session key, so only the agency's other officers (of those the package was made for) can open
    them. Raises UsageError (exit 2) for an unknown officer, PolicyError (exit 1) for one already
    revoked or a package no other active officer could open; either way nothing changed.
    """
    officer = _registered(root, officer_id)
    if not officer.active and not reencrypt:
        raise PolicyError(f"officer {officer_id!r} is already revoked: nothing changed")
    affected = []
    if reencrypt:
        others = {o.fingerprint for o in root.registry.all(officer.agency) if o.active and o.id != officer.id}
        for delivery in root.journal.unpulled_deliveries(officer.agency):
            recipients = set(delivery.key_id.split(","))
            if delivery.method != Delivery.GPG.value or officer.fingerprint not in recipients:
                continue
            if not recipients & others:
                raise PolicyError(
                    f"package {delivery.package} was made for {officer.id} alone among {officer.agency}'s active "
                    "officers: register or keep another officer, or let it expire; nothing changed"
                )
            affected.append((delivery, ",".join(sorted(recipients - {officer.fingerprint}))))
    if officer.active:  # an earlier revoke --reencrypt that stopped half-way is simply finished
        root.registry.revoke(officer.id)
        root.audit.append("officer.revoked", actor="admin", agency=officer.agency, officer=officer.id)
    key_ids = root.keyring.key_ids(Fingerprint.parse(officer.fingerprint))
    done = [_strip(root, delivery, key_ids, remaining) for delivery, remaining in affected]
    if reencrypt:
        root.audit.append(
            "officer.reencrypted", actor="admin", agency=officer.agency, officer=officer.id, packages=done
        )
    return root.registry.get(officer.id), done


def _registered(root: Root, officer_id: str) -> Officer:
    try:
        return root.registry.get(officer_id)
    except UsageError as exc:
        raise UsageError(exc.message + "; nothing changed") from None


@contextmanager
def _private(path: Path) -> Iterator[BinaryIO]:
    """A new 0600 file, fsynced on success and removed on failure."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def rotate_vault(root: Root, new_passphrase_file: Path) -> str:
    """Re-encrypt the vault under the passphrase in `new_passphrase_file` (a 0600 file).

    A crash leaves the old vault or the new one, never neither. If the passphrase comes from
    [vault] passphrase_file, that file is replaced too (a crash in between is finished on the next
    open); from the environment or a systemd credential, the admin must update it: the returned
    text says so. Raises VaultError for a wrong current passphrase, PolicyError for a weak or
    readable new one; nothing changes then.
    """
    new = _read_private(new_passphrase_file)
    source = root.config.vault_passphrase_source()
    pending = root.pending_passphrase_file if source == "file" else None
    with root.changing_vault() as vault:
        if pending is not None:
            atomic_write_bytes(pending, new.reveal().encode() + b"\n")  # record, then act
        vault.rekey(new)
        faults.reached("vault.rekeyed")
        if pending is not None and root.config.vault_passphrase_file is not None:
            os.replace(pending, root.config.vault_passphrase_file)
    root.audit.append("vault.rotated", actor="admin", passphrase_source=source)
    if source == "file":
        return f"the vault and {root.config.vault_passphrase_file} now use the new passphrase"
    where = "IOM_GATEWAY_VAULT_PASSPHRASE" if source == "environment" else "the systemd credential vault-passphrase"
    return (
        f"the vault now uses the new passphrase: put it in {where} now (e.g. /etc/iom-gateway/vault-passphrase) "
        "and restart the gateway; until then it cannot open the vault and defers AES-ZIP deliveries"
    )


def _read_private(path: Path) -> Secret:
    stream, _ = open_regular(path)
    with stream:
        if os.fstat(stream.fileno()).st_mode & 0o077:
            raise PolicyError(f"{str(path)!r} is readable by others: chmod 600 it (it holds a passphrase)")
        return Secret(stream.read(4096).decode("utf-8").strip())
