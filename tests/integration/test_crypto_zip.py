"""AES-256 ZIP packages: round trips, real 7-Zip interop, and every kind of tampering refused."""

from __future__ import annotations

import errno
import gc
import io
import os
import random
import shutil
import struct
import subprocess
import sys
import threading
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest
import pyzipper

from gateway.adapters import aeszip as crypto_zip
from gateway.adapters.aeszip import read_aes_zip, write_aes_zip
from gateway.adapters.passwords import generate
from gateway.core.errors import CryptoError, InputFileError
from gateway.core.secret import Secret

PASSWORD = Secret("Xq7#open-Sesame-2026")
SEVEN = shutil.which("7z")
UNZIP = shutil.which("unzip")
CANNOT_OPEN = "the password does not open this package: ask your agency's PDO for the current password"
UTF8_ENV = {**os.environ, "LC_ALL": "C.UTF-8"}  # so p7zip writes non-ASCII names as UTF-8


def _csv(rows: int) -> bytes:
    names = ["Siobhán", "Zoë", "Łukasz", "Nguyễn", "Ann"]
    lines = [f'{names[i % 5]},Lee-O\'Brien,M,01/01/1990,BH11AA,"Note {i}, «quoted»"\r\n' for i in range(rows)]
    return ("forename,surname,gender,date_of_birth,postcode,criminal_history\r\n" + "".join(lines)).encode()


CASES = {
    "empty": b"",
    "non-ascii": _csv(50),
    "3mib": _csv(20_000) + random.Random(7).randbytes(2 << 20),  # text, then incompressible bytes
}


def _pack(folder: Path, data: bytes, member: str = "data.csv", password: Secret = PASSWORD) -> Path:
    source, package = folder / "plain.bin", folder / "package.zip"
    source.write_bytes(data)
    with source.open("rb") as src, package.open("wb") as target:
        write_aes_zip(src, target, member=member, password=password)
    return package


def _pack_through_pipe(folder: Path, data: bytes, member: str = "data.csv") -> Path:
    """Write the package into a pipe (not seekable), as a network stream would be written."""
    package = folder / "piped.zip"
    read_end, write_end = os.pipe()
    with package.open("wb") as out:

        def drain() -> None:
            with os.fdopen(read_end, "rb") as pipe:
                shutil.copyfileobj(pipe, out)

        thread = threading.Thread(target=drain)
        thread.start()
        with os.fdopen(write_end, "wb") as pipe:
            write_aes_zip(io.BytesIO(data), pipe, member=member, password=PASSWORD)
        thread.join()
    return package


def _unpack(package: Path, password: Secret = PASSWORD) -> tuple[str, bytes]:
    out = package.with_suffix(".out")
    with package.open("rb") as source, out.open("wb") as target:
        name = read_aes_zip(source, password=password, target=target)
    return name, out.read_bytes()


def _unpack_bytes(data: bytes, password: Secret = PASSWORD) -> str:
    return read_aes_zip(io.BytesIO(data), password=password, target=io.BytesIO())


