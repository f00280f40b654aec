"""Audit checkpoints and the purge anchor signed and checked with real gpg keys (Keyring.sign_bytes/verify_bytes)."""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.adapters.gpg import Fingerprint, Keyring, Purpose
from gateway.core.errors import CryptoError
from gateway.state import audit
from gateway.state.audit import AuditLog, canonical

DATA = canonical({"covers_hash": "ab" * 32, "covers_seq": 7})


@dataclass(frozen=True)
class Keys:
    gateway: Keyring
    gateway_fpr: Fingerprint
    other: Keyring  # a key the gateway keyring has never seen
    other_fpr: Fingerprint


@pytest.fixture(scope="module")
def keys() -> Iterator[Keys]:
    # short homes: gpg-agent's socket path must stay under 108 bytes
    homes = [Path(tempfile.mkdtemp(prefix="iom", dir="/tmp")) for _ in range(2)]
    gateway, other = Keyring(homes[0]), Keyring(homes[1])
    try:
        yield Keys(
            gateway,
            gateway.generate("Gateway", "gateway@example.invalid"),
            other,
            other.generate("Intruder", "intruder@example.invalid"),
        )
    finally:
        for keyring, home in ((gateway, homes[0]), (other, homes[1])):
            keyring.stop_agent()
            shutil.rmtree(home, ignore_errors=True)


def signer(keyring: Keyring, fingerprint: Fingerprint) -> Callable[[bytes], bytes]:
    return lambda data: keyring.sign_bytes(data, fingerprint, purpose=Purpose.AUDIT)


def checker(keyring: Keyring, accepted: Collection[Fingerprint]) -> Callable[[bytes, bytes], str | None]:
    """What `audit verify` does: a good signature by an accepted gateway key, else None."""

    def check(data: bytes, signature: bytes) -> str | None:
        result = keyring.verify_bytes(data, signature, purpose=Purpose.AUDIT)
        return str(result.fingerprint) if result.valid and result.fingerprint in accepted else None

    return check


# --- Keyring.sign_bytes / verify_bytes --------------------------------------------------------------


def verify_folders() -> set[str]:
    return {path.name for path in Path(tempfile.gettempdir()).glob("iom-verify-*")}


def test_sign_bytes_round_trips_and_leaves_no_files(keys: Keys) -> None:
    before = verify_folders()
    signature = keys.gateway.sign_bytes(DATA, keys.gateway_fpr, purpose=Purpose.AUDIT)
    assert signature[:1] != b"-"  # binary, not armored
    result = keys.gateway.verify_bytes(DATA, signature, purpose=Purpose.AUDIT)
    assert result.valid and result.fingerprint == keys.gateway_fpr and result.problem is None
    assert verify_folders() == before


def test_a_flipped_byte_in_the_data_or_the_signature_fails(keys: Keys) -> None:
    signature = keys.gateway.sign_bytes(DATA, keys.gateway_fpr, purpose=Purpose.AUDIT)
    tampered = bytearray(DATA)
    tampered[5] ^= 0x01
    result = keys.gateway.verify_bytes(bytes(tampered), signature, purpose=Purpose.AUDIT)
    assert not result.valid and result.problem is not None and "BAD signature" in result.problem
    broken = bytearray(signature)
    broken[-10] ^= 0x01
    assert not keys.gateway.verify_bytes(DATA, bytes(broken), purpose=Purpose.AUDIT).valid


def test_a_signature_by_a_key_not_in_the_keyring_fails(keys: Keys) -> None:
    signature = keys.other.sign_bytes(DATA, keys.other_fpr, purpose=Purpose.AUDIT)
    assert keys.other.verify_bytes(DATA, signature, purpose=Purpose.AUDIT).valid
    result = keys.gateway.verify_bytes(DATA, signature, purpose=Purpose.AUDIT)
    assert not result.valid and result.fingerprint is None
    assert result.problem is not None and "no public key" in result.problem


@pytest.mark.parametrize("signature", [b"", b"not a signature", b"\x00" * 100_000])
def test_garbage_is_not_a_signature(keys: Keys, signature: bytes) -> None:
    result = keys.gateway.verify_bytes(DATA, signature, purpose=Purpose.AUDIT)
    assert not result.valid and result.problem is not None


def test_sign_bytes_needs_a_secret_key_here(keys: Keys) -> None:
    with pytest.raises(CryptoError, match=str(keys.other_fpr)):
        keys.gateway.sign_bytes(DATA, keys.other_fpr, purpose=Purpose.AUDIT)


