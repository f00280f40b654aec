"""Finding 1: what is verified must be exactly what is delivered.

An attacker with write access to an outbox swaps bytes in at the instant the gateway (or a gpg it
starts) opens or reads the submission: renaming the signed file in only while gpg verifies, or
writing other bytes in place while the packages are sealed. Whatever the timing, every package a
recipient pulls must hold exactly the bytes the officer signed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.attacks.inotify import IN_ACCESS, IN_CLOSE_NOWRITE, IN_OPEN, Watch
from tests.integration.attacks.packets import lift_signature
from tests.integration.daemon_harness import GOOD, Daemon, home, pull_raw, run_once_process, wait_until
from tests.integration.gpg_helpers import gpg

pytestmark = [pytest.mark.slow, pytest.mark.both_journals]
ROUNDS = 8
EVENT_TIMEOUT = 8.0
STOP = threading.Event()  # set once the gateway is done with the file: the attacker gives up waiting


@pytest.fixture
def root(routed_root: Path) -> Path:
    return routed_root


def _variant(number: int, evil: bool) -> bytes:
    """A valid police file, different per round; the evil twin is just as valid, with other data."""
    text = GOOD.read_bytes().replace(b"Attends weekly", b"Attends " + str(number).encode() + b" weekly")
    return text.replace(b"Burglary dwelling", b"Arson and murder" if evil else b"Burglary dwelling")


def _sign(root: Path, data: bytes, where: Path) -> bytes:
    where.write_bytes(data)
    gpg(home(root, "police-do"), "--yes", "--output", str(where) + ".sig", "--detach-sign", str(where))
    return Path(str(where) + ".sig").read_bytes()


def _swap_in(outbox: Path, holder: str, name: str) -> None:
    """Rename the file held under the hidden name `holder` in as `name` (the gateway ignores dot files)."""
    os.link(outbox / holder, outbox / ".swap")
    os.replace(outbox / ".swap", outbox / name)


def _rename_during_verify(outbox: Path, name: str, good: bytes, evil: bytes, signature: bytes) -> None:
    """The unsigned file is there when the gateway opens it; the signed one while gpg reads by name."""
    (outbox / ".good").write_bytes(good)
    (outbox / ".evil").write_bytes(evil)
    (outbox / (name + ".sig")).write_bytes(signature)
    with Watch(STOP) as watch:
        watch.add(outbox / ".evil", IN_OPEN, "evil")
        watch.add(outbox / ".good", IN_CLOSE_NOWRITE, "good")
        os.link(outbox / ".evil", outbox / name)
        if watch.wait("evil", IN_OPEN, EVENT_TIMEOUT):
            _swap_in(outbox, ".good", name)
            # the gateway checks the name is a regular file (open, close), then gpg reads it (open, close)
            if _closes(watch, "good", 2):
                _swap_in(outbox, ".evil", name)


def _in_place_during_seal(outbox: Path, name: str, good: bytes, evil: bytes, signature: bytes) -> None:
    """The signed file is verified; other bytes are written into it in place while it is sealed, and the
    signed bytes put back before the gateway's closing check."""
    (outbox / (name + ".sig")).write_bytes(signature)
    (outbox / name).write_bytes(good)
    with Watch(STOP) as watch:
        watch.add(outbox / name, IN_CLOSE_NOWRITE, "file")
        # two closes for the signature check (a regular-file check, then gpg), two for OpenPGP sealing
        if _closes(watch, "file", 2):
            _overwrite(outbox / name, evil)
            if _closes(watch, "file", 2):
                _overwrite(outbox / name, good)


def _in_place_after_first_read(outbox: Path, name: str, good: bytes, evil: bytes, signature: bytes) -> None:
    """Other bytes written in place as soon as anything has read the signed file once."""
    (outbox / (name + ".sig")).write_bytes(signature)
    (outbox / name).write_bytes(good)
    with Watch(STOP) as watch:
        watch.add(outbox / name, IN_ACCESS, "file")
        if watch.wait("file", IN_ACCESS, EVENT_TIMEOUT):
            _overwrite(outbox / name, evil)


def _closes(watch: Watch, label: str, count: int) -> bool:
    return all(watch.wait(label, IN_CLOSE_NOWRITE, EVENT_TIMEOUT) for _ in range(count))


def _overwrite(path: Path, data: bytes) -> None:
    with path.open("r+b") as handle:
        handle.write(data)
        handle.truncate()


Attack = Callable[[Path, str, bytes, bytes, bytes], None]
ATTACKS: dict[str, Attack] = {
    "rename-during-verify": _rename_during_verify,
    "in-place-during-seal": _in_place_during_seal,
    "in-place-after-first-read": _in_place_after_first_read,
}


