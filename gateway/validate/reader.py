"""Bytes to CSV records: encoding rules (UTF-8, BOM, Windows-1252) and line-length caps."""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import BinaryIO, TextIO

UTF8_BOM = codecs.BOM_UTF8
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
CHUNK = 1 << 20


class LineTooLong(Exception):
    """A physical line is longer than the configured cap (internal to the validator)."""


def bounded_lines(text: TextIO, limit: int) -> Iterator[str]:
    """Yield lines of `text`, raising LineTooLong rather than holding a longer one in memory."""
    readline = text.readline
    while line := readline(limit):
        if len(line) >= limit and line[-1] not in "\r\n":
            raise LineTooLong
        yield line


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