# --- checkpoints and the anchor -------------------------------------------------------------------


def test_checkpoints_made_with_the_gateway_key_verify(keys: Keys, tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    sign, check = signer(keys.gateway, keys.gateway_fpr), checker(keys.gateway, {keys.gateway_fpr})
    genesis = log.genesis(sign, str(keys.gateway_fpr))  # a log that records deliveries begins with one
    assert genesis is not None and genesis["seq"] == 1
    log.append("submission.delivered", actor="police-do", agency="police", rows=3)
    made = log.checkpoint(sign, str(keys.gateway_fpr))
    assert made is not None and made["key"] == str(keys.gateway_fpr)
    signed = canonical({"covers_hash": made["covers_hash"], "covers_seq": made["covers_seq"]})
    assert keys.gateway.verify_bytes(signed, base64.b64decode(made["signature"]), purpose=Purpose.AUDIT).valid
    log.append("package.delivered", actor="gateway", agency="probation")
    assert log.checkpoint(sign, str(keys.gateway_fpr)) is not None
    verdict = log.verify(check)
    assert verdict.ok and verdict.checkpoints == 2 and verdict.last_seq == 5, verdict.problem


def test_a_genesis_signed_by_another_key_fails_step_7(keys: Keys, tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    log.genesis(signer(keys.other, keys.other_fpr), str(keys.gateway_fpr))  # claims the gateway key
    log.append("package.delivered", actor="gateway", agency="probation", package="P")
    verdict = log.verify(checker(keys.gateway, {keys.gateway_fpr}))
    assert verdict.ok is False and verdict.step == 7
    assert (
        verdict.problem is not None and "entry 1 (line 1): the genesis's signature does not verify" in verdict.problem
    )


@pytest.mark.parametrize("verifier", ["gateway keyring", "other keyring, key not accepted"])
def test_a_checkpoint_by_a_key_the_verifier_does_not_accept_fails_step_4(
    keys: Keys, tmp_path: Path, verifier: str
) -> None:
    log = AuditLog(tmp_path)
    log.append("submission.delivered", actor="police-do", agency="police")
    log.checkpoint(signer(keys.other, keys.other_fpr), str(keys.other_fpr))
    keyring = keys.gateway if verifier == "gateway keyring" else keys.other
    verdict = log.verify(checker(keyring, {keys.gateway_fpr}))
    assert verdict.ok is False and verdict.step == 4
    assert verdict.problem is not None and "entry 2 (line 2)" in verdict.problem


def test_a_purge_anchor_signed_with_gpg_verifies_and_a_forged_one_fails(
    keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path)
    monkeypatch.setattr(audit, "_now", lambda: "2026-01-01T00:00:00+00:00")
    for number in range(3):
        log.append("old.event", actor="gateway", n=number)
    monkeypatch.undo()
    log.append("current.event", actor="gateway")
    sign, check = signer(keys.gateway, keys.gateway_fpr), checker(keys.gateway, {keys.gateway_fpr})
    assert log.purge_before(datetime(2026, 2, 1, tzinfo=UTC), sign, str(keys.gateway_fpr)) == 3
    assert log.verify(check).ok
    anchor = json.loads(log.anchor_path.read_bytes())
    forged = keys.other.sign_bytes(
        canonical({"hash": anchor["hash"], "seq": anchor["seq"]}), keys.other_fpr, purpose=Purpose.AUDIT
    )
    log.anchor_path.write_bytes(canonical({**anchor, "signature": base64.b64encode(forged).decode()}) + b"\n")
    verdict = log.verify(check)
    assert verdict.ok is False and verdict.step == 6


def test_a_signature_made_for_one_purpose_is_refused_for_another(keys: Keys) -> None:
    """A checkpoint's signature never passes for a manifest's, nor one with no stated purpose at all."""
    signature = keys.gateway.sign_bytes(DATA, keys.gateway_fpr, purpose=Purpose.AUDIT)
    assert keys.gateway.verify_bytes(DATA, signature, purpose=Purpose.AUDIT).valid
    refused = keys.gateway.verify_bytes(DATA, signature, purpose=Purpose.MANIFEST)
    assert not refused.valid and refused.problem is not None and "made for audit, not for manifest" in refused.problem
    plain = keys.gateway.sign_detached((DATA,), keys.gateway_fpr)  # what `gpg --detach-sign` makes
    assert not keys.gateway.verify_bytes(DATA, plain, purpose=Purpose.AUDIT).valid
