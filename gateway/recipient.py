"""The recipient's use case: pull verified, decrypted files (SPEC: pull)."""

from __future__ import annotations

import codecs
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.context import Root
from gateway.crypto_gpg import Keyring
from gateway.crypto_zip import read_aes_zip
from gateway.errors import CryptoError, UsageError
from gateway.fsio import atomic_target, open_regular, sha256_file
from gateway.model import Delivery
from gateway.secret import Secret

log = logging.getLogger(__name__)
CHUNK = 1 << 20
MAX_MANIFEST = 1 << 20


@dataclass(frozen=True, slots=True)
class Pulled:
    package: str
    written: Path | None
    skipped: str | None = None


def pull(
    root: Root,
    agency_id: str,
    to: Path,
    *,
    officer: str | None,
    gnupghome: Path | None,
    password_file: Path | None,
    raw: bool,
    again: bool,
) -> list[Pulled]:
    """Verify, decrypt and write every package for `agency_id` not yet pulled by this puller.

    Raises CryptoError (exit 1) for a package whose manifest, signature, payload or plaintext
    does not check out; nothing of it is left in `to`.
    """
    agency = root.config.agency(agency_id)
    puller, opener = _opener(root, agency_id, agency.delivery, officer, gnupghome, password_file)
    if not to.is_dir():
        raise UsageError(f"{str(to)!r} is not a folder: create it (it receives the decrypted files, mode 0600)")
    results = []
    for payload in root.store.packages(agency_id):
        base = payload.name.removesuffix(".csv.gpg").removesuffix(".zip")
        manifest_path = payload.with_name(base + ".manifest.json")
        if not (manifest_path.exists() and manifest_path.with_name(manifest_path.name + ".sig").exists()):
            results.append(Pulled(base, None, "incomplete: its manifest is not there yet"))
            continue
        if root.journal.pulled(base, agency_id, puller) and not again:
            results.append(Pulled(base, None, f"already pulled by {puller} (use --again)"))
            continue
        manifest = _verified_manifest(root, manifest_path, payload, agency_id)
        written = _write_plaintext(payload, manifest, to, opener, raw=raw, banner=root.config.banner)
        root.journal.record_pull(base, agency_id, puller)
        root.audit.append(
            "package.pulled",
            actor=puller,
            agency=agency_id,
            package=base,
            plaintext_sha256=manifest["plaintext_sha256"],
            raw=raw,
        )
        results.append(Pulled(base, written))
    return results


def _opener(
    root: Root, agency: str, delivery: Delivery, officer: str | None, gnupghome: Path | None, password_file: Path | None
) -> tuple[str, Any]:
    if delivery is Delivery.AES_ZIP:
        if password_file is None:
            raise UsageError(
                f"{agency} receives AES-256 ZIPs: pass --password-file with the password your "
                "admin exported (`keys export --agency ... --password --to FILE`)"
            )
        stream, _ = open_regular(password_file)
        with stream:
            password = Secret(stream.read(4096).decode("utf-8").strip())
        return (officer or f"{agency}-password-holder"), password
    if gnupghome is None and officer is None:
        raise UsageError("pass --officer O (a demo officer) or --gnupghome DIR (your own GnuPG home)")
    if officer is not None:
        registered = root.registry.get(officer)
        if registered.agency != agency:
            raise UsageError(f"{officer} is an officer of {registered.agency}, not {agency}")
        gnupghome = gnupghome or root.demo_home(officer)
    assert gnupghome is not None  # noqa: S101 (narrowed above)
    return (officer or str(gnupghome)), Keyring(gnupghome)


def _verified_manifest(root: Root, manifest_path: Path, payload: Path, agency: str) -> dict[str, Any]:
    check = root.keyring.verify_detached(manifest_path, manifest_path.with_name(manifest_path.name + ".sig"))
    known = {fingerprint for fingerprint, *_ in root.journal.gateway_keys()}
    # a gateway key that has expired since still vouches for what it signed while valid
    if not (check.valid or check.key_expired) or str(check.fingerprint) not in known:
        raise CryptoError(
            f"{manifest_path.name}: the manifest's signature does not verify "
            f"({check.problem or 'not signed by this gateway'}): do not trust this package; tell the admin"
        )
    stream, _ = open_regular(manifest_path)
    with stream:
        manifest: dict[str, Any] = json.loads(stream.read(MAX_MANIFEST))
    if manifest.get("recipient") != agency or manifest.get("payload") != payload.name:
        raise CryptoError(f"{payload.name}: the manifest names another package or recipient: tell the admin")
    if sha256_file(payload) != manifest.get("payload_sha256"):
        raise CryptoError(
            f"{payload.name}: the package does not match its signed manifest (altered or damaged): "
            "nothing was written; tell the admin"
        )
    return manifest


def _write_plaintext(
    payload: Path, manifest: dict[str, Any], to: Path, opener: Any, *, raw: bool, banner: bool
) -> Path:
    package = str(manifest["package"])
    final = to / (package + ".csv")
    decrypted = to / f".{package}.{os.getpid()}.decrypted.tmp"
    try:
        if isinstance(opener, Keyring):
            check = opener.decrypt_file(payload, decrypted)
            if not (check.valid or check.key_expired) or str(check.fingerprint) != manifest["gateway_key"]:
                raise CryptoError(f"{payload.name}: not signed by the gateway key its manifest names: tell the admin")
        else:
            fd = os.open(decrypted, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with payload.open("rb") as source, os.fdopen(fd, "wb") as target:
                read_aes_zip(source, password=opener, target=target)
        if sha256_file(decrypted) != manifest["plaintext_sha256"]:
            raise CryptoError(f"{payload.name}: the decrypted file does not match its manifest: nothing was kept")
        with atomic_target(final) as temp:
            _transcribe(decrypted, temp, manifest, raw=raw, banner=banner)
    finally:
        decrypted.unlink(missing_ok=True)
    return final


def _transcribe(source: Path, target: Path, manifest: dict[str, Any], *, raw: bool, banner: bool) -> None:
    """Copy as is (--raw), or as UTF-8 with the marking as first and last line."""
    with source.open("rb") as reader, target.open("wb") as writer:
        if raw:
            while chunk := reader.read(CHUNK):
                writer.write(chunk)
            return
        encoding = "cp1252" if manifest.get("plaintext_encoding") == "cp1252" else "utf-8-sig"
        decoder = codecs.getincrementaldecoder(encoding)()
        if banner:
            writer.write(f"{manifest['marking']}\r\n".encode())
        last = b""
        while chunk := reader.read(CHUNK):
            text = decoder.decode(chunk).encode()
            writer.write(text)
            last = text[-2:] or last
        writer.write(decoder.decode(b"", final=True).encode())
        if banner:
            writer.write((b"" if last.endswith(b"\n") else b"\r\n") + f"{manifest['marking']}\r\n".encode())
