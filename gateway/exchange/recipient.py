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
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from gateway.adapters.aeszip import read_aes_zip
from gateway.adapters.fsio import (
    Folder,
    anonymous_file,
    atomic_write_bytes,
    is_plain_name,
    open_regular,
    publish,
    read_chunks,
    remove_stale_temps,
    sha256_fd,
)
from gateway.adapters.gpg import MAX_KEY_BYTES, MAX_SIGNATURE_BYTES, Fingerprint, Keyring, Purpose
from gateway.core import faults
from gateway.core.errors import CryptoError, GatewayError, InputFileError, UsageError
from gateway.core.manifest import MAX_MANIFEST_BYTES, binary_signature
from gateway.core.model import Delivery
from gateway.core.receipt import RECEIPT_SUFFIX, RECEIPTS, SIGNATURE_SUFFIX, Receipt
from gateway.core.secret import Secret
from gateway.exchange.envelope import unseal_gpg, unseal_zip
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
    superseded: str | None = None  # the earlier package this one corrects (marked NAME.superseded.txt in OUT)


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
    sender_envelope: str | None = None  # sealed: the PGP/MIME envelope the sender's signature covers
    corrects: str | None = None  # the earlier package of the same sender this file corrects


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
        return Pulled(base, written, warning=made, superseded=manifest.corrects)
    receipt, _ = made
    Receipts(root.db).record(receipt)
    root.audit.append(
        "package.received",
        actor=officer or receipt.fingerprint,
        agency=agency,
        package=base,
        officer=officer,
        fingerprint=receipt.fingerprint,
        received=receipt.received,  # the disclosure register's "received at"
    )
    return Pulled(base, written, superseded=manifest.corrects)


def _officer_of(root: Root, puller: str) -> str | None:
    """The registered officer whose key `puller` is (a fingerprint), if any."""
    if puller.startswith("agency:"):
        return None
    found = root.registry.by_fingerprint(puller, datetime.now(UTC))
    return None if found is None else found.id


def _demo_home(root: Root, agency: str, officer: str) -> Path:
    """The demo GnuPG home of `officer`; UsageError outside a demo root or for another agency's officer."""
    registered = root.registry.get(officer)
    home = root.demo_home(officer)
    if not home.is_dir():
        raise UsageError(
            f"--officer {officer}: this root has no demo key for {officer} ({str(home)!r} is not there), so"
            " --officer works only in a demo root: pull with --gnupghome DIR, your own GnuPG home"
        )
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


STATE_FILE = ".iom-gateway.json"  # in OUT (0600): the pinned gateway keys and what was pulled there
_STATE_FORMAT = "iom-gateway-pull-state"


@dataclass(frozen=True, slots=True)
class _Away:
    """What `pull --from` keeps in OUT: the gateway keys it trusts, and (puller, package) pulled."""

    gateway_keys: frozenset[str]
    pulled: frozenset[tuple[str, str]]

    @classmethod
    def load(cls, to: Path) -> _Away:
        """The state in `to`, or an empty one; UsageError naming the file if it is not ours."""
        path = to / STATE_FILE
        if not path.exists():
            return cls(frozenset(), frozenset())
        stream, _ = open_regular(path)
        with stream:
            raw = stream.read(MAX_MANIFEST_BYTES * 8)
        try:
            data = json.loads(raw)
            assert data["format"] == _STATE_FORMAT  # noqa: S101 (a KeyError or this: not our file)
            keys = frozenset(str(Fingerprint.parse(k)) for k in data["gateway_keys"])
            pulled = frozenset((str(p["puller"]), str(p["package"])) for p in data["pulled"])
        except (ValueError, KeyError, TypeError, AssertionError, CryptoError):
            raise UsageError(
                f"{str(path)!r} is not the pull state iom-gateway writes: move it away (a new one pins the"
                " gateway key again on first use)"
            ) from None
        return cls(keys, pulled)

    def save(self, to: Path) -> None:
        """Write the state to `to` atomically, mode 0600."""
        pulled = [{"puller": who, "package": package} for who, package in sorted(self.pulled)]
        document = {"format": _STATE_FORMAT, "gateway_keys": sorted(self.gateway_keys), "pulled": pulled}
        atomic_write_bytes(to / STATE_FILE, (json.dumps(document, indent=2) + "\n").encode())


