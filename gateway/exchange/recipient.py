"""The recipient's use case: pull verified, decrypted files (SPEC: pull).

Everything `pull` trusts it reads once: the manifest into memory (capped), its signature, the
payload through one descriptor. It verifies those bytes, parses those bytes, and names what it
writes after the package's own listed name, never after a manifest field. Plaintext only ever
lives in files without a name (O_TMPFILE) until it is verified, so a killed pull leaves none.
A package that fails is reported and the others are still pulled.
"""

from __future__ import annotations

import codecs
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gateway.adapters.aeszip import read_aes_zip
from gateway.adapters.fsio import (
    Folder,
    anonymous_file,
    is_plain_name,
    open_regular,
    publish,
    read_chunks,
    remove_stale_temps,
    sha256_fd,
)
from gateway.adapters.gpg import MAX_SIGNATURE_BYTES, Fingerprint, Keyring, Purpose
from gateway.core import faults
from gateway.core.errors import CryptoError, GatewayError, InputFileError, UsageError
from gateway.core.manifest import MAX_MANIFEST_BYTES, binary_signature
from gateway.core.model import Delivery
from gateway.core.secret import Secret
from gateway.state.root import Root

log = logging.getLogger(__name__)
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Pulled:
    package: str
    written: Path | None
    skipped: str | None = None
    failed: str | None = None


@dataclass(frozen=True, slots=True)
class _Manifest:
    """The fields `pull` relies on, from a manifest whose signature was checked over these very bytes."""

    package: str
    payload: str
    marking: str
    encoding: str | None
    payload_sha256: str
    plaintext_sha256: str
    plaintext_bytes: int
    gateway_key: Fingerprint
    sender_fingerprint: Fingerprint
    sender_signature: bytes


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

    A package whose manifest, signatures, payload or plaintext does not check out is returned as
    failed (nothing of it is left in `to`) and the others are still pulled.
    """
    agency = root.config.agency(agency_id)
    puller, opener = _opener(root, agency_id, agency.delivery, officer, gnupghome, password_file)
    if not to.is_dir():
        raise UsageError(f"{str(to)!r} is not a folder: create it (it receives the decrypted files, mode 0600)")
    remove_stale_temps(to)
    results = []
    for payload in root.store.packages(agency_id):
        base = payload.name.removesuffix(".csv.gpg").removesuffix(".zip")
        if root.journal.pulled(base, agency_id, puller) and not again:
            results.append(Pulled(base, None, f"already pulled by {puller} (use --again)"))
            continue
        try:
            results.append(_pull_one(root, agency_id, payload.name, base, to, opener, puller, raw=raw))
        except GatewayError as exc:
            log.warning("refused package=%r agency=%s: %s", base, agency_id, exc.message)
            results.append(Pulled(base, None, failed=exc.message))
    return results


def _pull_one(
    root: Root, agency: str, payload: str, base: str, to: Path, opener: Keyring | Secret, puller: str, *, raw: bool
) -> Pulled:
    if not is_plain_name(payload) or base.startswith("."):
        raise CryptoError(f"{payload!r} is not a package name the gateway makes: tell the admin")
    with root.store.open(agency) as folder:
        document = _read_capped(folder, base + ".manifest.json", MAX_MANIFEST_BYTES)
        signature = _read_capped(folder, base + ".manifest.json.sig", MAX_SIGNATURE_BYTES)
        if document is None or signature is None:
            return Pulled(base, None, "incomplete: its manifest is not there yet")
        manifest = _verified_manifest(root, document, signature, agency, payload, base)
        written = _write_plaintext(root, folder, manifest, to, opener, raw=raw)
    root.journal.record_pull(base, agency, puller)
    root.audit.append(
        "package.pulled", actor=puller, agency=agency, package=base, plaintext_sha256=manifest.plaintext_sha256, raw=raw
    )
    return Pulled(base, written)


def _opener(
    root: Root, agency: str, delivery: Delivery, officer: str | None, gnupghome: Path | None, password_file: Path | None
) -> tuple[str, Keyring | Secret]:
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


def _read_capped(folder: Folder, name: str, limit: int) -> bytes | None:
    """The bytes of `name`, read once; None if it is not there; CryptoError if it is odd or too large."""
    try:
        return folder.read(name, limit)
    except InputFileError as exc:
        raise CryptoError(f"{exc.message}, so not made by the gateway: do not trust it; tell the admin") from None


def _verified_manifest(
    root: Root, document: bytes, signature: bytes, agency: str, payload: str, base: str
) -> _Manifest:
    """Check the gateway's signature over `document`, then parse those same bytes."""
    check = root.keyring.verify_bytes(document, signature, purpose=Purpose.MANIFEST)
    known = {fingerprint for fingerprint, *_ in root.journal.gateway_keys()}
    # a gateway key that has expired since still vouches for what it signed while valid
    if not (check.valid or check.key_expired) or str(check.fingerprint) not in known:
        raise CryptoError(
            f"{base}.manifest.json: the manifest's signature does not verify "
            f"({check.problem or 'not signed by this gateway'}): do not trust this package; tell the admin"
        )
    manifest = _parse(document, base)
    if manifest.package != base or manifest.payload != payload or _field(_json(document), "recipient") != agency:
        raise CryptoError(f"{payload}: the manifest names another package or recipient: tell the admin")
    return manifest


