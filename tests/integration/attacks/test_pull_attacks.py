"""Finding 2: `pull` reads what it verified, checks the sender officer's own signature, goes on past a
bad package, and a killed pull leaves no plaintext behind."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway.adapters.gpg import Fingerprint
from gateway.state.root import Root
from tests.conftest import REPO
from tests.integration.attacks.inotify import IN_CLOSE_NOWRITE, Watch
from tests.integration.attacks.packets import lift_signature
from tests.integration.daemon_harness import GOOD, cli, drop, home
from tests.integration.gpg_helpers import gpg

pytestmark = pytest.mark.both_journals

RECIPIENT = "probation"


def _deliver(root: Path, name: str = "pull-2026-10.csv", data: bytes | None = None) -> Path:
    """Deliver a police file to probation and housing; return probation's manifest."""
    before = set((root / "inbox" / RECIPIENT).glob("*.manifest.json"))
    drop(root, "police", data if data is not None else GOOD.read_bytes(), name, "police-do")
    assert cli(root, "run", "--once") == 0
    (manifest,) = set((root / "inbox" / RECIPIENT).glob("*.manifest.json")) - before
    return manifest


def _pull(root: Path, to: Path, *extra: str) -> int:
    to.mkdir(parents=True, exist_ok=True)
    return cli(root, "pull", "--agency", RECIPIENT, "--officer", f"{RECIPIENT}-do", "--to", str(to), *extra)


def _gateway_sign(root: Path, document: bytes, signature: Path) -> None:
    """What only the gateway key can do (the test holds keys/gnupg): sign a manifest."""
    listing = gpg(root / "keys" / "gnupg", "--with-colons", "--list-secret-keys").stdout.decode()
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    source = signature.with_name(".forged-manifest")
    source.write_bytes(document)
    gpg(
        root / "keys" / "gnupg",
        "--yes",
        "--local-user",
        fingerprint,
        "--sig-notation",
        "purpose@iom-gateway=manifest",
        "--output",
        str(signature),
        "--detach-sign",
        str(source),
    )
    source.unlink()


def _forged_manifests(real: dict[str, object], outside: Path) -> dict[str, bytes]:
    escaping = dict(real, package=f"/../..{outside}/stolen", marking="UNCLASSIFIED")
    return {
        "path-escape": json.dumps(escaping).encode(),
        "three-megabytes": b'{"padding": "' + b"x" * (3 << 20) + b'"}',
    }


