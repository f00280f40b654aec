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
from datetime import UTC, datetime
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
from gateway.core.errors import CryptoError, GatewayError, InputFileError, UsageError
from gateway.core.manifest import MAX_MANIFEST_BYTES, binary_signature
from gateway.core.model import Delivery
from gateway.core.receipt import Receipt
from gateway.core.secret import Secret
from gateway.state.receipts import Receipts
from gateway.state.root import Root

log = logging.getLogger(__name__)
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Pulled:
    package: str
    written: Path | None
    skipped: str | None = None
    failed: str | None = None
    receipt: Path | None = None  # with --from: the signed receipt to upload to outbox/<agency>/receipts/
    warning: str | None = None  # pulled, but something the recipient should know (no receipt signed)


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


@dataclass(frozen=True, slots=True)
class _Opener:
    """How this recipient opens packages, and who they are to the pulls table and in a receipt.

    `pullers` are the names a previous pull by this recipient is recorded under: the primary
    fingerprints of the secret keys in their GnuPG home (OpenPGP), or `agency:<id>` (AES-ZIP: one
    password per agency). `signer` is the home that signs receipts, if there is one.
    """

    keyring: Keyring | None
    password: Secret | None
    pullers: tuple[str, ...]
    signer: Keyring | None
    officer: str | None = None


@dataclass(frozen=True, slots=True)
class _Checks:
    """What a package's plaintext is checked with: the senders' keys, and the gateway keys the inner
    OpenPGP signature must be by (None: the verified manifest's payload SHA-256 vouches for it)."""

    senders: Keyring
    gateway_keys: frozenset[Fingerprint] | None
    banner: bool


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
    """Verify, decrypt and write every package for `agency_id` not yet pulled by this recipient.

    A package whose manifest, signatures, payload or plaintext does not check out is returned as
    failed (nothing of it is left in `to`) and the others are still pulled.
    """
    agency = root.config.agency(agency_id)
    if not to.is_dir():
        raise UsageError(f"{str(to)!r} is not a folder: create it (it receives the decrypted files, mode 0600)")
    if officer is not None and gnupghome is None:
        gnupghome = _demo_home(root, agency_id, officer)
    opener = _opener(agency_id, agency.delivery, gnupghome, password_file, officer=officer)
    checks = _Checks(root.keyring, None, root.config.banner)
    remove_stale_temps(to)
    results = []
    for payload in root.store.packages(agency_id):
        base = payload.name.removesuffix(".csv.gpg").removesuffix(".zip")
        pullers = _pullers(opener, agency_id, payload.name)
        done = next((who for who in pullers if root.journal.pulled(base, agency_id, who)), None)
        if done is not None and not again:
            results.append(Pulled(base, None, f"already pulled by {done} (use --again)"))
            continue
        try:
            results.append(_pull_one(root, agency_id, payload.name, base, to, opener, checks, raw=raw))
        except GatewayError as exc:
            log.warning("refused package=%r agency=%s: %s", base, agency_id, exc.message)
            results.append(Pulled(base, None, failed=exc.message))
    return results


def _pull_one(
    root: Root, agency: str, payload: str, base: str, to: Path, opener: _Opener, checks: _Checks, *, raw: bool
) -> Pulled:
    if not is_plain_name(payload) or base.startswith("."):
        raise CryptoError(f"{payload!r} is not a package name the gateway makes: tell the admin")
    with root.store.open(agency) as folder:
        document = _read_capped(folder, base + ".manifest.json", MAX_MANIFEST_BYTES)
        signature = _read_capped(folder, base + ".manifest.json.sig", MAX_SIGNATURE_BYTES)
        if document is None or signature is None:
            return Pulled(base, None, "incomplete: its manifest is not there yet")
        manifest = _verified_manifest(root, document, signature, agency, payload, base)
        gateway = _Checks(checks.senders, frozenset({manifest.gateway_key}), checks.banner)
        written, puller = _write_plaintext(folder, manifest, agency, to, opener, gateway, raw=raw)
    root.journal.record_pull(base, agency, puller)
    signer = _signer(opener, puller)
    officer = opener.officer or _officer_of(root, str(signer) if signer is not None else puller)
    root.audit.append(
        "package.pulled",
        actor=officer or puller,
        agency=agency,
        package=base,
        plaintext_sha256=manifest.plaintext_sha256,
        raw=raw,
    )
    made = _receipt(manifest, agency, opener, officer, signer)
    if isinstance(made, str):
        return Pulled(base, written, warning=made)
    receipt, _ = made
    Receipts(root.db).record(receipt)
    root.audit.append(
        "package.received",
        actor=officer or receipt.fingerprint,
        agency=agency,
        package=base,
        officer=officer,
        fingerprint=receipt.fingerprint,
    )
    return Pulled(base, written)


