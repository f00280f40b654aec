"""Sealing once (issue 13): one OpenPGP encryption split per agency, one Deflate stream for every ZIP,
both made while the file is validated; checked with the real peers (officers' own gpg homes, 7-Zip)."""

from __future__ import annotations

import io
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.adapters.aeszip import read_aes_zip, write_aes_zips
from gateway.cli import main
from gateway.core.errors import CryptoError, InputFileError
from gateway.core.secret import Secret
from gateway.state.root import Root
from tests.conftest import REPO
from tests.integration.gpg_helpers import gpg

GOOD = REPO / "samples" / "police-good-2026-10.csv"
GPG_AGENCIES = ("council", "probation", "yos")
ZIP_AGENCIES = ("housing", "treatment")


@pytest.fixture
def root(demo_root: Path) -> Path:
    return demo_root


def _drop(root: Path, agency: str, data: bytes, name: str, signer: str) -> Path:
    target = root / "outbox" / agency / name
    target.write_bytes(data)
    gpg(_home(root, signer), "--batch", "--yes", "--output", f"{target}.sig", "--detach-sign", str(target))
    return target


def _home(root: Path, officer: str) -> Path:
    return root / "keys" / "demo-officers" / officer


def _officers(root: Path, agency: str) -> list[str]:
    return [o.id for o in Root.open(root).registry.all(agency) if o.active]


def _package(root: Path, agency: str) -> Path:
    (found,) = [p for p in (root / "inbox" / agency).iterdir() if p.name.endswith((".csv.gpg", ".zip"))]
    return found


def _recipient_key_ids(root: Path, package: Path) -> set[str]:
    listing = gpg(root / "keys" / "gnupg", "--list-packets", str(package), check=False).stdout.decode()
    return {line.split("keyid ")[1].split()[0].upper() for line in listing.splitlines() if "pubkey enc packet" in line}


def _encryption_key_ids(root: Path, agency: str) -> set[str]:
    """The key ids of the encryption subkeys of every active officer of `agency`."""
    ids = set()
    for officer in _officers(root, agency):
        listing = gpg(_home(root, officer), "--with-colons", "--list-secret-keys").stdout.decode()
        ids |= {f.split(":")[4] for f in listing.splitlines() if f.startswith("ssb:") and "e" in f.split(":")[11]}
    return ids


def _after_session_keys(package: Path) -> bytes:
    """The bytes after the session-key packets (and markers): the encrypted data, as gpg made it."""
    data, offset = package.read_bytes(), 0
    while True:
        octet = data[offset]
        if octet & 0x40:  # new format; gpg writes a session-key packet with a one-octet length
            tag, header, length = octet & 0x3F, 2, data[offset + 1]
            assert tag not in (1, 10) or length < 192
        else:
            tag, size = (octet >> 2) & 0x0F, (1, 2, 4)[octet & 0x03]
            header, length = 1 + size, int.from_bytes(data[offset + 1 : offset + 1 + size], "big")
        if tag not in (1, 10):
            return data[offset:]
        offset += header + length


def _password(root: Path, agency: str) -> str:
    opened = Root.open(root)
    record, _ = opened.vault.current(agency)
    return opened.vault.password(record.id).reveal()


def test_each_openpgp_package_carries_only_its_own_agencys_session_keys(root: Path) -> None:
    _drop(root, "police", GOOD.read_bytes(), GOOD.name, "police-do")
    assert main(["--root", str(root), "run", "--once"]) == 0
    packages = {agency: _package(root, agency) for agency in GPG_AGENCIES}
    for agency, package in packages.items():
        assert _recipient_key_ids(root, package) == _encryption_key_ids(root, agency)  # the others' PKESKs are gone
        for officer in _officers(root, agency):
            opened = gpg(_home(root, officer), "--batch", "--decrypt", str(package), check=False)
            assert opened.returncode == 0 and opened.stdout == GOOD.read_bytes()
        for other in (a for a in GPG_AGENCIES if a != agency):
            refused = gpg(_home(root, _officers(root, other)[0]), "--batch", "--decrypt", str(package), check=False)
            assert refused.returncode != 0 and refused.stdout == b""
    # one encryption: after its own session-key packets, every package is the same encrypted data
    bodies = {_after_session_keys(p) for p in packages.values()}
    assert len(bodies) == 1 and len(next(iter(bodies))) > 100