def _json(document: bytes) -> dict[str, Any]:
    try:
        data = json.loads(document)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise CryptoError("the manifest is not a JSON object: it was not made by the gateway; tell the admin")
    return data


def _field(data: dict[str, Any], name: str, kind: type = str) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CryptoError(
            f"the manifest's {name} is missing or malformed: it was not made by the gateway; tell the admin"
        )
    return value


def _parse(document: bytes, base: str) -> _Manifest:
    data = _json(document)
    sender = _field(data, "sender", dict)
    encoding = data.get("plaintext_encoding")
    try:
        return _Manifest(
            package=_field(data, "package"),
            payload=_field(data, "payload"),
            marking=_field(data, "marking"),
            encoding=encoding if isinstance(encoding, str) else None,
            payload_sha256=_field(data, "payload_sha256"),
            plaintext_sha256=_field(data, "plaintext_sha256"),
            plaintext_bytes=_field(data, "plaintext_bytes", int),
            gateway_key=Fingerprint.parse(_field(data, "gateway_key")),
            sender_fingerprint=Fingerprint.parse(_field(sender, "fingerprint")),
            sender_signature=binary_signature(_field(data, "sender_signature").encode("ascii", "replace")),
        )
    except ValueError as exc:
        raise CryptoError(
            f"{base}: the sender's signature in the manifest is unreadable ({exc}): tell the admin"
        ) from None


def _write_plaintext(
    root: Root, folder: Folder, manifest: _Manifest, to: Path, opener: Keyring | Secret, *, raw: bool
) -> Path:
    """Decrypt into a file with no name, check it against the manifest and the sender's own signature,
    and only then give it its name in `to`."""
    with folder.open_file(manifest.payload) as payload, anonymous_file(to) as plain:
        if isinstance(opener, Keyring):
            opener.decrypt(payload.chunks(), plain, signers={manifest.gateway_key}, name=manifest.payload)
            if payload.digest != manifest.payload_sha256:
                raise CryptoError(_altered(manifest.payload))
        else:
            if payload.hash() != manifest.payload_sha256:
                raise CryptoError(_altered(manifest.payload))
            read_aes_zip(payload.stream(), password=opener, target=plain, max_bytes=manifest.plaintext_bytes)
        if _sha256(plain) != manifest.plaintext_sha256:
            raise CryptoError(f"{manifest.payload}: the decrypted file does not match its manifest: nothing was kept")
        _check_sender(root, manifest, plain)
        if raw:
            written = publish(plain, to, manifest.package + ".csv")
        else:
            with anonymous_file(to) as text:
                _transcribe(plain, text, manifest, banner=root.config.banner)
                written = publish(text, to, manifest.package + ".csv")
    faults.reached("pull.published")
    _write_marking(to, manifest)
    return written


def _altered(payload: str) -> str:
    return (
        f"{payload}: the package does not match its signed manifest (altered or damaged): nothing was written;"
        " tell the admin"
    )


def _check_sender(root: Root, manifest: _Manifest, plain: BinaryIO) -> None:
    """The officer's own signature must cover exactly these bytes (end to end, not only the gateway's word)."""
    check = root.keyring.verify_detached(read_chunks(plain.fileno()), manifest.sender_signature)
    if not (check.intact and check.fingerprint == manifest.sender_fingerprint):
        raise CryptoError(
            f"{manifest.payload}: the sending officer's signature does not cover these bytes "
            f"({check.problem or 'signed by another key than the manifest names'}): nothing was kept; tell the admin"
        )


def _sha256(handle: BinaryIO) -> str:
    handle.flush()
    return sha256_fd(handle.fileno())


MARKING_SUFFIX = ".marking.txt"


def _write_marking(to: Path, manifest: _Manifest) -> None:
    """Write the sidecar NAME.marking.txt (0600): the marking for whoever handles NAME.csv, which stays a
    plain CSV. Written only after the CSV is published: a pull killed in between leaves a CSV still
    marked by its name and records no pull, so the next pull writes both again."""
    with anonymous_file(to) as sidecar:
        sidecar.write(f"{manifest.marking}\n".encode())
        publish(sidecar, to, manifest.package + MARKING_SUFFIX)


def _transcribe(source: BinaryIO, target: BinaryIO, manifest: _Manifest, *, banner: bool) -> None:
    """Copy as UTF-8 (without a byte order mark, so the first cell is the first header), with the marking
    as first and last line only if `banner` (opt-in: programs misread such a file)."""
    encoding = "cp1252" if manifest.encoding == "cp1252" else "utf-8-sig"
    decoder = codecs.getincrementaldecoder(encoding)()
    if banner:
        target.write(f"{manifest.marking}\r\n".encode())
    last = b""
    for chunk in read_chunks(source.fileno()):
        text = decoder.decode(chunk).encode()
        target.write(text)
        last = text[-2:] or last
    target.write(decoder.decode(b"", final=True).encode())
    if banner:
        target.write((b"" if last.endswith(b"\n") else b"\r\n") + f"{manifest.marking}\r\n".encode())