def _seven(*args: str) -> subprocess.CompletedProcess[str]:
    if SEVEN is None:  # a missing tool is a missing install step, never a skip
        pytest.fail("7-Zip is missing: install p7zip-full (./scripts/test does)")
    return subprocess.run(
        [SEVEN, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, env=UTF8_ENV, check=False
    )


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_round_trip(tmp_path: Path, case: str) -> None:
    package = _pack(tmp_path, CASES[case], member="PROTECT-PERSONAL__police__2026-10__Zoë.csv")
    assert _unpack(package) == ("PROTECT-PERSONAL__police__2026-10__Zoë.csv", CASES[case])


def test_round_trip_through_an_unseekable_target(tmp_path: Path) -> None:
    package = _pack_through_pipe(tmp_path, CASES["3mib"])
    assert package.read_bytes()[6] & 0x08  # sizes in a data descriptor: pyzipper could not seek back
    assert _unpack(package) == ("data.csv", CASES["3mib"])


def test_each_package_is_salted_afresh(tmp_path: Path) -> None:
    first = _pack(tmp_path, CASES["non-ascii"]).read_bytes()
    second = _pack(tmp_path, CASES["non-ascii"]).read_bytes()
    assert first[60:120] != second[60:120]


# -- real 7-Zip and Info-ZIP ------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_7zip_extracts_the_original_bytes(tmp_path: Path, case: str) -> None:
    password = generate()  # what agencies really get: specials included, passed as one argv word
    package = _pack(tmp_path, CASES[case], member="Siobhán_2026-10.csv", password=password)
    result = _seven("x", f"-p{password.reveal()}", f"-o{tmp_path / 'out'}", "-y", str(package))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out" / "Siobhán_2026-10.csv").read_bytes() == CASES[case]


def test_7zip_extracts_a_package_written_to_a_pipe(tmp_path: Path) -> None:
    package = _pack_through_pipe(tmp_path, CASES["3mib"])
    result = _seven("x", f"-p{PASSWORD.reveal()}", f"-o{tmp_path / 'out'}", "-y", str(package))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out" / "data.csv").read_bytes() == CASES["3mib"]


def test_7zip_refuses_a_wrong_password(tmp_path: Path) -> None:
    package = _pack(tmp_path, CASES["non-ascii"])
    result = _seven("t", "-pXq7#open-Sesame-2025", str(package))
    assert result.returncode != 0
    assert "Wrong password" in result.stdout + result.stderr


def test_7zip_lists_aes_256_with_no_crc(tmp_path: Path) -> None:
    package = _pack(tmp_path, CASES["non-ascii"])
    listing = _seven("l", "-slt", str(package)).stdout
    assert "Method = AES-256 Deflate" in listing
    assert "Encrypted = +" in listing
    assert "\nCRC = \n" in listing  # AE-2: no CRC of the plaintext to leak


def test_info_zip_unzip_cannot_open_it_so_recipients_need_7zip(tmp_path: Path) -> None:
    if UNZIP is None:
        pytest.fail("Info-ZIP unzip is missing: install unzip (./scripts/test does)")
    package = _pack(tmp_path, CASES["non-ascii"])
    result = subprocess.run(
        [UNZIP, "-o", "-P", PASSWORD.reveal(), str(package), "-d", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "unsupported compression method 99" in result.stdout + result.stderr  # 99 = WinZip AES
    assert not (tmp_path / "out" / "data.csv").exists()


# -- tampering ----------------------------------------------------------------------------------


def _flipped(data: bytes, offset: int, mask: int) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= mask
    return bytes(changed)


@pytest.mark.parametrize("make", [_pack, _pack_through_pipe], ids=["seekable", "pipe"])
def test_flipping_any_single_byte_is_refused(tmp_path: Path, make: Callable[[Path, bytes], Path]) -> None:
    """Every byte: headers, salt, password verifier, data, authentication code, directory, end record."""
    original = make(tmp_path, b"forename,surname\r\nZo\xc3\xab,Lee\r\n")
    data = original.read_bytes()
    assert _unpack_bytes(data) == "data.csv"
    for offset in range(len(data)):
        for mask in (0x01, 0xFF):
            with pytest.raises(CryptoError):
                _unpack_bytes(_flipped(data, offset, mask))


def test_flipped_bytes_in_a_large_package_are_refused(tmp_path: Path) -> None:
    data = _pack(tmp_path, CASES["3mib"]).read_bytes()
    auth_code = data.rindex(b"PK\x01\x02") - 10
    for offset in (10, 60, len(data) // 2, auth_code - 1, auth_code, auth_code + 9):
        with pytest.raises(CryptoError, match=r"damaged, was altered|password does not open"):
            _unpack_bytes(_flipped(data, offset, 0x01))


def test_a_truncated_or_extended_package_is_refused(tmp_path: Path) -> None:
    data = _pack(tmp_path, CASES["non-ascii"]).read_bytes()
    for changed in (data[:-1], data[: len(data) // 2], data + b"\0", b"\0" + data):
        with pytest.raises(CryptoError):
            _unpack_bytes(changed)


def test_a_wrong_password_is_refused(tmp_path: Path) -> None:
    package = _pack(tmp_path, CASES["non-ascii"])
    with pytest.raises(CryptoError) as raised:
        _unpack(package, Secret("Xq7#open-Sesame-2025"))
    assert raised.value.message == CANNOT_OPEN


def _pyzipper_aes(path: Path, names: list[str]) -> Path:
    with pyzipper.AESZipFile(path, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES) as archive:
        archive.setpassword(PASSWORD.reveal().encode())
        for name in names:
            archive.writestr(name, b"forename,surname\r\n")
    return path


def test_two_files_are_refused(tmp_path: Path) -> None:
    package = _pyzipper_aes(tmp_path / "two.zip", ["a.csv", "b.csv"])
    with pytest.raises(CryptoError, match="holds 2 files, not exactly one"):
        _unpack(package)


@pytest.mark.parametrize("name", ["../evil.csv", "/etc/cron.d/evil", "sub/dir.csv", "..\\evil.csv", ".bashrc", "C:x"])
def test_a_name_that_is_not_a_plain_file_name_is_refused(tmp_path: Path, name: str) -> None:
    package = _pyzipper_aes(tmp_path / "evil.zip", [name])
    with pytest.raises(CryptoError, match="is not a plain file name"):
        _unpack(package)


def test_an_unencrypted_zip_is_refused(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "plain.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data.csv", CASES["non-ascii"])
    with pytest.raises(CryptoError, match="not AES-256 encrypted"):
        _unpack(tmp_path / "plain.zip")


def test_a_zipcrypto_zip_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_bytes(CASES["non-ascii"])
    made = _seven(
        "a", "-tzip", "-mem=ZipCrypto", f"-p{PASSWORD.reveal()}", str(tmp_path / "zc.zip"), str(tmp_path / "data.csv")
    )
    assert made.returncode == 0, made.stdout
    with pytest.raises(CryptoError, match="not AES-256 encrypted"):
        _unpack(tmp_path / "zc.zip")


def test_an_aes_zip_made_by_another_tool_is_refused(tmp_path: Path) -> None:
    """The reader knows only the gateway's exact layout: that is what makes every byte checked."""
    (tmp_path / "data.csv").write_bytes(CASES["non-ascii"])
    made = _seven(
        "a", "-tzip", "-mem=AES256", f"-p{PASSWORD.reveal()}", str(tmp_path / "7z.zip"), str(tmp_path / "data.csv")
    )
    assert made.returncode == 0, made.stdout
    with pytest.raises(CryptoError, match="not made by iom-gateway"):
        _unpack(tmp_path / "7z.zip")


@pytest.mark.parametrize(
    "content", [b"", b"forename,surname\r\n", b"PK\x05\x06" + b"\0" * 18, b"PK\x03\x04" + b"\0" * 200]
)
def test_a_file_that_is_not_a_zip_is_refused(content: bytes) -> None:
    with pytest.raises(CryptoError, match=r"not an iom-gateway ZIP package|damaged"):
        _unpack_bytes(content)


# -- the writer's own checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "member",
    [
        "",
        "../x.csv",
        "a/b.csv",
        "a\\b.csv",
        "a..b.csv",
        ".hidden.csv",
        "nul\0.csv",
        "tab\t.csv",
        "bidi\u202e.csv",
        "x" * 201,
    ],
)
def test_the_writer_refuses_a_member_that_is_not_a_plain_file_name(member: str) -> None:
    target = io.BytesIO()
    with pytest.raises(ValueError, match="is not a plain file name"):
        write_aes_zip(io.BytesIO(b"x"), target, member=member, password=PASSWORD)
    assert target.getvalue() == b""


def test_the_writer_accepts_a_200_character_name(tmp_path: Path) -> None:
    name = "é" * 196 + ".csv"
    assert _unpack(_pack(tmp_path, b"x", member=name)) == (name, b"x")


def test_the_writer_refuses_an_empty_password() -> None:
    with pytest.raises(ValueError, match="non-empty password"):
        write_aes_zip(io.BytesIO(b"x"), io.BytesIO(), member="a.csv", password=Secret(""))


def test_the_writer_refuses_a_file_over_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crypto_zip, "MAX_MEMBER_BYTES", 3 * crypto_zip.CHUNK)
    with pytest.raises(InputFileError, match="deliver it by OpenPGP"):
        write_aes_zip(io.BytesIO(bytes(4 * crypto_zip.CHUNK)), io.BytesIO(), member="a.csv", password=PASSWORD)


def test_the_reader_needs_a_seekable_source(tmp_path: Path) -> None:
    package = _pack(tmp_path, b"x")
    read_end, write_end = os.pipe()
    os.write(write_end, package.read_bytes())
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe, pytest.raises(ValueError, match="seekable"):
        read_aes_zip(pipe, password=PASSWORD, target=io.BytesIO())


# -- expansion: ZIP bombs, caps and headers that lie -------------------------------------------

ROW = b"Ann,Lee,M,01/01/1990\r\n"  # the same row over and over: Deflate shrinks it about 400 times
RUN = b","  # a run of one byte: Deflate's best case, about 1,030 times, what a ZIP bomb is made of


def test_the_reader_refuses_a_file_over_the_callers_cap_before_unpacking(tmp_path: Path) -> None:
    package = _pack(tmp_path, CASES["3mib"])  # an ordinary ratio: only the size is refused
    target = io.BytesIO()
    with package.open("rb") as source, pytest.raises(CryptoError) as raised:
        read_aes_zip(source, password=PASSWORD, target=target, max_bytes=1 << 20)
    assert target.getvalue() == b""
    assert f"{len(CASES['3mib']):,} bytes, more than the 1,048,576 bytes" in raised.value.message
    with package.open("rb") as source:  # the cap is inclusive
        assert read_aes_zip(source, password=PASSWORD, target=io.BytesIO(), max_bytes=len(CASES["3mib"]))


def test_the_reader_refuses_a_small_bomb_and_names_its_ratio(tmp_path: Path) -> None:
    with _seekable_bomb(tmp_path / "bomb.zip", 2 << 20) as source:
        target = io.BytesIO()
        with pytest.raises(CryptoError, match=r"would expand [0-9,]+ times.* a ZIP bomb") as raised:
            read_aes_zip(source, password=PASSWORD, target=target)
    assert target.getvalue() == b""
    assert f"{crypto_zip.MAX_RATIO}:1" in raised.value.message


def _seekable_bomb(path: Path, size: int) -> BinaryIO:
    """`size` bytes of one repeated byte, in the gateway's layout, written by pyzipper bypassing our writer's checks."""
    info = crypto_zip._new_member("bomb.csv")
    with pyzipper.AESZipFile(path, "w", compression=pyzipper.ZIP_DEFLATED, allowZip64=False) as archive:
        archive.setpassword(PASSWORD.reveal().encode())
        archive.setencryption(pyzipper.WZ_AES, nbits=256, force_wz_aes_version=2)
        with archive.open(info, "w") as sink:
            sink.write(RUN * size)
    return path.open("rb")


def test_rows_copied_over_and_over_still_reach_their_recipient(tmp_path: Path) -> None:
    """Odd but valid: a big file of one row repeated compresses about 400 times, and is not a bomb."""
    data = ROW * ((3 << 20) // len(ROW))
    package = _pack(tmp_path, data)
    assert len(data) > 100 * package.stat().st_size
    assert _unpack(package) == ("data.csv", data)


def test_the_writer_refuses_to_make_a_package_its_reader_would_refuse() -> None:
    target = io.BytesIO()
    with pytest.raises(InputFileError, match=r"compresses [0-9,]+ times") as raised:
        write_aes_zip(io.BytesIO(RUN * (3 << 20)), target, member="a.csv", password=PASSWORD)
    assert "check the export" in raised.value.message


def _understated(data: bytes, size: int) -> bytes:
    """`data` (a seekable-written package) with the uncompressed size in both headers set to `size`."""
    changed = bytearray(data)
    central = data.rindex(b"PK\x01\x02")
    struct.pack_into("<L", changed, 22, size)  # local header: uncompressed size
    struct.pack_into("<L", changed, central + 24, size)  # central directory: uncompressed size
    return bytes(changed)


def test_headers_that_understate_the_size_never_get_more_than_it_written(tmp_path: Path) -> None:
    data = _pack(tmp_path, CASES["3mib"]).read_bytes()
    for size in (0, 1000, 1 << 20):
        target = io.BytesIO()
        with pytest.raises(CryptoError, match="damaged, was altered"):
            read_aes_zip(io.BytesIO(_understated(data, size)), password=PASSWORD, target=target)
        assert len(target.getvalue()) <= size


# -- a full disk --------------------------------------------------------------------------------


@pytest.mark.parametrize("buffering", [0, -1], ids=["unbuffered", "buffered"])
def test_a_full_disk_raises_enospc_once_and_leaves_pyzipper_nothing_to_complain_of(
    monkeypatch: pytest.MonkeyPatch, buffering: int
) -> None:
    """/dev/full fails every write with a real ENOSPC; pyzipper's half-closed objects used to print
    "Exception ignored ... ValueError: Can't close the ZIP file" when garbage-collected."""
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    # pytest.raises outermost: the caller's own close of a buffered file fails too, as in the pipeline
    with pytest.raises(OSError) as raised, open("/dev/full", "wb", buffering=buffering) as target:
        write_aes_zip(io.BytesIO(CASES["3mib"]), cast(BinaryIO, target), member="a.csv", password=PASSWORD)
    assert raised.value.errno == errno.ENOSPC
    gc.collect()
    assert [repr(u.exc_value) for u in unraisable] == []


def test_the_writer_stops_reading_the_source_at_the_first_failed_write() -> None:
    source = io.BytesIO(CASES["3mib"])
    with open("/dev/full", "wb", buffering=0) as target, pytest.raises(OSError):
        write_aes_zip(source, cast(BinaryIO, target), member="a.csv", password=PASSWORD)
    assert source.tell() <= crypto_zip.CHUNK


# -- streaming ----------------------------------------------------------------------------------

STREAM_BYTES = 16 << 20


class _Pattern(io.RawIOBase):
    """STREAM_BYTES of incompressible-looking data, produced as read, never held whole."""

    def __init__(self) -> None:
        self._block = random.Random(3).randbytes(65_537)
        self._left = STREAM_BYTES

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        size = min(len(buffer), self._left, len(self._block))
        buffer[:size] = self._block[:size]
        self._left -= size
        return size


class _Counter(io.RawIOBase):
    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.count += len(data)
        return len(data)


def _peak(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    package = tmp_path / "big.zip"
    with package.open("wb") as target:
        source = io.BufferedReader(_Pattern())
        write_peak = _peak(lambda: write_aes_zip(source, target, member="big.csv", password=PASSWORD))
    sink = _Counter()
    with package.open("rb") as packed:
        read_peak = _peak(lambda: read_aes_zip(packed, password=PASSWORD, target=cast(BinaryIO, sink)))
    assert package.stat().st_size > STREAM_BYTES // 2 and sink.count == STREAM_BYTES
    assert write_peak < 6 << 20 and read_peak < 6 << 20, (write_peak, read_peak)
