"""crypto_gpg against the real gpg: a gateway keyring and officers who use nothing but plain gpg."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.adapters.gpg import Fingerprint, Keyring, Purpose, SignatureCheck
from gateway.core.errors import CryptoError
from tests.integration.gpg_helpers import (
    gpg,
    new_officer,
    revocation_certificate,
    statuses,
    stop_agent,
    subkey_fingerprints,
)

LITERAL = "PROTECT-PERSONAL__police__2026-10__abc123.csv"
CSV = "".join(f"{i},Siobhán,Lee,M,01/01/1990,BH11AA,note {i}\r\n" for i in range(2000)).encode()


@dataclass(frozen=True)
class World:
    root: Path
    gateway: Keyring
    gateway_fpr: Fingerprint
    alice_home: Path  # an officer whose gpg signs with a signing subkey
    alice: Fingerprint
    ursula_home: Path  # an officer the gateway has never heard of
    ursula: Fingerprint
    data: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("gpg")
    gateway = Keyring(root / "gateway")
    gateway_fpr = gateway.generate("IOM Gateway", "gateway@iom.example", comment="test")
    alice_home, ursula_home = root / "alice", root / "ursula"
    # Alice's key prefers AES-128, so only the gateway's own choice yields AES-256
    alice = new_officer(
        alice_home, "Alice Officer", "alice@police.example", signing_subkey=True, preferences="AES SHA256 ZLIB"
    )
    ursula = new_officer(ursula_home, "Ursula Unknown", "ursula@elsewhere.example")
    gpg(alice_home, "--import", stdin=gateway.export_public(gateway_fpr).encode())
    gateway.import_public(gpg(alice_home, "--armor", "--export", alice).stdout)
    data = root / "submission.csv"
    data.write_bytes(CSV)
    yield World(root, gateway, gateway_fpr, alice_home, Fingerprint(alice), ursula_home, Fingerprint(ursula), data)
    for home in root.iterdir():
        if home.is_dir():
            stop_agent(home)


def package(world: World, folder: Path, compress_level: int = 1) -> Path:
    """A package from the gateway to Alice, written into `folder` (gpg reads the data from a pipe)."""
    folder.mkdir(exist_ok=True)
    target = folder / f"{LITERAL}.gpg"
    with os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        world.gateway.encrypt(
            _chunks(world.data),
            out,
            recipients=[world.alice],
            signer=world.gateway_fpr,
            literal_name=LITERAL,
            compress_level=compress_level,
        )
    return target


def _chunks(path: Path, size: int = 4096) -> Iterator[bytes]:
    data = path.read_bytes()
    for start in range(0, len(data), size):
        yield data[start : start + size]


def verify(keyring: Keyring, data: Path, signature: Path) -> SignatureCheck:
    return keyring.verify_detached(_chunks(data), signature.read_bytes())


def decrypt(keyring: Keyring, source: Path, **options: Any) -> tuple[SignatureCheck, bytes]:
    out = io.BytesIO()
    check = keyring.decrypt(_chunks(source), out, name=source.name, **options)
    return check, out.getvalue()


def assert_recent(when: datetime | None) -> None:
    assert when is not None and when.tzinfo is not None
    assert abs(datetime.now(UTC) - when) < timedelta(minutes=2)


# --- Fingerprint -----------------------------------------------------------------------------------


def test_fingerprint_parse_accepts_gpg_spacing_and_lower_case() -> None:
    spaced = "abcd 1234 abcd 1234 abcd  1234 ABCD 1234 abcd 1234"
    assert str(Fingerprint.parse(spaced)) == "ABCD1234" * 5
    assert Fingerprint.parse(" " + "0" * 40 + "\n") == Fingerprint("0" * 40)


@pytest.mark.parametrize(
    "text",
    ["A" * 39, "A" * 41, "G" + "A" * 39, "0x" + "A" * 38, "", "ABCD-" * 8],
    ids=["39-digits", "41-digits", "non-hex", "0x-prefix", "empty", "dashes"],
)
def test_fingerprint_refuses_anything_but_40_hex_digits(text: str) -> None:
    with pytest.raises(CryptoError, match="40 hexadecimal digits"):
        Fingerprint.parse(text)


def test_fingerprint_cannot_be_built_unnormalised() -> None:
    with pytest.raises(CryptoError):
        Fingerprint("abcd1234" * 5)


# --- packages: encrypt with the gateway, open with plain gpg ------------------------------------


def test_officer_decrypts_package_with_plain_gpg(world: World, tmp_path: Path) -> None:
    target = package(world, tmp_path)
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temp file left beside it

    result = gpg(world.alice_home, "--decrypt", str(target), check=False)

    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == CSV
    lines = statuses(result.stderr)
    assert [line[0] for line in lines if line[0] in {"GOODSIG", "BADSIG", "ERRSIG"}] == ["GOODSIG"]
    validsig = next(line for line in lines if line[0] == "VALIDSIG")
    assert validsig[-1] == str(world.gateway_fpr)


def test_package_names_the_marking_and_uses_aes256(world: World, tmp_path: Path) -> None:
    target = package(world, tmp_path)

    listed = gpg(world.alice_home, "--list-packets", str(target))

    assert f'name="{LITERAL}"' in listed.stdout.decode()
    info = next(line for line in statuses(listed.stderr) if line[0] == "DECRYPTION_INFO")
    assert info[2] == "9"  # symmetric algorithm 9 = AES-256
    assert ":pubkey enc packet:" in listed.stdout.decode()
    assert not target.read_bytes().startswith(b"-----BEGIN")  # binary, not armored


def test_compression_level_is_applied(world: World, tmp_path: Path) -> None:
    fast = package(world, tmp_path / "z1", compress_level=1)
    stored = package(world, tmp_path / "z0", compress_level=0)
    assert fast.stat().st_size * 2 < stored.stat().st_size
    assert "compressed packet" not in gpg(world.alice_home, "--list-packets", str(stored)).stdout.decode()


def test_decrypt_round_trip_names_gateway_primary_key_and_the_package_purpose(world: World, tmp_path: Path) -> None:
    source = package(world, tmp_path / "in")

    check, plaintext = decrypt(Keyring(world.alice_home), source, signers=[world.gateway_fpr])

    assert check.valid and check.problem is None
    assert check.fingerprint == world.gateway_fpr
    assert check.notations == (("purpose@iom-gateway", "package"),)
    assert_recent(check.signed_at)
    assert plaintext == CSV


def test_decrypt_with_other_expected_signer_or_purpose_is_refused(world: World, tmp_path: Path) -> None:
    source = package(world, tmp_path / "in")
    with pytest.raises(CryptoError, match="not signed by a gateway key"):
        decrypt(Keyring(world.alice_home), source, signers=[world.ursula])
    with pytest.raises(CryptoError, match="made for package, not for manifest"):
        decrypt(Keyring(world.alice_home), source, signers=[world.gateway_fpr], purpose=Purpose.MANIFEST)


@pytest.mark.parametrize("where", [0, 5, 60, 120, "third", "middle", -30, -1])
def test_tampered_package_is_refused(world: World, tmp_path: Path, where: int | str) -> None:
    source = package(world, tmp_path / "in", compress_level=0)  # uncompressed: a flip reaches the MDC check
    blob = bytearray(source.read_bytes())
    offset = {"third": len(blob) // 3, "middle": len(blob) // 2}.get(str(where), where)
    assert isinstance(offset, int)
    blob[offset] ^= 0x01
    source.write_bytes(bytes(blob))
    with pytest.raises(CryptoError):  # what gpg wrote before it failed is the caller's to discard
        decrypt(Keyring(world.alice_home), source)


def test_decrypt_refuses_what_is_not_for_this_keyring(world: World, tmp_path: Path) -> None:
    source = package(world, tmp_path / "in")
    signed_only = tmp_path / "in" / "signed.gpg"
    gpg(world.alice_home, "--output", str(signed_only), "--sign", str(world.data))
    symmetric = tmp_path / "in" / "symmetric.gpg"
    nopass = ("--passphrase", "Pa55word!", "--pinentry-mode", "loopback", "--s2k-mode", "1")
    gpg(world.alice_home, *nopass, "--output", str(symmetric), "--symmetric", str(world.data))
    stranger = Keyring(world.ursula_home)

    with pytest.raises(CryptoError, match="not encrypted to a key in this keyring"):
        decrypt(stranger, source)
    for junk, why in ((world.data, "not an OpenPGP encrypted file"), (signed_only, "not an OpenPGP encrypted file")):
        with pytest.raises(CryptoError, match=why):
            decrypt(stranger, junk)
    started = time.monotonic()
    with pytest.raises(CryptoError, match="encrypted with a password"):  # fails fast, never prompts
        decrypt(stranger, symmetric)
    assert time.monotonic() - started < 10


def test_a_failing_data_source_stops_gpg_and_is_raised(world: World) -> None:
    """A read that fails (a file changed under the gateway, say) ends gpg at once and reaches the caller."""

    def source() -> Iterator[bytes]:
        yield CSV[:1000]
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output"):
        world.gateway.verify_detached(source(), b"\x88" * 100)
    with pytest.raises(OSError, match="Input/output"):
        world.gateway.encrypt(
            source(), io.BytesIO(), recipients=[world.alice], signer=world.gateway_fpr, literal_name=LITERAL
        )


def test_encrypt_refuses_missing_or_unknown_recipients(world: World, tmp_path: Path) -> None:
    encrypt = world.gateway.encrypt
    with pytest.raises(CryptoError, match="no recipients"):
        encrypt(_chunks(world.data), io.BytesIO(), recipients=[], signer=world.gateway_fpr, literal_name=LITERAL)
    with pytest.raises(CryptoError, match=str(world.ursula)):
        encrypt(
            _chunks(world.data), io.BytesIO(), recipients=[world.ursula], signer=world.gateway_fpr, literal_name=LITERAL
        )
    with pytest.raises(CryptoError, match="secret key"):  # Alice's public key cannot sign for the gateway
        encrypt(_chunks(world.data), io.BytesIO(), recipients=[world.alice], signer=world.alice, literal_name="x")
    with pytest.raises(ValueError, match="path separator"):
        encrypt(
            _chunks(world.data), io.BytesIO(), recipients=[world.alice], signer=world.gateway_fpr, literal_name="../x"
        )


# --- detached signatures: officers sign with plain gpg, the gateway verifies ----------------------


@pytest.mark.parametrize("armor", [False, True], ids=["binary-sig", "armored-asc"])
def test_plain_gpg_detached_signature_verifies(world: World, tmp_path: Path, armor: bool) -> None:
    signature = tmp_path / ("submission.csv.asc" if armor else "submission.csv.sig")
    gpg(world.alice_home, *(["--armor"] if armor else []), "--output", str(signature), "--detach-sign", str(world.data))
    assert signature.read_bytes().startswith(b"-----BEGIN PGP SIGNATURE") == armor

    check = verify(world.gateway, world.data, signature)

    assert check.valid and check.problem is None
    assert check.fingerprint == world.alice  # the primary key, although a subkey made the signature
    signing_subkey = subkey_fingerprints(world.alice_home, str(world.alice))[-1]
    assert signing_subkey != str(world.alice)
    plain = statuses(gpg(world.alice_home, "--verify", str(signature), str(world.data)).stderr)
    validsig = next(line for line in plain if line[0] == "VALIDSIG")
    assert validsig[1] == signing_subkey and validsig[-1] == str(world.alice)  # gpg's view: subkey signed
    assert_recent(check.signed_at)


def test_signature_over_other_bytes_is_a_changed_file(world: World, tmp_path: Path) -> None:
    data, signature = tmp_path / "s.csv", tmp_path / "s.csv.sig"
    data.write_bytes(CSV)
    gpg(world.alice_home, "--output", str(signature), "--detach-sign", str(data))
    data.write_bytes(CSV.replace(b"Lee", b"Lea", 1))

    check = verify(world.gateway, data, signature)

    assert not check.valid
    assert check.problem is not None and "changed after it was signed" in check.problem
    assert check.fingerprint is None


def test_unregistered_signer_has_no_public_key(world: World, tmp_path: Path) -> None:
    signature = tmp_path / "s.sig"
    gpg(world.ursula_home, "--output", str(signature), "--detach-sign", str(world.data))

    check = verify(world.gateway, world.data, signature)

    assert not check.valid and check.fingerprint is None
    assert check.problem is not None and check.problem.startswith("no public key for this signature (key ID ")
    assert "not registered" in check.problem


def test_revoked_signer_is_refused(world: World, tmp_path: Path) -> None:
    home = tmp_path / "rob"
    rob = Fingerprint(new_officer(home, "Rob Revoked", "rob@probation.example"))
    signature = tmp_path / "s.sig"
    gpg(home, "--output", str(signature), "--detach-sign", str(world.data))
    gateway = Keyring(tmp_path / "gateway")
    gateway_fpr = gateway.generate("Gateway", "gw@iom.example")
    assert gateway.import_public(gpg(home, "--armor", "--export", str(rob)).stdout) == (rob,)
    assert verify(gateway, world.data, signature).valid

    certificate = revocation_certificate(home, str(rob), tmp_path / "rob.rev")
    assert gateway.import_public(certificate.read_bytes()) == (rob,)
    check = verify(gateway, world.data, signature)

    assert not check.valid and check.fingerprint == rob
    assert check.problem is not None and "revoked" in check.problem
    info = gateway.key(rob)
    assert info.revoked and not info.can_sign and not info.can_encrypt
    with pytest.raises(CryptoError, match="revoked"):
        gateway.encrypt(_chunks(world.data), io.BytesIO(), recipients=[rob], signer=gateway_fpr, literal_name="x")
    stop_agent(home)
    stop_agent(gateway.home)


def test_expired_signer_is_refused(world: World, tmp_path: Path) -> None:
    home = tmp_path / "olga"
    olga = Fingerprint(new_officer(home, "Olga Old", "olga@council.example", expire="1d", faked_time="20200101T000000"))
    signature = tmp_path / "s.sig"
    gpg(home, "--faked-system-time", "20200101T010000", "--output", str(signature), "--detach-sign", str(world.data))
    world.gateway.import_public(gpg(home, "--armor", "--export", str(olga)).stdout)

    check = verify(world.gateway, world.data, signature)

    assert not check.valid and check.fingerprint == olga
    assert check.problem is not None and "expired" in check.problem
    assert check.signed_at == datetime(2020, 1, 1, 1, 0, tzinfo=UTC)
    info = world.gateway.key(olga)
    assert info.expired and not info.revoked and not info.can_sign
    assert info.expires == datetime(2020, 1, 2, tzinfo=UTC)
    stop_agent(home)


@pytest.mark.parametrize("kind", ["csv", "empty", "public-key", "inline-signed", "clearsigned", "huge"])
def test_what_is_not_a_detached_signature_is_invalid(world: World, tmp_path: Path, kind: str) -> None:
    fake = tmp_path / "fake.sig"
    if kind == "csv":
        fake.write_bytes(CSV[:500])
    elif kind == "empty":
        fake.write_bytes(b"")
    elif kind == "public-key":
        fake.write_text(world.gateway.export_public(world.alice))
    elif kind == "huge":
        fake.write_bytes(b"\x89" * (1024 * 1024))
    else:  # a signed message of the same data is not a detached signature and must not verify it
        mode = "--sign" if kind == "inline-signed" else "--clearsign"
        gpg(world.alice_home, "--output", str(fake), mode, str(world.data))

    check = verify(world.gateway, world.data, fake)

    assert not check.valid and check.fingerprint is None
    assert check.problem is not None and check.problem.startswith("not an OpenPGP signature")


def test_two_signatures_in_one_file_are_refused(world: World, tmp_path: Path) -> None:
    first, second = tmp_path / "1.sig", tmp_path / "2.sig"
    gpg(world.alice_home, "--output", str(first), "--detach-sign", str(world.data))
    gpg(world.ursula_home, "--output", str(second), "--detach-sign", str(world.data))
    both = tmp_path / "both.sig"
    both.write_bytes(first.read_bytes() + second.read_bytes())

    check = verify(world.gateway, world.data, both)

    assert not check.valid and check.problem is not None and "more than one signature" in check.problem


def test_gateway_signature_verifies_with_plain_gpg(world: World, tmp_path: Path) -> None:
    signature = tmp_path / "manifest.json.sig"
    signature.write_bytes(
        world.gateway.sign_bytes(world.data.read_bytes(), world.gateway_fpr, purpose=Purpose.MANIFEST)
    )

    result = gpg(world.alice_home, "--verify", str(signature), str(world.data), check=False)

    assert result.returncode == 0
    assert any(line[0] == "GOODSIG" for line in statuses(result.stderr))
    lines = statuses(result.stderr)
    assert ["NOTATION_NAME", "purpose@iom-gateway"] in lines and ["NOTATION_DATA", "manifest"] in lines
    assert verify(world.gateway, world.data, signature).fingerprint == world.gateway_fpr


def test_sign_detached_never_falls_back_to_another_key(world: World) -> None:
    # gpg --default-key silently signs with the first secret key when the named one has none
    with pytest.raises(CryptoError, match=str(world.alice)):
        world.gateway.sign_detached(_chunks(world.data), world.alice)


# --- keys --------------------------------------------------------------------------------------------


def test_import_public_refuses_secret_keys_and_garbage(world: World) -> None:
    secret = gpg(world.ursula_home, "--armor", "--export-secret-keys", str(world.ursula)).stdout
    assert b"PRIVATE KEY BLOCK" in secret

    with pytest.raises(CryptoError, match="send only the public key"):
        world.gateway.import_public(secret)
    with pytest.raises(CryptoError, match="nothing was imported"):
        world.gateway.import_public(
            b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm9wZQ==\n-----END PGP PUBLIC KEY BLOCK-----\n"
        )
    with pytest.raises(CryptoError, match="nothing was imported"):
        world.gateway.import_public(CSV[:300])

    listed = world.gateway.keys()
    assert world.ursula not in {info.fingerprint for info in listed}


def test_key_reports_expiry_capabilities_and_secrets(world: World, tmp_path: Path) -> None:
    mine = world.gateway.key(world.gateway_fpr)
    assert mine.has_secret and mine.can_sign and mine.can_encrypt and not (mine.revoked or mine.expired)
    assert mine.algorithm == "ed25519"
    assert mine.user_ids == ("IOM Gateway (test) <gateway@iom.example>",)
    assert mine.expires is not None and abs(mine.expires - mine.created - timedelta(days=730)) < timedelta(minutes=1)
    assert_recent(mine.created)

    alice = world.gateway.key(world.alice)
    assert not alice.has_secret and alice.can_sign and alice.can_encrypt
    listed = world.gateway.keys()
    assert {world.gateway_fpr, world.alice} <= {info.fingerprint for info in listed}
    with pytest.raises(CryptoError, match="import the officer's public key"):
        world.gateway.key(world.ursula)

    forever = Keyring(tmp_path / "forever")
    fpr = forever.generate("Zoë Ní Bhriain", "zoe@yos.example", expire_days=None)
    info = forever.key(fpr)
    assert info.expires is None and info.user_ids == ("Zoë Ní Bhriain <zoe@yos.example>",)
    stop_agent(forever.home)


def test_generate_refuses_bad_input(tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / "k")
    with pytest.raises(ValueError, match="unknown key algorithm"):
        keyring.generate("Ann Lee", "ann@police.example", algorithm="dsa1024")
    with pytest.raises(CryptoError, match="line break"):
        keyring.generate("Ann\nKey-Type: RSA", "ann@police.example")
    with pytest.raises(CryptoError, match="not an e-mail address"):
        keyring.generate("Ann Lee", "ann")
    assert keyring.keys() == ()


@pytest.mark.slow
def test_rsa3072_generation(tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / "rsa")
    info = keyring.key(keyring.generate("RSA Officer", "rsa@police.example", algorithm="rsa3072"))
    assert info.algorithm == "rsa3072" and info.can_sign and info.can_encrypt and info.has_secret
    stop_agent(keyring.home)


def test_keyring_home_is_private(tmp_path: Path) -> None:
    created = Keyring(tmp_path / "new" / "home").home
    assert created.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o750)  # group may enter: not private enough for keys
    with pytest.raises(CryptoError, match="chmod 700"):
        Keyring(shared)
