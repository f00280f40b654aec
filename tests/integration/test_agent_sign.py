"""The gateway's own signatures (manifests, audit checkpoints) made through gpg-agent, against the real
gpg: plain `gpg --verify` accepts them, they carry what gpg's would, and anything the agent cannot
sign this way still goes through gpg with gpg's verdict."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.adapters.agent import Agent, AgentUnavailable, SigningKey
from gateway.adapters.gpg import Fingerprint, Keyring, Purpose
from gateway.core.errors import CryptoError
from tests.integration.gpg_helpers import gpg, new_officer, revocation_certificate, stop_agent

DOCUMENT = b'{"package": "PROTECT-PERSONAL__police__2026-10__abc123.csv.gpg", "rows": 7}\n'


class GpgLaunches:
    """Counts the gpg processes this test process starts (the real Popen still starts them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = subprocess.Popen

        def counting(args: Any, *rest: Any, **kwargs: Any) -> Any:
            if isinstance(args, list | tuple) and args and str(args[0]).endswith("/gpg"):
                self.count += 1
            return real(args, *rest, **kwargs)

        monkeypatch.setattr(subprocess, "Popen", counting)


@pytest.fixture(params=["ed25519", "rsa3072"])
def keyring(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyring]:
    home = tmp_path_factory.mktemp("agent") / "g"
    keyring = Keyring(home)
    keyring.generate("IOM Gateway", "gateway@iom.example", algorithm=str(request.param), comment="test")
    yield keyring
    stop_agent(home)


def gateway_key(keyring: Keyring) -> Fingerprint:
    (info,) = keyring.keys()
    return info.fingerprint


def packets(home: Path, signature: bytes) -> list[str]:
    """gpg's own reading of a signature packet: header and subpackets, with the time left out."""
    listing = gpg(home, "--list-packets", stdin=signature).stdout.decode()
    kept = [line.strip() for line in listing.splitlines() if "subpkt" in line or line.startswith(":signature")]
    header = re.search(r"ctb=([0-9a-f]+) tag=2 hlen=(\d+)", listing)
    assert header is not None, listing
    return [f"ctb={header[1]} hlen={header[2]}", *(re.sub(r"\(sig created .*\)", "", line) for line in kept)]


def plain_gpg_verifies(home: Path, tmp_path: Path, data: bytes, signature: bytes) -> bool:
    (tmp_path / "doc").write_bytes(data)
    (tmp_path / "doc.sig").write_bytes(signature)
    result = gpg(home, "--verify", str(tmp_path / "doc.sig"), str(tmp_path / "doc"), check=False)
    return result.returncode == 0 and b"[GNUPG:] GOODSIG" in result.stderr


def test_gateway_signatures_come_from_the_agent_and_plain_gpg_verifies_them(
    keyring: Keyring, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = gateway_key(keyring)
    by_gpg = keyring.sign_detached((DOCUMENT,), signer, notations={"purpose@iom-gateway": "manifest"})
    launches = GpgLaunches(monkeypatch)
    signatures = [keyring.sign_bytes(DOCUMENT + bytes([i]), signer, purpose=Purpose.MANIFEST) for i in range(5)]
    assert launches.count == 0  # five signatures, no gpg process: the agent made them
    monkeypatch.undo()
    for i, signature in enumerate(signatures):
        assert plain_gpg_verifies(keyring.home, tmp_path, DOCUMENT + bytes([i]), signature)
        check = keyring.verify_bytes(DOCUMENT + bytes([i]), signature, purpose=Purpose.MANIFEST)
        assert check.valid and check.fingerprint == signer
        assert check.hash_algorithm == "8" and check.signature_class == "00"
        assert check.notations == (("purpose@iom-gateway", "manifest"),)
        assert not keyring.verify_bytes(DOCUMENT + bytes([i]), signature, purpose=Purpose.AUDIT).valid
        assert not keyring.verify_bytes(DOCUMENT + b"tampered", signature, purpose=Purpose.MANIFEST).valid
    # the same packet gpg makes: header, subpackets and their order
    assert packets(keyring.home, signatures[0]) == packets(keyring.home, by_gpg)


def test_a_key_gpg_signs_for_with_a_subkey_is_still_signed_by_gpg(tmp_path: Path) -> None:
    home = tmp_path / "o"
    primary = new_officer(home, "Alice Officer", "alice@police.example", signing_subkey=True)
    try:
        keyring = Keyring(home)
        signature = keyring.sign_bytes(DOCUMENT, Fingerprint(primary), purpose=Purpose.AUDIT)
        listing = gpg(home, "--list-packets", stdin=signature).stdout.decode()
        (issuer,) = re.findall(r"issuer fpr v4 ([0-9A-F]{40})", listing)
        assert issuer != primary  # gpg chose the signing subkey, as it always has
        assert keyring.verify_bytes(DOCUMENT, signature, purpose=Purpose.AUDIT).valid
    finally:
        stop_agent(home)


def test_a_stopped_agent_is_restarted_by_gpg_and_its_socket_used_again(
    keyring: Keyring, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    signer = gateway_key(keyring)
    keyring.sign_bytes(DOCUMENT, signer, purpose=Purpose.MANIFEST)
    stop_agent(keyring.home)
    launches = GpgLaunches(monkeypatch)
    after_stop = keyring.sign_bytes(DOCUMENT, signer, purpose=Purpose.MANIFEST)
    assert launches.count == 1  # no agent: gpg made it (and started one)
    again = keyring.sign_bytes(DOCUMENT, signer, purpose=Purpose.MANIFEST)
    assert launches.count == 1  # the new agent made this one
    monkeypatch.undo()
    assert plain_gpg_verifies(keyring.home, tmp_path, DOCUMENT, after_stop)
    assert plain_gpg_verifies(keyring.home, tmp_path, DOCUMENT, again)


def test_a_revoked_gateway_key_signs_nothing_once_the_revocation_is_imported(keyring: Keyring, tmp_path: Path) -> None:
    signer = gateway_key(keyring)
    keyring.sign_bytes(DOCUMENT, signer, purpose=Purpose.MANIFEST)  # remembered as the agent's key
    certificate = revocation_certificate(keyring.home, str(signer), tmp_path / "gateway.rev")
    keyring.import_public(certificate.read_bytes())
    with pytest.raises(CryptoError):
        keyring.sign_bytes(DOCUMENT, signer, purpose=Purpose.MANIFEST)


def test_what_is_remembered_of_a_key_follows_the_keyring_when_the_key_gains_a_subkey(
    keyring: Keyring, tmp_path: Path
) -> None:
    home = tmp_path / "o"
    officer = Fingerprint(new_officer(home, "Olu Officer", "olu@probation.example"))
    try:
        keyring.import_public(gpg(home, "--armor", "--export", str(officer)).stdout)
        before = keyring.recipient_key_ids([officer])[officer]
        exported = keyring.export_public(officer)
        nopass = ("--passphrase", "", "--pinentry-mode", "loopback")
        gpg(home, *nopass, "--quick-add-key", str(officer), "cv25519", "encr", "1y")
        time.sleep(0.01)  # a distinct modification time, as any later import would have
        keyring.import_public(gpg(home, "--armor", "--export", str(officer)).stdout)
        after = keyring.recipient_key_ids([officer])[officer]
        assert before < after and len(after) == len(before) + 1
        assert keyring.export_public(officer) != exported
    finally:
        stop_agent(home)


def test_the_agent_never_returns_a_signature_that_does_not_verify(keyring: Keyring) -> None:
    signer = gateway_key(keyring)
    keyring.sign_bytes(DOCUMENT, signer, purpose=Purpose.MANIFEST)  # the agent is running now
    key = keyring._agent_key(signer)  # the key as the agent serves it
    assert key is not None
    socket_path = subprocess.run(
        ["/usr/bin/gpgconf", "--homedir", str(keyring.home), "--list-dirs", "agent-socket"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.strip()
    agent = Agent(socket_path)
    try:
        digest = bytes(32)
        values = agent._pksign(key, digest)  # the agent's raw answer, then spoiled
        agent._check(key, digest, values)  # the real one passes
        spoiled = [bytes([values[0][0] ^ 1]) + values[0][1:], *values[1:]]
        with pytest.raises(AgentUnavailable, match="does not verify"):
            agent._check(key, digest, spoiled)
        expired = SigningKey(key.fingerprint, key.keygrip, key.algorithm, time.time() - 1)
        with pytest.raises(AgentUnavailable, match="expired"):
            agent.sign(DOCUMENT, expired, {})
        with pytest.raises(AgentUnavailable):
            agent.sign(DOCUMENT, SigningKey(key.fingerprint, "0" * 40, key.algorithm, None), {})
    finally:
        agent.close()
