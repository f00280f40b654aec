"""Bytes to CSV records: encoding rules (UTF-8, BOM, Windows-1252), line- and record-length caps."""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from typing import BinaryIO

UTF8_BOM = codecs.BOM_UTF8
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
CHUNK = 1 << 20
_CR_TO_LF = bytes.maketrans(b"\r", b"\n")
READ_SIZE = 1 << 16


class LineTooLong(Exception):
    """Physical line `line` (1-based) of the file is longer than the cap."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class LineGuard(io.RawIOBase):
    """Pass a stream's bytes through, raising LineTooLong as soon as a line passes `max_line`
    bytes, before it is decoded: no longer line is ever held in memory."""

    def __init__(self, raw: BinaryIO, max_line: int) -> None:
        super().__init__()
        self.raw, self.max_line = raw, max_line
        self.open_line = 0
        self.line = 1

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = int(self.raw.readinto(buffer) or 0)  # type: ignore[attr-defined]
        if count:
            self._check_lines(bytes(memoryview(buffer)[:count]))
        return count

    def _check_lines(self, chunk: bytes) -> None:
        first = min((i for i in (chunk.find(b"\n"), chunk.find(b"\r")) if i >= 0), default=-1)
        last = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
        if first < 0:
            self.open_line += len(chunk)
        else:
            if self.open_line + first > self.max_line:
                raise LineTooLong(self.line)
            if last - first > self.max_line:  # a whole line inside this chunk may be too long
                start = first + 1
                for segment in chunk[start:last].translate(_CR_TO_LF).split(b"\n"):
                    if len(segment) > self.max_line:
                        raise LineTooLong(self.line + chunk.count(b"\n", 0, start))
                    start += len(segment) + 1
            self.open_line = len(chunk) - last - 1
            self.line += chunk.count(b"\n")
        if self.open_line > self.max_line:
            raise LineTooLong(self.line)


class RecordTooLong(Exception):
    """The CSV record being read has passed the cap (over quoted line breaks, each line under it)."""


class RecordGuard:
    """Hand a text stream's lines to csv.reader, raising RecordTooLong as soon as the record being
    read passes `limit` characters.

    Quoted line breaks let one record span any number of physical lines, each under the line cap;
    csv.reader would hold all of them, a cell per comma, before the caller sees the record. It
    pulls exactly the lines of one record per step, so the caller calls `next_record()` after
    each record it takes.
    """

    __slots__ = ("limit", "lines", "used")

    def __init__(self, lines: Iterator[str], limit: int) -> None:
        self.lines, self.limit, self.used = lines, limit, 0

    def __iter__(self) -> RecordGuard:
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        self.used += len(line)
        if self.used > self.limit:
            raise RecordTooLong
        return line

    def next_record(self) -> None:
        """The record read so far is taken: count the next one from zero."""
        self.used = 0


def first_bad_byte(stream: BinaryIO, encoding: str) -> tuple[int, int] | None:
    """(offset, byte) of the first byte that does not decode in `encoding`, reading from the start."""
    stream.seek(0)
    decoder = codecs.getincrementaldecoder(encoding)()
    fed = 0
    while True:
        chunk = stream.read(CHUNK)
        buffered = len(decoder.getstate()[0])
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            data = exc.object
            return fed - buffered + exc.start, data[exc.start]
        fed += len(chunk)
        if not chunk:
            return None