def _attacker(attack: Attack, outbox: Path, name: str, good: bytes, other: bytes, signature: bytes) -> threading.Thread:
    """Start `attack` in a thread; return once its drop is in place."""
    STOP.clear()
    thread = threading.Thread(target=attack, args=(outbox, name, good, other, signature))
    thread.start()
    # in place once its signature is (each attack writes it first; the gateway removes it only after
    # taking the pair, a gpg run at least): looked for every millisecond, since a pair taken at
    # once (its signature proves it complete) can be gone again within a few tens of milliseconds
    deadline = time.monotonic() + 10
    while not ((outbox / name).exists() or (outbox / (name + ".sig")).exists()):
        assert time.monotonic() < deadline, "timed out after 10 s waiting for the attacker's drop"
        time.sleep(0.001)
    return thread


def _pulled(root: Path, into: Path) -> dict[str, list[bytes]]:
    return {agency: pull_raw(root, agency, into / agency) for agency in ("probation", "housing")}


def _assert_only_signed_bytes_delivered(pulled: dict[str, list[bytes]], signed: list[bytes]) -> None:
    for agency, plaintexts in pulled.items():
        for plaintext in plaintexts:
            assert plaintext in signed, f"{agency} received bytes no officer signed:\n{plaintext[:300]!r}"


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_run_once_delivers_only_what_the_officer_signed(root: Path, tmp_path: Path, attack: str) -> None:
    outbox = root / "outbox" / "police"
    signed = []
    for number in range(ROUNDS):
        good, evil = _variant(number, evil=False), _variant(number, evil=True)
        signature = _sign(root, good, tmp_path / f"sub-{number}.csv")
        signed.append(good)
        name = f"race-{number}-2026-10.csv"
        attacker = _attacker(ATTACKS[attack], outbox, name, good, evil, signature)
        run_once_process(root)
        STOP.set()
        attacker.join()
        for leftover in outbox.glob(".*"):
            leftover.unlink()
    _assert_only_signed_bytes_delivered(_pulled(root, tmp_path / "pulled"), signed)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_the_daemon_delivers_only_what_the_officer_signed(root: Path, tmp_path: Path, attack: str) -> None:
    outbox = root / "outbox" / "police"
    outbox.mkdir(mode=0o700, exist_ok=True)
    daemon = Daemon(root).ready()
    signed = []
    try:
        for number in range(ROUNDS):
            good, evil = _variant(number, evil=False), _variant(number, evil=True)
            signature = _sign(root, good, tmp_path / f"sub-{number}.csv")
            signed.append(good)
            name = f"race-{number}-2026-10.csv"
            attacker = _attacker(ATTACKS[attack], outbox, name, good, evil, signature)
            wait_until(lambda n=name: not (outbox / (n + ".sig")).exists(), 30, "the gateway")
            STOP.set()
            attacker.join()
            for leftover in outbox.glob(".*"):
                leftover.unlink()
    finally:
        assert daemon.stop() == 0, daemon.text()
    _assert_only_signed_bytes_delivered(_pulled(root, tmp_path / "pulled"), signed)


def _json_during_encryption(outbox: Path, name: str, good: bytes, forged: bytes, signature: bytes) -> None:
    """The signed CSV is verified and validated; attacker JSON is renamed in while it is encrypted."""
    (outbox / (name + ".sig")).write_bytes(signature)
    (outbox / ".good").write_bytes(good)
    (outbox / ".forged").write_bytes(forged)
    os.link(outbox / ".good", outbox / name)
    with Watch(STOP) as watch:
        watch.add(outbox / ".good", IN_CLOSE_NOWRITE, "good")
        watch.add(outbox / ".forged", IN_CLOSE_NOWRITE, "forged")
        if _closes(watch, "good", 2):
            _swap_in(outbox, ".forged", name)
            if _closes(watch, "forged", 2):
                _swap_in(outbox, ".good", name)


def test_a_package_never_carries_a_gateway_signature_over_bytes_no_officer_signed(root: Path, tmp_path: Path) -> None:
    """The signing oracle: a package whose content the submitter chose after signing would let a
    recipient lift the gateway's signature out as a detached signature over, say, a forged manifest."""
    outbox = root / "outbox" / "police"
    good = _variant(7, evil=False)
    forged = b'{"format": "iom-gateway-manifest", "marking": "UNCLASSIFIED", "recipient": "probation"}\n'
    signature = _sign(root, good, tmp_path / "oracle.csv")
    attacker = _attacker(_json_during_encryption, outbox, "oracle-2026-10.csv", good, forged, signature)
    run_once_process(root)
    STOP.set()
    attacker.join()
    for package in (root / "inbox" / "probation").glob("*.csv.gpg"):
        inner = gpg(home(root, "probation-do"), "--decrypt", "--unwrap", str(package)).stdout
        content, _lifted = lift_signature(inner)
        assert content == good, f"the gateway signed bytes the officer never signed: {content[:120]!r}"