def test_both_zips_open_with_7zip_and_our_reader_each_only_with_its_own_password(root: Path) -> None:
    _drop(root, "police", GOOD.read_bytes(), GOOD.name, "police-pdo")
    assert main(["--root", str(root), "run", "--once"]) == 0
    passwords = {agency: _password(root, agency) for agency in ZIP_AGENCIES}
    for agency in ZIP_AGENCIES:
        package = _package(root, agency)
        other = passwords[next(a for a in ZIP_AGENCIES if a != agency)]
        extracted = subprocess.run(
            ["7z", "x", "-so", f"-p{passwords[agency]}", str(package)], capture_output=True, check=False, timeout=60
        )
        assert extracted.returncode == 0 and extracted.stdout == GOOD.read_bytes()
        wrong = subprocess.run(["7z", "t", f"-p{other}", str(package)], capture_output=True, check=False, timeout=60)
        assert wrong.returncode != 0
        target = io.BytesIO()
        with package.open("rb") as source:
            assert read_aes_zip(source, password=Secret(passwords[agency]), target=target) == package.stem + ".csv"
            assert target.getvalue() == GOOD.read_bytes()
            with pytest.raises(CryptoError, match="password does not open"):
                read_aes_zip(source, password=Secret(other), target=io.BytesIO())


def _bad_rows() -> bytes:
    return GOOD.read_bytes().replace(b",M,W1,", b",Q,W1,")  # a gender Table 1 does not know


def _bad_header_big() -> bytes:
    # refused at its first line, while gpg and the Deflate thread are still on their ~5 MiB reads
    header, body = GOOD.read_bytes().split(b"\n", 1)
    return header.replace(b"Surname", b"Family Name") + b"\n" + body * 2500


@pytest.mark.parametrize("bad", [_bad_rows, _bad_header_big], ids=["row-errors", "bad-header-big"])
def test_a_file_refused_by_validation_leaves_no_package_no_temp_and_no_open_output(
    root: Path, bad: Callable[[], bytes]
) -> None:
    # the bytes are authenticated, so the encryptions start; validation then refuses the file
    data = bad()
    assert data != GOOD.read_bytes()
    _drop(root, "police", data, "police-bad-2026-10.csv", "police-do")
    before = set(os.listdir("/proc/self/fd"))
    assert main(["--root", str(root), "run", "--once"]) == 1
    assert [p for p in (root / "inbox").rglob("*") if p.is_file()] == []  # nothing published, no named temp
    assert list((root / "outbox" / "police" / "rejected").glob("police-bad-2026-10.report.txt"))
    leaked = []
    for fd in set(os.listdir("/proc/self/fd")) - before:
        try:
            leaked.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    assert [link for link in leaked if str(root) in link] == []  # every staged output was closed
    assert not [t for t in threading.enumerate() if t.name == "preseal"]  # and every encryption stopped


def test_one_deflate_stream_feeds_archives_the_strict_reader_and_7zip_accept(tmp_path: Path) -> None:
    data = b"".join(b"%d,Ashcroft,Siobh\xc3\xa1n,03/07/1988\r\n" % i for i in range(200_000))
    chunks = [data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    paths = [tmp_path / "a.zip", tmp_path / "b.zip"]
    passwords = [Secret("first-Password-1"), Secret("second-Password-2")]
    with paths[0].open("w+b") as a, paths[1].open("w+b") as b:
        write_aes_zips(iter(chunks), [(a, passwords[0]), (b, passwords[1])], member="x.csv", level=1)
    assert paths[0].read_bytes() != paths[1].read_bytes()  # own salt, own keys
    cases = [(paths[0], passwords[0], passwords[1]), (paths[1], passwords[1], passwords[0])]
    for path, password, other in cases:
        target = io.BytesIO()
        with path.open("rb") as source:
            assert read_aes_zip(source, password=password, target=target) == "x.csv"
            with pytest.raises(CryptoError, match="password does not open"):
                read_aes_zip(source, password=other, target=io.BytesIO())
        assert target.getvalue() == data
        argv = ["7z", "x", "-so", f"-p{password.reveal()}", str(path)]
        extracted = subprocess.run(argv, capture_output=True, check=False, timeout=60)
        assert extracted.returncode == 0 and extracted.stdout == data


def test_one_deflate_stream_refuses_what_the_reader_would(tmp_path: Path) -> None:
    with (tmp_path / "bomb.zip").open("w+b") as target, pytest.raises(InputFileError, match="ZIP bomb"):
        write_aes_zips(iter([bytes(4 << 20)]), [(target, Secret("first-Password-1"))], member="a.csv", level=9)
    with pytest.raises(ValueError, match="not a plain file name"):
        write_aes_zips(iter([b"x"]), [(io.BytesIO(), Secret("first-Password-1"))], member="../a.csv")
    with pytest.raises(ValueError, match="non-empty password"):
        write_aes_zips(iter([b"x"]), [(io.BytesIO(), Secret(""))], member="a.csv")
