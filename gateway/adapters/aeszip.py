"""AES-256 ZIP packages (WinZip AE-2, Deflate) holding exactly one file: the only user of pyzipper.

Recipients open them with 7-Zip (or WinZip); Info-ZIP `unzip` and the Windows Explorer cannot
open AES ZIPs at all. Both directions stream in 1 MiB chunks: memory does not grow with the file.

The reader accepts only the exact layout the writer makes (one local header, the encrypted data,
an optional data descriptor, one central directory entry, the end record, nothing else) and
compares every header byte against that layout. The WinZip AES authentication code covers only
the encrypted data, so this is what makes a change to *any* byte of a package an error.

Anyone who holds an agency's password can make a package the layout checks accept, so the reader
also refuses, before it decompresses anything, a file bigger than its caller allows or one that
would expand like a ZIP bomb (MAX_RATIO); and it never writes more than the size the headers give.
The writer refuses to make what the reader would refuse.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import secrets
import struct
import time
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

import pyzipper
from Cryptodome.Cipher import AES
from Cryptodome.Util import Counter

from gateway.core.errors import CryptoError, InputFileError
from gateway.core.secret import Secret

CHUNK = 1 << 20
# pyzipper (like zipfile) switches to ZIP64 above 2 GiB - 1. We write no ZIP64, so the layout stays
# fixed; the cap leaves room for Deflate's worst-case growth (about 0.03%) and the headers.
MAX_MEMBER_BYTES = 2_000_000_000
MAX_NAME_CHARS = 200
# How many times a file may be bigger than its compressed form (salt, verifier and authentication
# code included). Deflate reaches about 1,032:1 only on a run of one repeated byte, which is what a
# ZIP bomb is and no CSV is. Files of distinct people's rows stay far below (the bench's 100,000-row
# profiles 5.7:1 and 6.6:1, rows that differ only in a serial number 20.8:1, measured with zlib at
# pyzipper's level 6), but rows copied over and over reach 412:1 and, with one 4,000-character cell,
# 668:1: odd, still valid, and they must reach their recipients. So the bound sits just under what
# only a run of one byte achieves. What protects a reader above all is the size cap its caller gives
# (`pull` passes the signed manifest's plaintext_bytes) and the count kept while unpacking.
MAX_RATIO = 1000

_LOCAL = struct.Struct("<4s2B4HL2L2H")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_END = struct.Struct("<4s4H2LH")
_DESCRIPTOR = struct.Struct("<4s3L")
_LOCAL_SIG, _CENTRAL_SIG, _END_SIG, _DESCRIPTOR_SIG = b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x07\x08"
_ENCRYPTED, _HAS_DESCRIPTOR, _UTF8_NAME = 0x0001, 0x0008, 0x0800
_AES_METHOD = 99
_AE_2 = 2  # WinZip AES version 2: no CRC, which would leak a hash of the plaintext
_VERSION, _UNIX = 20, 3
_EXTERNAL_ATTR = 0o600 << 16
# WinZip AES extra field: id 0x9901, 7 bytes, AE-2, vendor "AE", strength 3 (256 bits), Deflate.
_AES_EXTRA = struct.pack("<3H2sBH", 0x9901, 7, _AE_2, b"AE", 3, pyzipper.ZIP_DEFLATED)
_SALT_AND_VERIFIER, _AUTH_CODE = 16 + 2, 10
_MAX_CENTRAL = _CENTRAL.size + 4 * MAX_NAME_CHARS + len(_AES_EXTRA)

CANNOT_OPEN = "the password does not open this package: ask your agency's PDO for the current password"
NOT_A_PACKAGE = (
    "this file is not an iom-gateway ZIP package (not a ZIP file, or cut short): "
    "ask the sending gateway's admin to deliver it again"
)
NOT_AES = (
    "the package is not AES-256 encrypted (it is unencrypted or uses the broken ZipCrypto): "
    "refusing it; ask the sending gateway's admin to deliver it again"
)


def _name_problem(name: str) -> str | None:
    """Why `name` is not a plain file name, or None if it is."""
    if not name or len(name) > MAX_NAME_CHARS:
        return f"it must have 1 to {MAX_NAME_CHARS} characters"
    if any(c in name for c in "/\\:") or ".." in name:
        return "it must not hold '/', '\\', ':' or '..'"
    if name.startswith("."):
        return "it must not start with '.'"
    if any(unicodedata.category(c).startswith("C") for c in name):
        return "it must not hold NUL, control or invisible format characters"
    return None


def _password_bytes(password: Secret) -> bytes:
    if not password:
        raise ValueError("an AES ZIP package needs a non-empty password")
    return password.reveal().encode("utf-8")


def _new_member(member: str) -> Any:  # pyzipper ships no types
    info = pyzipper.zipfile_aes.AESZipInfo(member, date_time=time.localtime()[:6])
    info.compress_type = pyzipper.ZIP_DEFLATED
    info.create_system = _UNIX
    info.external_attr = _EXTERNAL_ATTR
    return info


def _expands_like_a_bomb(size: int, compressed: int) -> bool:
    return size > MAX_RATIO * compressed


class _Target:
    """`target` as pyzipper sees it: after the first failed write (a full disk), nothing more.

    pyzipper has no way to abandon an archive. After a failed write its closing still writes (the
    compressor's tail, the local header, the directory), fails again half-way, and leaves its
    objects half-closed, whose __del__ then prints an "Exception ignored" traceback at some later
    garbage collection. The package is discarded anyway, so this keeps the first error, lets
    pyzipper close cleanly into nothing, and write_aes_zip raises that one error.
    """

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._seekable = target.seekable()
        self._position = target.tell() if self._seekable else 0
        self.failure: OSError | None = None

    def abandon(self, failure: OSError | None = None) -> None:
        """Write nothing more to `target` (keeping the first failure, if any)."""
        if self.failure is None:
            self.failure = failure or OSError("the package was abandoned")

    def write(self, data: bytes) -> int:
        if self.failure is None:
            try:
                self._target.write(data)
            except OSError as exc:
                self.abandon(exc)
        self._position += len(data)
        return len(data)

    def flush(self) -> None:
        if self.failure is None:
            try:
                self._target.flush()
            except OSError as exc:
                self.abandon(exc)

    def seekable(self) -> bool:
        return self._seekable

    def tell(self) -> int:
        if not self._seekable:  # pyzipper then writes sizes in a data descriptor
            raise io.UnsupportedOperation("the target is not seekable")
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if not self._seekable or whence != os.SEEK_SET:  # pyzipper only seeks back to a known offset
            raise io.UnsupportedOperation("only absolute seeks on a seekable target")
        if self.failure is None:
            try:
                self._target.seek(offset)
            except OSError as exc:
                self.abandon(exc)
        self._position = offset
        return offset


def _copy_capped(source: BinaryIO, sink: IO[bytes], target: _Target) -> None:
    total = 0
    while target.failure is None and (chunk := source.read(CHUNK)):
        total += len(chunk)
        if total > MAX_MEMBER_BYTES:
            raise InputFileError(
                f"the file is larger than {MAX_MEMBER_BYTES:,} bytes, the most an AES ZIP package holds: "
                "deliver it by OpenPGP, or split it"
            )
        sink.write(chunk)


def write_aes_zip(source: BinaryIO, target: BinaryIO, *, member: str, password: Secret) -> None:
    """Stream `source` into `target` as an AES-256 (AE-2) ZIP holding the single file `member`.

    `target` may be seekable (sizes are patched into the local header) or not (a pipe: sizes go
    in a data descriptor after the data); it is flushed, not closed. On an error `target` holds
    a partial package: discard it.

    Raises ValueError for a `member` that is not a plain file name or an empty password,
    InputFileError for a source over MAX_MEMBER_BYTES or one that compresses more than MAX_RATIO
    times (the reader would refuse it as a ZIP bomb), OSError when reading or writing fails (the
    first failed write, once: nothing more is written after it).
    """
    problem = _name_problem(member)
    if problem is not None:
        raise ValueError(f"member name {member!r} is not a plain file name: {problem}")
    secret = _password_bytes(password)
    out = _Target(target)
    info = _new_member(member)
    with pyzipper.AESZipFile(out, "w", compression=pyzipper.ZIP_DEFLATED, allowZip64=False) as archive:
        archive.setpassword(secret)
        archive.setencryption(pyzipper.WZ_AES, nbits=256, force_wz_aes_version=_AE_2)
        with archive.open(info, "w") as sink:
            try:
                _copy_capped(source, sink, out)
            except BaseException:
                out.abandon()  # so closing writes nothing more and cannot fail in turn
                raise
    if out.failure is not None:
        raise out.failure
    if _expands_like_a_bomb(info.file_size, info.compress_size):
        raise InputFileError(
            f"the file compresses {info.file_size // info.compress_size:,} times, more than the "
            f"{MAX_RATIO}:1 any text does (only a run of one repeated byte does that), and recipients' readers "
            "refuse such a package as a ZIP bomb; check the export and submit it again"
        )


_PBKDF2_ROUNDS, _KEY_BYTES = 1000, 32  # WinZip AES: PBKDF2-HMAC-SHA1, 1,000 rounds; AES-256


class _AE2Encrypter:
    """One archive's WinZip AES-256 encryption of the (already deflated) member data.

    WinZip's scheme: a 16-byte random salt; PBKDF2-HMAC-SHA1 (1,000 rounds) gives the AES key, the
    HMAC key and a 2-byte password verifier; AES in CTR mode with a 128-bit little-endian counter
    from 1; HMAC-SHA1 over the ciphertext, its first 10 bytes stored after the data. pyzipper
    does the same, but only with its own compressor in front: this lets one Deflate stream feed
    several archives. OpenSSL's HMAC and Cryptodome's AES release the GIL on large buffers.
    """

    def __init__(self, password: bytes) -> None:
        self.salt = secrets.token_bytes(16)
        material = hashlib.pbkdf2_hmac("sha1", password, self.salt, _PBKDF2_ROUNDS, 2 * _KEY_BYTES + 2)
        self.verifier = material[2 * _KEY_BYTES :]
        counter = Counter.new(128, initial_value=1, little_endian=True)
        self._cipher: Any = AES.new(material[:_KEY_BYTES], AES.MODE_CTR, counter=counter)
        self._mac = hmac.new(material[_KEY_BYTES : 2 * _KEY_BYTES], digestmod="sha1")

    def header(self) -> bytes:
        return self.salt + self.verifier

    def encrypt(self, data: bytes) -> bytes:
        encrypted: bytes = self._cipher.encrypt(data)
        self._mac.update(encrypted)
        return encrypted

    def auth_code(self) -> bytes:
        return self._mac.digest()[:_AUTH_CODE]


def _dos_time(now: time.struct_time) -> tuple[int, int]:
    """ZIP's MS-DOS time and date fields (two-second resolution), as zipfile writes them."""
    dostime = now.tm_hour << 11 | now.tm_min << 5 | now.tm_sec // 2
    dosdate = (now.tm_year - 1980) << 9 | now.tm_mon << 5 | now.tm_mday
    return dostime, dosdate


def _too_large() -> InputFileError:
    return InputFileError(
        f"the file is larger than {MAX_MEMBER_BYTES:,} bytes, the most an AES ZIP package holds: "
        "deliver it by OpenPGP, or split it"
    )


def _bomb(size: int, compressed: int) -> InputFileError:
    return InputFileError(
        f"the file compresses {size // compressed:,} times, more than the "
        f"{MAX_RATIO}:1 any text does (only a run of one repeated byte does that), and recipients' readers "
        "refuse such a package as a ZIP bomb; check the export and submit it again"
    )


def write_aes_zips(
    source: Iterable[bytes], targets: Sequence[tuple[BinaryIO, Secret]], *, member: str, level: int = 1
) -> None:
    """Deflate what `source` yields once (zlib `level`) and write it into every target as an AES-256
    (AE-2) ZIP holding the single file `member`, each encrypted with its own password and salt.

    The compressed plaintext exists only in memory, a chunk at a time: memory does not grow with the
    file nor with the number of targets. Each target must be seekable (the sizes are written into
    the local header at the end: the exact layout `read_aes_zip` accepts); it is flushed, not closed.
    On an error every target holds a partial package: discard them all.

    Raises ValueError for a `member` that is not a plain file name, an empty password, a bad
    `level`, no target or an unseekable one; InputFileError as `write_aes_zip`; OSError when
    writing fails; whatever iterating `source` raises.
    """
    problem = _name_problem(member)
    if problem is not None:
        raise ValueError(f"member name {member!r} is not a plain file name: {problem}")
    if not 0 <= level <= 9:
        raise ValueError(f"level must be 0-9, not {level}")
    if not targets or not all(target.seekable() for target, _ in targets):
        raise ValueError("write_aes_zips needs one or more seekable targets")
    dostime, dosdate = _dos_time(time.localtime())
    layout = _Member(member, False, dostime, dosdate, 0, 0)
    sinks = [(target, _AE2Encrypter(_password_bytes(password))) for target, password in targets]
    for target, encrypter in sinks:
        target.seek(0)
        target.write(_expected_local(layout) + encrypter.header())
    compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    size = deflated = 0

    def emit(data: bytes) -> None:
        for target, encrypter in sinks:
            target.write(encrypter.encrypt(data))

    for chunk in source:
        size += len(chunk)
        if size > MAX_MEMBER_BYTES:
            raise _too_large()
        if data := compressor.compress(chunk):
            deflated += len(data)
            emit(data)
    data = compressor.flush()
    deflated += len(data)
    emit(data)
    compressed = _SALT_AND_VERIFIER + deflated + _AUTH_CODE
    if _expands_like_a_bomb(size, compressed):
        raise _bomb(size, compressed)
    layout = _Member(member, False, dostime, dosdate, compressed, size)
    central = _expected_central(layout)
    local = _expected_local(layout)
    end = _END.pack(_END_SIG, 0, 0, 1, 1, len(central), len(local) + compressed, 0)
    for target, encrypter in sinks:
        target.write(encrypter.auth_code() + central + end)
        target.seek(0)
        target.write(local)  # the same length as the placeholder: only the sizes changed
        target.seek(0, os.SEEK_END)
        target.flush()


@dataclass(frozen=True, slots=True)
class _Member:
    """The free fields of the one central directory entry; every other header byte is fixed."""

    name: str
    descriptor: bool
    dostime: int
    dosdate: int
    compressed: int
    size: int

    @property
    def raw_name(self) -> bytes:
        return self.name.encode("ascii" if self.name.isascii() else "utf-8")

    @property
    def flags(self) -> int:
        utf8 = 0 if self.name.isascii() else _UTF8_NAME
        return _ENCRYPTED | utf8 | (_HAS_DESCRIPTOR if self.descriptor else 0)


def _damaged(detail: str) -> CryptoError:
    return CryptoError(
        f"the package is damaged, was altered, or was not made by iom-gateway ({detail}): "
        "do not use it; ask the sending gateway's admin to deliver it again"
    )


def _read_at(source: BinaryIO, offset: int, size: int) -> bytes:
    source.seek(offset)
    data = source.read(size)
    if len(data) != size:
        raise _damaged("it is cut short")
    return data


def _central_offset(source: BinaryIO, end: int) -> tuple[int, int]:
    """Check the end record; return the central directory's offset and size."""
    if end < _LOCAL.size + _CENTRAL.size + _END.size:
        raise CryptoError(NOT_A_PACKAGE)
    sig, disk, cd_disk, here, total, cd_size, cd_offset, comment = _END.unpack(
        _read_at(source, end - _END.size, _END.size)
    )
    if sig != _END_SIG:
        raise CryptoError(NOT_A_PACKAGE)
    if here != 1 or total != 1:
        raise CryptoError(
            f"the package holds {total} files, not exactly one: it was not made by iom-gateway; "
            "do not open it with another tool, and tell the gateway admin"
        )
    if (disk, cd_disk, comment) != (0, 0, 0) or cd_offset + cd_size + _END.size != end or cd_size > _MAX_CENTRAL:
        raise _damaged("the end record does not match the layout")
    return cd_offset, cd_size


def _decode_name(raw: bytes, flags: int) -> str:
    try:
        name = raw.decode("utf-8" if flags & _UTF8_NAME else "ascii")
    except UnicodeDecodeError:
        raise CryptoError("the package's file name is not valid text: refusing it; tell the gateway admin") from None
    problem = _name_problem(name)
    if problem is not None:
        raise CryptoError(
            f"the package's file name {name!r} is not a plain file name ({problem}): refusing it, "
            "as it could write outside the folder; tell the gateway admin"
        )
    return name


def _central_member(entry: bytes) -> _Member:
    """Parse the central directory entry: refuse other encryption and unsafe names."""
    fields = _CENTRAL.unpack_from(entry)
    flags, method, dostime, dosdate = fields[5:9]
    compressed, size, name_len, extra_len, comment_len = fields[10:15]
    if fields[0] != _CENTRAL_SIG or _CENTRAL.size + name_len + extra_len + comment_len != len(entry):
        raise _damaged("the central directory is malformed")
    if not flags & _ENCRYPTED or method != _AES_METHOD:
        raise CryptoError(NOT_AES)
    name = _decode_name(entry[_CENTRAL.size : _CENTRAL.size + name_len], flags)
    return _Member(name, bool(flags & _HAS_DESCRIPTOR), dostime, dosdate, compressed, size)


def _expected_central(m: _Member) -> bytes:
    fixed = (_VERSION, _UNIX, _VERSION, 0, m.flags, _AES_METHOD, m.dostime, m.dosdate, 0, m.compressed, m.size)
    counts = (len(m.raw_name), len(_AES_EXTRA), 0, 0, 0, _EXTERNAL_ATTR, 0)
    return _CENTRAL.pack(_CENTRAL_SIG, *fixed, *counts) + m.raw_name + _AES_EXTRA


def _expected_local(m: _Member) -> bytes:
    sizes = (0, 0) if m.descriptor else (m.compressed, m.size)
    fields = (_VERSION, 0, m.flags, _AES_METHOD, m.dostime, m.dosdate, 0, *sizes, len(m.raw_name), len(_AES_EXTRA))
    return _LOCAL.pack(_LOCAL_SIG, *fields) + m.raw_name + _AES_EXTRA


def _inspect(source: BinaryIO) -> _Member:
    """Check that every header byte of `source` is where and what the writer puts there."""
    end = source.seek(0, os.SEEK_END)
    cd_offset, cd_size = _central_offset(source, end)
    entry = _read_at(source, cd_offset, cd_size)
    member = _central_member(entry)
    if entry != _expected_central(member) or member.size > MAX_MEMBER_BYTES:
        raise _damaged("the central directory holds unexpected values")
    local = _expected_local(member)
    if _read_at(source, 0, len(local)) != local:
        raise _damaged("the local header does not match the central directory")
    data_end = len(local) + member.compressed
    descriptor = _DESCRIPTOR.pack(_DESCRIPTOR_SIG, 0, member.compressed, member.size) if member.descriptor else b""
    if member.compressed < _SALT_AND_VERIFIER + _AUTH_CODE or data_end + len(descriptor) != cd_offset:
        raise _damaged("the data does not fill the space the headers give it")
    if _read_at(source, data_end, len(descriptor)) != descriptor:
        raise _damaged("the data descriptor does not match the central directory")
    return member


def _refuse_expansion(member: _Member, max_bytes: int) -> None:
    """Refuse, before anything is decompressed, a file over `max_bytes` or one that would expand like a bomb."""
    if member.size > max_bytes:
        raise CryptoError(
            f"the package holds a file of {member.size:,} bytes, more than the {max_bytes:,} bytes allowed here: "
            "refused, nothing was unpacked; ask the sending gateway's admin why it is so large"
        )
    if _expands_like_a_bomb(member.size, member.compressed):
        raise CryptoError(
            f"the package's {member.compressed:,} bytes would expand {member.size // member.compressed:,} times, "
            f"to a file of {member.size:,} bytes, where no text expands more than {MAX_RATIO}:1: a ZIP bomb, or "
            "not made by iom-gateway; refused, nothing was unpacked; do not open it with another tool, and tell "
            "the gateway admin"
        )


def _copy_plaintext(archive: pyzipper.AESZipFile, member: _Member, secret: bytes, target: BinaryIO) -> None:
    try:
        plaintext = archive.open(member.name, "r", pwd=secret)
    except RuntimeError:  # pyzipper's only signal for a wrong password (verifier mismatch)
        raise CryptoError(CANNOT_OPEN) from None
    except pyzipper.BadZipFile:
        raise _damaged("the local header does not match the central directory") from None
    written = 0
    with plaintext:
        try:
            while chunk := plaintext.read(CHUNK):
                # pyzipper stops at the declared size itself; counting here keeps that promise ours
                if written + len(chunk) > member.size:
                    raise _damaged("the data holds more than the headers give")
                target.write(chunk)
                written += len(chunk)
        except pyzipper.BadZipFile:
            raise _damaged("the authentication code does not match the data") from None
        except (zlib.error, EOFError):
            raise _damaged("the compressed data is corrupt") from None
    if written != member.size:
        raise _damaged("the file is not the length the headers give")


def read_aes_zip(source: BinaryIO, *, password: Secret, target: BinaryIO, max_bytes: int = MAX_MEMBER_BYTES) -> str:
    """Check the package in `source` (seekable), stream its one file into `target`; return its name.

    Before decompressing anything, refuses a file over `max_bytes` (give the size you expect, e.g.
    a signed manifest's) or one that would expand more than MAX_RATIO times; never writes more
    than the size the headers give. The authentication code is checked only at the end of the
    data: on any error `target` may already hold unauthenticated partial plaintext, and the caller
    must discard it.

    Raises CryptoError for a wrong password, any altered or damaged byte, not exactly one file,
    a file name that is not a plain name, a file that is not AES-encrypted, a file too large or
    too compressed, or not a ZIP at all; ValueError for an unseekable source, an empty password or
    a negative `max_bytes`; OSError when reading or writing fails.
    """
    if not source.seekable():
        raise ValueError("read_aes_zip needs a seekable source: pass a file opened 'rb'")
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be 0 or more, not {max_bytes}")
    secret = _password_bytes(password)
    member = _inspect(source)
    _refuse_expansion(member, max_bytes)
    source.seek(0)
    try:
        archive = pyzipper.AESZipFile(source, "r")
    except pyzipper.BadZipFile:
        raise _damaged("pyzipper cannot read its directory") from None
    with archive:
        _copy_plaintext(archive, member, secret, target)
    return member.name
