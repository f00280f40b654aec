"""Issue 9, finding 6 (process hardening): a ZIP bomb, a full disk, core dumps, folder modes.

Each test reproduces what the attack did against the code before the fix: a real AES-256 ZIP
bomb that 7-Zip opens; a real 64 KiB tmpfs under an AES-ZIP agency's inbox and a real
`run --once`; a real daemon's /proc/PID/limits; real `init --demo` and daemon processes under a
hostile umask.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import pyzipper

from gateway.crypto_zip import read_aes_zip
from gateway.errors import CryptoError
from gateway.secret import Secret

SEVEN = shutil.which("7z")
PASSWORD = Secret("Xq7#open-Sesame-2026")
MIB = 1 << 20
HEADER = b"forename,surname,gender,date_of_birth\r\n"


# -- 1. the AES-ZIP reader and a ZIP bomb --------------------------------------------------------


def _aes_zip_bomb(path: Path, member: str, size: int) -> None:
    """A genuine AES-256 (AE-2) ZIP made with pyzipper in the gateway's own layout: a CSV header, then
    `size` bytes of zeros, which Deflate shrinks about 1,030 times. Password and authentication code
    are valid: only its expansion gives it away."""
    info = pyzipper.zipfile_aes.AESZipInfo(member, date_time=time.localtime()[:6])
    info.compress_type = pyzipper.ZIP_DEFLATED
    info.create_system = 3  # Unix, with the gateway's 0600 file mode: the reader checks every header byte
    info.external_attr = 0o600 << 16
    zeros = bytes(MIB)
    with pyzipper.AESZipFile(path, "w", compression=pyzipper.ZIP_DEFLATED, allowZip64=False) as archive:
        archive.setpassword(PASSWORD.reveal().encode())
        archive.setencryption(pyzipper.WZ_AES, nbits=256, force_wz_aes_version=2)
        with archive.open(info, "w") as sink:
            sink.write(HEADER)
            for _ in range(size // MIB):
                sink.write(zeros)


def _seven(*args: str) -> subprocess.CompletedProcess[str]:
    if SEVEN is None:
        pytest.fail("7-Zip is missing: install p7zip-full (./scripts/test does)")
    return subprocess.run(
        [SEVEN, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300, check=False
    )


def test_an_aes_zip_bomb_is_refused_before_anything_is_unpacked(tmp_path: Path) -> None:
    size = len(HEADER) + 256 * MIB
    bomb = tmp_path / "PROTECT-PERSONAL__police__2026-10__bomb.zip"
    _aes_zip_bomb(bomb, "PROTECT-PERSONAL__police__2026-10__bomb.csv", size)
    assert bomb.stat().st_size < size // 1000, "a bomb: over 1,000 times smaller than what it holds"

    # A genuine archive: 7-Zip lists it as AES-256 Deflate and tests it (password and MAC) as sound.
    listing = _seven("l", "-slt", f"-p{PASSWORD.reveal()}", str(bomb)).stdout
    assert "Method = AES-256 Deflate" in listing and "Encrypted = +" in listing
    assert f"\nSize = {size}\n" in listing
    tested = _seven("t", f"-p{PASSWORD.reveal()}", str(bomb))
    assert tested.returncode == 0 and "Everything is Ok" in tested.stdout, tested.stdout + tested.stderr

    out = tmp_path / "out.csv"
    with bomb.open("rb") as source, out.open("wb") as target, pytest.raises(CryptoError) as raised:
        read_aes_zip(source, password=PASSWORD, target=target)
    message = raised.value.message
    assert out.stat().st_size == 0, f"{out.stat().st_size:,} bytes were unpacked before the refusal"
    assert f"{size:,} bytes" in message, message  # what: the size it claims
    assert "ZIP bomb" in message and "nothing was unpacked" in message, message  # why, and what happened