def _officer_of(root: Root, puller: str) -> str | None:
    """The registered officer whose key `puller` is (a fingerprint), if any."""
    if puller.startswith("agency:"):
        return None
    found = root.registry.by_fingerprint(puller, datetime.now(UTC))
    return None if found is None else found.id


def _demo_home(root: Root, agency: str, officer: str) -> Path:
    """The demo GnuPG home of `officer`; UsageError outside a demo root or for another agency's officer."""
    home = root.demo_home(officer)
    if not home.is_dir():
        raise UsageError(
            f"--officer {officer}: this root has no demo key for {officer} ({str(home)!r} is not there), so"
            " --officer works only in a demo root: pull with --gnupghome DIR, your own GnuPG home"
        )
    registered = root.registry.get(officer)
    if registered.agency != agency:
        raise UsageError(f"{officer} is an officer of {registered.agency}, not {agency}")
    return home


def _opener(
    agency: str | None,
    delivery: Delivery | None,
    gnupghome: Path | None,
    password_file: Path | None,
    *,
    officer: str | None = None,
) -> _Opener:
    """How to open `agency`'s packages (with --from, `delivery` is None: each manifest says)."""
    home = _user_home(gnupghome) if gnupghome is not None else None
    password = _password(password_file) if password_file is not None else None
    if delivery is Delivery.AES_ZIP and password is None:
        raise UsageError(
            f"{agency} receives AES-256 ZIPs: pass --password-file with the password your "
            "admin exported (`keys export --agency ... --password --to FILE`)"
        )
    if delivery is Delivery.GPG and home is None:
        raise UsageError("pass --officer O (a demo officer) or --gnupghome DIR (your own GnuPG home)")
    if home is None and password is None:
        raise UsageError("pass --gnupghome DIR (your own GnuPG home) or --password-file F (an AES-ZIP password)")
    listed = home.keys() if home is not None else ()
    secret = [info.fingerprint for info in listed if info.has_secret]
    if home is not None and not secret:
        raise UsageError(
            f"--gnupghome {str(home.home)!r} holds no secret key: give the GnuPG home with your own officer key"
        )
    return _Opener(home, password, tuple(str(fpr) for fpr in secret), home, officer)


def _pullers(opener: _Opener, agency: str, payload: str) -> tuple[str, ...]:
    """Who this recipient is in the pulls table for one package: its keys, or its agency for a ZIP."""
    return (f"agency:{agency}",) if payload.endswith(".zip") else opener.pullers


def _user_home(gnupghome: Path) -> Keyring:
    """The recipient's own GnuPG home: it must exist (pull never makes one)."""
    if not gnupghome.is_dir():
        raise UsageError(
            f"--gnupghome {str(gnupghome)!r} is not a folder: give your existing GnuPG home"
            " (the folder gpg uses, such as ~/.gnupg); pull creates none"
        )
    return Keyring(gnupghome)


def _password(password_file: Path) -> Secret:
    stream, _ = open_regular(password_file)
    with stream:
        return Secret(stream.read(4096).decode("utf-8").strip())


def _signer(opener: _Opener, puller: str) -> Fingerprint | None:
    """The key that signs this recipient's receipt: the one that opened the package, else (a ZIP)
    the first secret key in --gnupghome that can sign; None if there is no such key."""
    if not puller.startswith("agency:"):
        return Fingerprint(puller)
    if opener.signer is None:
        return None
    keys = opener.signer.keys()
    usable = sorted(str(info.fingerprint) for info in keys if info.has_secret and info.can_sign)
    return Fingerprint(usable[0]) if usable else None