def pull_from(
    source: Path,
    to: Path,
    *,
    gateway_keys: Sequence[Path],
    gateway_fingerprints: Sequence[str],
    gnupghome: Path | None,
    password_file: Path | None,
    raw: bool,
    again: bool,
    receipts: Path | None,
) -> list[Pulled]:
    """Verify, decrypt and write every package in `source` (a copy of inbox/<agency>/), with no gateway
    root: only the gateway's public keys and the recipient's own key or password.

    The gateway keys trusted are pinned in `to` on first use (or given as `gateway_fingerprints`). A
    package that does not check out is returned as failed, nothing of it left in `to`; the others go on.
    """
    for given_folder, flag in ((source, "--from"), (to, "--to")):
        if not given_folder.is_dir():
            raise UsageError(f"{flag} {str(given_folder)!r} is not a folder: give an existing folder")
    if receipts is not None and not receipts.is_dir():
        raise UsageError(f"--receipts {str(receipts)!r} is not a folder: create it, or leave it out (OUT/receipts/)")
    if not gateway_keys:
        raise UsageError("pass --gateway-key FILE: the gateway's public keys (`iom-gateway keys export --gateway`)")
    try:
        given = frozenset(str(Fingerprint.parse(text)) for text in gateway_fingerprints)
    except CryptoError as exc:
        raise UsageError(f"--gateway-fingerprint: {exc.message}") from None
    opener = _opener(None, None, gnupghome, password_file)
    state = _Away.load(to)
    with _scratch_home() as gateways, _scratch_home() as senders:
        imported: set[str] = set()
        for key_file in gateway_keys:
            imported |= {str(fpr) for fpr in _import_key_file(gateways, key_file)}
        trusted = (state.gateway_keys | given) or frozenset(imported)
        if trusted != state.gateway_keys:
            state = _Away(trusted, state.pulled)
            state.save(to)
        remove_stale_temps(to)
        results = []
        with Folder.open(source.absolute()) as folder:
            names = sorted(e.name for e in folder.entries() if e.name.endswith((".csv.gpg", ".zip")))
            for name in names:
                base = name.removesuffix(".csv.gpg").removesuffix(".zip")
                if base.startswith(".") or not is_plain_name(name):
                    continue
                try:
                    pulled, state, made = _pull_away(
                        folder, name, base, to, opener, state, gateways, senders, raw=raw, again=again
                    )
                except GatewayError as exc:
                    log.warning("refused package=%r: %s", base, exc.message)
                    results.append(Pulled(base, None, failed=exc.message))
                    continue
                if made is not None:
                    pulled = _write_receipt(pulled, made, receipts or to / RECEIPTS)
                if pulled.written is not None:
                    state.save(to)  # at once: a later failure must not make this one pulled again
                results.append(pulled)
    return results


_Signed = tuple[Pulled, _Away, tuple[Receipt, bytes] | None]


def _pull_away(
    folder: Folder,
    payload: str,
    base: str,
    to: Path,
    opener: _Opener,
    state: _Away,
    gateways: Keyring,
    senders: Keyring,
    *,
    raw: bool,
    again: bool,
) -> _Signed:
    document = _read_capped(folder, base + ".manifest.json", MAX_MANIFEST_BYTES)
    signature = _read_capped(folder, base + ".manifest.json.sig", MAX_SIGNATURE_BYTES)
    if document is None or signature is None:
        return Pulled(base, None, "incomplete: its manifest or its signature is not there"), state, None
    _check_gateway_signature(gateways, document, signature, base, state.gateway_keys)
    manifest = _parse(document, base)
    data = _json(document)
    agency = _field(data, "recipient")
    if manifest.package != base or manifest.payload != payload:
        raise CryptoError(f"{payload}: the manifest names another package: do not trust it; tell the admin")
    pullers = _pullers(opener, agency, payload)
    done = next((who for who in pullers if (who, base) in state.pulled), None)
    if done is not None and not again:
        return Pulled(base, None, f"already pulled by {done} (use --again)"), state, None
    certificate = data.get("sender_certificate")
    if not isinstance(certificate, str):
        raise CryptoError(
            f"{base}: its manifest carries no sender certificate (made by an older gateway): pull it on the"
            " gateway, or ask the admin to deliver it again"
        )
    if manifest.sender_fingerprint not in senders.import_public(certificate.encode("ascii", "replace")):
        raise CryptoError(f"{base}: the manifest's sender certificate is not the sender's key: tell the admin")
    # no gateway.toml here: the default form (the `banner` setting belongs to the gateway's admin)
    checks = _Checks(senders, None, banner=False)
    written, puller = _write_plaintext(folder, manifest, agency, to, opener, checks, raw=raw)
    signer = _signer(opener, puller)
    made = _receipt(manifest, agency, opener, None, signer)
    state = _Away(state.gateway_keys, state.pulled | {(puller, base)})
    if isinstance(made, str):
        return Pulled(base, written, warning=made, superseded=manifest.corrects), state, None
    return Pulled(base, written, superseded=manifest.corrects), state, made


def _write_receipt(pulled: Pulled, made: tuple[Receipt, bytes], folder: Path) -> Pulled:
    """Write the pulled package's signed receipt (NAME.receipt.json and its .sig) into `folder`."""
    receipt, signature = made
    folder.mkdir(mode=0o700, exist_ok=True)
    atomic_write_bytes(folder / (receipt.package + SIGNATURE_SUFFIX), signature)
    atomic_write_bytes(folder / (receipt.package + RECEIPT_SUFFIX), receipt.to_bytes())
    receipt_path = folder / (receipt.package + RECEIPT_SUFFIX)
    return Pulled(pulled.package, pulled.written, receipt=receipt_path, superseded=pulled.superseded)