@pytest.mark.parametrize("forgery", ["path-escape", "three-megabytes"])
def test_a_manifest_swapped_after_its_check_cannot_steer_pull(
    routed_root: Path, tmp_path: Path, forgery: str, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _deliver(routed_root)
    outside = tmp_path / "outside"
    outside.mkdir()
    forged = _forged_manifests(json.loads(manifest.read_bytes()), outside)[forgery]
    holder = manifest.with_name(".forged")
    holder.write_bytes(forged)

    def swap_after_check() -> None:
        with Watch() as watch:
            watch.add(manifest, IN_CLOSE_NOWRITE, "manifest")
            # a regular-file check (open, close), then gpg reads it by name (open, close)
            if all(watch.wait("manifest", IN_CLOSE_NOWRITE, 8.0) for _ in range(2)):
                os.replace(holder, manifest)

    attacker = threading.Thread(target=swap_after_check)
    attacker.start()
    time.sleep(0.2)
    to = tmp_path / "to"
    _pull(routed_root, to)
    attacker.join()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert list(outside.iterdir()) == [], "plaintext was written outside --to"
    for written in to.glob("*.csv"):
        sidecar = written.with_name(written.name.removesuffix(".csv") + ".marking.txt")
        assert sidecar.read_text(encoding="utf-8") == "PROTECT - PERSONAL\n"  # the verified manifest's marking
        assert written.name == manifest.name.removesuffix(".manifest.json") + ".csv"


def test_pull_refuses_a_package_whose_sender_signature_does_not_cover_the_bytes(
    routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Even a manifest the gateway key signed must carry the officer's signature over exactly these bytes."""
    manifest_path = _deliver(routed_root)
    other = tmp_path / "other.csv"
    other.write_bytes(b"forename,surname,gender,date_of_birth\r\nA,B,M,01/01/1990\r\n")
    gpg(home(routed_root, "police-do"), "--yes", "--armor", "--detach-sign", str(other))
    manifest = json.loads(manifest_path.read_bytes())
    manifest["sender_signature"] = Path(str(other) + ".asc").read_text()
    document = json.dumps(manifest, sort_keys=True, indent=2).encode() + b"\n"
    manifest_path.write_bytes(document)
    _gateway_sign(routed_root, document, manifest_path.with_name(manifest_path.name + ".sig"))
    to = tmp_path / "to"
    assert _pull(routed_root, to) == 1
    captured = capsys.readouterr()
    assert list(to.iterdir()) == []
    assert "Traceback" not in captured.err
    assert "officer" in captured.out + captured.err and "signature" in captured.out + captured.err


def test_a_package_that_fails_is_reported_and_the_others_are_still_pulled(
    routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _deliver(routed_root, "first-2026-10.csv")
    second_data = GOOD.read_bytes().replace(b"Attends weekly", b"Attends fortnightly")
    second = _deliver(routed_root, "second-2026-10.csv", second_data)
    broken = min(first, second).with_name(min(first, second).name.removesuffix(".manifest.json") + ".csv.gpg")
    data = bytearray(broken.read_bytes())
    data[len(data) // 2] ^= 0x01
    broken.write_bytes(bytes(data))
    to = tmp_path / "to"
    assert _pull(routed_root, to, "--raw") == 1
    captured = capsys.readouterr()
    written = sorted(p.name for p in to.glob("*.csv"))
    healthy = max(first, second).name.removesuffix(".manifest.json") + ".csv"
    assert written == [healthy]
    assert broken.name.removesuffix(".csv.gpg") in captured.out + captured.err
    assert "Traceback" not in captured.err


@pytest.mark.slow
def test_a_killed_pull_leaves_no_plaintext_behind(routed_root: Path, tmp_path: Path) -> None:
    header, rows = GOOD.read_bytes().split(b"\r\n", 1)
    varied = (rows.replace(b"Attends weekly", hashlib.sha256(b"%d" % n).hexdigest().encode()) for n in range(6000))
    big = header + b"\r\n" + b"".join(varied)  # about 8 MB: decryption takes long enough to be killed mid-way
    _deliver(routed_root, "big-2026-10.csv", big)
    to = tmp_path / "to"
    to.mkdir()
    command = [sys.executable, "-m", "gateway", "--root", str(routed_root), "pull", "--agency", RECIPIENT]
    command += ["--officer", f"{RECIPIENT}-do", "--to", str(to), "--raw", "--again"]
    for attempt in range(20):
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.05 + attempt * 0.04)
        process.send_signal(signal.SIGKILL)
        process.wait()
        left = [p.name for p in to.iterdir() if not p.name.endswith((".csv", ".marking.txt"))]
        assert left == [], f"killed after {0.05 + attempt * 0.04:.2f} s, the pull left {left}"
        for written in to.glob("*.csv"):
            assert written.read_bytes() == big, "a partial or unverified file carries the final name"
        for sidecar in to.glob("*.marking.txt"):  # written only after its CSV is published
            assert sidecar.with_name(sidecar.name.removesuffix(".marking.txt") + ".csv").exists()


def test_a_signature_lifted_out_of_a_package_never_passes_for_a_manifests(
    routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The signing oracle's second half: even a package holding bytes an attacker chose (say a forged
    manifest) gives no signature a manifest verifier accepts, because every gateway signature names
    what it was made for and pull asks for `manifest`."""
    real = _deliver(routed_root)
    forged = dict(json.loads(real.read_bytes()), package="FORGED", payload="FORGED.csv.gpg", marking="UNCLASSIFIED")
    document = json.dumps(forged, sort_keys=True, indent=2).encode() + b"\n"
    gateway = Root.open(routed_root)
    officer = Fingerprint.parse(gateway.registry.get("probation-do").fingerprint)
    package = io.BytesIO()
    gateway.keyring.encrypt((document,), package, recipients=[officer], signer=gateway.gateway_key(), literal_name="x")
    gateway.close()
    sealed = tmp_path / "sealed.gpg"
    sealed.write_bytes(package.getvalue())
    content, lifted = lift_signature(
        gpg(home(routed_root, "probation-do"), "--decrypt", "--unwrap", str(sealed)).stdout
    )
    assert content == document
    inbox = routed_root / "inbox" / RECIPIENT
    (inbox / "FORGED.manifest.json").write_bytes(document)
    (inbox / "FORGED.manifest.json.sig").write_bytes(lifted)
    (inbox / "FORGED.csv.gpg").write_bytes(
        real.with_name(real.name.removesuffix(".manifest.json") + ".csv.gpg").read_bytes()
    )
    to = tmp_path / "to"
    assert _pull(routed_root, to) == 1
    captured = capsys.readouterr()
    assert "FORGED" in captured.err and "made for package, not for manifest" in captured.err
    base = real.name.removesuffix(".manifest.json")
    assert sorted(p.name for p in to.iterdir()) == [base + ".csv", base + ".marking.txt"]


def test_a_rotation_never_re_signs_a_manifest_altered_in_the_inbox(routed_root: Path) -> None:
    """Re-packing signs a new manifest: it must start from one the gateway signed, never from bytes
    someone with write access to an inbox put there (that would make the gateway key sign them)."""
    _deliver(routed_root)
    manifest = next((routed_root / "inbox" / "housing").glob("*.manifest.json"))
    altered = manifest.read_bytes().replace(b'"PROTECT - PERSONAL"', b'"UNCLASSIFIED"')
    manifest.write_bytes(altered)
    assert cli(routed_root, "keys", "rotate", "--agency", "housing", "--reencrypt", "--yes") == 1
    assert manifest.read_bytes() == altered
    check = gpg(routed_root / "keys" / "gnupg", "--verify", f"{manifest}.sig", str(manifest), check=False)
    assert check.returncode != 0, "the gateway signed the altered manifest"