def _receipt(
    manifest: _Manifest, agency: str, opener: _Opener, officer: str | None, signer: Fingerprint | None
) -> tuple[Receipt, bytes] | str:
    """The signed receipt for a pulled package, or why there is none (a warning for the recipient)."""
    if opener.signer is None:
        return (
            f"{manifest.package}: no receipt (an AES-ZIP password signs nothing): pass --gnupghome with your"
            " officer key as well, so the gateway learns you received it"
        )
    if signer is None:
        return f"{manifest.package}: no receipt: --gnupghome holds no secret key that can sign"
    receipt = Receipt(
        package=manifest.package,
        agency=agency,
        payload_sha256=manifest.payload_sha256,
        plaintext_sha256=manifest.plaintext_sha256,
        officer=officer,
        fingerprint=str(signer),
        received=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    try:
        return receipt, opener.signer.sign_detached((receipt.to_bytes(),), signer)
    except CryptoError as exc:
        return f"{manifest.package}: no receipt: {exc.message}"


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
    folder: Folder, manifest: _Manifest, agency: str, to: Path, opener: _Opener, checks: _Checks, *, raw: bool
) -> tuple[Path, str]:
    """Decrypt into a file with no name, check it against the manifest and the sender's own signature,
    and only then give it its name in `to`; return it and who opened it (for the pulls table)."""
    with folder.open_file(manifest.payload) as payload, anonymous_file(to) as plain:
        if manifest.payload.endswith(".zip"):
            if opener.password is None:
                raise CryptoError(f"{manifest.payload} is an AES-256 ZIP: pass --password-file with its password")
            if payload.hash() != manifest.payload_sha256:
                raise CryptoError(_altered(manifest.payload))
            read_aes_zip(payload.stream(), password=opener.password, target=plain, max_bytes=manifest.plaintext_bytes)
            puller = f"agency:{agency}"
        else:
            if opener.keyring is None:
                raise CryptoError(f"{manifest.payload} is OpenPGP: pass --gnupghome with your officer key")
            opened = opener.keyring.open_message(
                payload.chunks(), plain, signers=checks.gateway_keys, name=manifest.payload
            )
            if payload.digest != manifest.payload_sha256:
                raise CryptoError(_altered(manifest.payload))
            puller = str(opened.key) if opened.key is not None else opener.pullers[0]
        if _sha256(plain) != manifest.plaintext_sha256:
            raise CryptoError(f"{manifest.payload}: the decrypted file does not match its manifest: nothing was kept")
        _check_sender(checks.senders, manifest, plain)
        if raw:
            return publish(plain, to, manifest.package + ".csv"), puller
        with anonymous_file(to) as text:
            _transcribe(plain, text, manifest, banner=checks.banner)
            return publish(text, to, manifest.package + ".csv"), puller


def _altered(payload: str) -> str:
    return (
        f"{payload}: the package does not match its signed manifest (altered or damaged): nothing was written;"
        " tell the admin"
    )


def _check_sender(senders: Keyring, manifest: _Manifest, plain: BinaryIO) -> None:
    """The officer's own signature must cover exactly these bytes (end to end, not only the gateway's word)."""
    check = senders.verify_detached(read_chunks(plain.fileno()), manifest.sender_signature)
    if not (check.intact and check.fingerprint == manifest.sender_fingerprint):
        raise CryptoError(
            f"{manifest.payload}: the sending officer's signature does not cover these bytes "
            f"({check.problem or 'signed by another key than the manifest names'}): nothing was kept; tell the admin"
        )


def _sha256(handle: BinaryIO) -> str:
    handle.flush()
    return sha256_fd(handle.fileno())


def _transcribe(source: BinaryIO, target: BinaryIO, manifest: _Manifest, *, banner: bool) -> None:
    """Copy as UTF-8, with the marking as first and last line if `banner`."""
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