def _check_gateway_signature(
    gateways: Keyring, document: bytes, signature: bytes, base: str, trusted: frozenset[str]
) -> None:
    """The manifest must be signed, for a manifest, by a pinned gateway key; say exactly what is wrong."""
    check = gateways.verify_bytes(document, signature, purpose=Purpose.MANIFEST)
    name = base + ".manifest.json"
    if check.unknown_key is not None:
        raise CryptoError(
            f"{name} is signed by gateway key {check.unknown_key}, which no --gateway-key file holds (the"
            " gateway rotated its key?): get every gateway key (`iom-gateway keys export --gateway`, from the"
            " admin) and pass that file with --gateway-key"
        )
    if check.fingerprint is not None and str(check.fingerprint) not in trusted:
        raise CryptoError(
            f"{name} is signed by {check.fingerprint}, not by the gateway key pinned for this folder"
            f" ({', '.join(sorted(trusted))}): do not trust it; if the gateway rotated its key, confirm"
            f" {check.fingerprint} with the admin and pass --gateway-fingerprint {check.fingerprint}"
        )
    if not (check.valid or check.key_expired):
        raise CryptoError(
            f"{name}: the manifest's signature does not verify ({check.problem}): it was damaged or tampered"
            " with; do not trust this package, tell the admin"
        )


def _import_key_file(keyring: Keyring, path: Path) -> tuple[Fingerprint, ...]:
    """Import the public keys in `path` (one file may hold several); UsageError if it is not there."""
    stream, _ = open_regular(path)
    with stream:
        data = stream.read(MAX_KEY_BYTES + 1)
    try:
        return keyring.import_public(data)
    except CryptoError as exc:
        raise CryptoError(f"--gateway-key {str(path)!r}: {exc.message}") from None


@contextmanager
def _scratch_home() -> Iterator[Keyring]:
    """A private, temporary GnuPG home (never the user's), removed at the end with its agent."""
    path = Path(tempfile.mkdtemp(prefix="iom-pull-", dir="/tmp"))  # short: gpg-agent's socket path is capped
    keyring = Keyring(path)
    try:
        yield keyring
    finally:
        keyring.stop_agent()
        shutil.rmtree(path, ignore_errors=True)


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
    envelope = _field(data, "sender_envelope") if "sender_envelope" in data else None
    corrects = _field(data, "corrects") if "corrects" in data else None
    if corrects is not None and (not is_plain_name(corrects) or corrects.startswith(".")):
        raise CryptoError(f"{base}: the manifest's corrects is not a package name: tell the admin")
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
            sender_envelope=envelope,
            corrects=corrects,
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
        _check_sender(checks, manifest, plain, opener)
        # a pull again replaces the CSV: its sidecar goes first, so a kill never leaves one without its CSV
        (to / (manifest.package + MARKING_SUFFIX)).unlink(missing_ok=True)
        if raw:
            written = publish(plain, to, manifest.package + ".csv")
        else:
            with anonymous_file(to) as text:
                _transcribe(plain, text, manifest, banner=checks.banner)
                written = publish(text, to, manifest.package + ".csv")
    faults.reached("pull.published")
    _write_marking(to, manifest)
    if manifest.corrects is not None:
        _write_superseded(to, manifest)
    return written, puller


def _altered(payload: str) -> str:
    return (
        f"{payload}: the package does not match its signed manifest (altered or damaged): nothing was written;"
        " tell the admin"
    )


def _check_sender(checks: _Checks, manifest: _Manifest, plain: BinaryIO, opener: _Opener) -> None:
    """The officer's own signature must cover exactly these bytes (end to end, not only the gateway's word):
    alone, or inside the PGP/MIME envelope they came in, opened as the package was."""
    data: Iterable[bytes] = read_chunks(plain.fileno())
    if manifest.sender_envelope is not None:
        if manifest.payload.endswith(".zip"):
            assert opener.password is not None  # noqa: S101 (it opened the payload)
            envelope = unseal_zip(manifest.sender_envelope, opener.password, manifest.payload)
        else:
            assert opener.keyring is not None  # noqa: S101 (it opened the payload)
            envelope = unseal_gpg(manifest.sender_envelope, opener.keyring, checks.gateway_keys, manifest.payload)
        data = envelope.signed(data)
    check = checks.senders.verify_detached(data, manifest.sender_signature)
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


SUPERSEDED_SUFFIX = ".superseded.txt"


def _write_superseded(to: Path, manifest: _Manifest) -> None:
    """Mark the earlier package this one corrects: OLD.superseded.txt (0600) beside OLD.csv, whether or not
    OLD.csv was pulled into this folder (it says so to whoever holds a copy of it)."""
    assert manifest.corrects is not None  # noqa: S101 (only called for a correction)
    with anonymous_file(to) as sidecar:
        sidecar.write(
            f"{manifest.corrects}.csv is superseded: {manifest.package}.csv corrects it (signed by the sender);"
            " use the correction and delete the earlier file where the data-sharing agreement says so\n".encode()
        )
        publish(sidecar, to, manifest.corrects + SUPERSEDED_SUFFIX)


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
