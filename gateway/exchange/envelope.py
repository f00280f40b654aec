"""A PGP/MIME sender's envelope, sealed into a package's manifest for its recipient.

A file that came signed in a PGP/MIME message is checked end to end only with the envelope its
officer's signature covers (core/pgpmime). The envelope may hold the officer's words, so the
manifest carries it sealed as its payload is: to the same officers' keys, signed by the gateway
(OpenPGP), or in an AES-256 ZIP under the same password. Whoever opens the package opens it too.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from io import BytesIO

from gateway.adapters.aeszip import read_aes_zip, write_aes_zip
from gateway.adapters.gpg import Fingerprint, Keyring, strip_recipients
from gateway.core.errors import CryptoError
from gateway.core.model import Delivery
from gateway.core.pgpmime import MAX_EVIDENCE_BYTES, Envelope, parse
from gateway.core.secret import Secret

MEMBER = "sender-envelope.json"  # the sealed envelope's literal (or member) name


def seal(
    envelope: Envelope,
    method: Delivery,
    *,
    keyring: Keyring,
    recipients: Collection[Fingerprint] = (),
    gateway: Fingerprint | None = None,
    password: Secret | None = None,
) -> str:
    """The envelope sealed for one recipient (base64 text for the manifest)."""
    if method is not Delivery.GPG:
        assert password is not None  # noqa: S101 (an AES-ZIP package always has its password)
        return _zipped(envelope, password)
    assert gateway is not None  # noqa: S101 (an OpenPGP package is always signed by the gateway)
    sealed = BytesIO()
    keyring.encrypt((envelope.dump(),), sealed, recipients=list(recipients), signer=gateway, literal_name=MEMBER)
    return base64.b64encode(sealed.getvalue()).decode("ascii")


def _zipped(envelope: Envelope, password: Secret) -> str:
    sealed = BytesIO()
    write_aes_zip(BytesIO(envelope.dump()), sealed, member=MEMBER, password=password)
    return base64.b64encode(sealed.getvalue()).decode("ascii")


def unseal_gpg(text: str, keyring: Keyring, gateway_keys: Collection[Fingerprint] | None, name: str) -> Envelope:
    """Open a sealed envelope with the recipient's keys; with `gateway_keys`, it must be signed by one."""
    plain = BytesIO()
    keyring.open_message((_blob(text, name),), plain, signers=gateway_keys, name=name)
    return _parse(plain.getvalue(), name)


def unseal_zip(text: str, password: Secret, name: str) -> Envelope:
    """Open a sealed envelope with the recipient agency's AES-ZIP password."""
    plain = BytesIO()
    read_aes_zip(BytesIO(_blob(text, name)), password=password, target=plain, max_bytes=MAX_EVIDENCE_BYTES)
    return _parse(plain.getvalue(), name)


def strip(text: str, key_ids: Collection[str]) -> str:
    """The sealed envelope without the session-key packets for `key_ids` (a revoked officer's)."""
    stripped = BytesIO()
    strip_recipients(BytesIO(_blob(text, "the sender's envelope")), stripped, key_ids)
    return base64.b64encode(stripped.getvalue()).decode("ascii")


def reseal_zip(text: str, old: Secret, new: Secret, name: str) -> str:
    """The sealed envelope under password `new` instead of `old`."""
    return _zipped(unseal_zip(text, old, name), new)


def _blob(text: str, name: str) -> bytes:
    try:
        blob = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        blob = b""
    if not blob or len(blob) > 2 * MAX_EVIDENCE_BYTES:
        raise CryptoError(f"{name}: the manifest's sealed sender envelope is damaged: tell the admin")
    return blob


def _parse(data: bytes, name: str) -> Envelope:
    try:
        envelope, _ = parse(data)
    except ValueError as exc:
        raise CryptoError(
            f"{name}: the sender's envelope is not one the gateway makes ({exc}): tell the admin"
        ) from None
    return envelope
