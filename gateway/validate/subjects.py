"""Collect who is in a file, as subject keys (gateway.core.subject), while it is validated.

When asked (the pipeline asks; `validate` does not), every data row is tallied, whichever path
checks it. Only a valid report's keys are ever used (hashed at delivery for the subject access
index); they are never written anywhere as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from gateway.core.subject import cro_key, name_key
from gateway.validate.rules import CRO_NUMBER, DATE_OF_BIRTH

SURNAME = "surname"


class Subjects:
    """The subject keys of a file, in the order met (repeats included), never shown.

    Packed one per line in one buffer: a million rows' keys take some 50 MB so, where a set of
    two million strings would take 450 MB. A key never holds a line break (it has no whitespace).
    """

    __slots__ = ("_packed",)

    def __init__(self) -> None:
        self._packed = bytearray()

    def add(self, key: str) -> None:
        self._packed += key.encode() + b"\n"

    def __iter__(self) -> Iterator[str]:
        packed, start = self._packed, 0
        while (end := packed.find(b"\n", start)) != -1:
            yield packed[start:end].decode()
            start = end + 1

    def __len__(self) -> int:
        return self._packed.count(b"\n")

    def __repr__(self) -> str:
        return f"Subjects(<{len(self)} keys>)"


def _ignore(row: Sequence[str]) -> None:
    return None


def collector(positions: Mapping[str, int], width: int, into: Subjects | None) -> Callable[[Sequence[str]], None]:
    """A function adding the subject keys of one row laid out as `positions` (column -> index) to
    `into`; one that does nothing if `into` is None (nobody asked)."""
    surname, born, cro = positions.get(SURNAME), positions.get(DATE_OF_BIRTH), positions.get(CRO_NUMBER)
    if into is None or (cro is None and (surname is None or born is None)):
        return _ignore
    add = into.add

    def collect(row: Sequence[str]) -> None:
        if len(row) != width:  # a short or long row is an error of its own; its cells mean nothing
            return
        if cro is not None and (number := row[cro]):
            add(cro_key(number))
        if surname is None or born is None:
            return
        name, dob = row[surname], row[born]
        # DD/MM/YYYY in shape; a valid report has only real dates here (the rules check them)
        if name and len(dob) == 10 and dob[2] == "/" and dob[5] == "/":
            key = name_key(name, f"{dob[6:]}-{dob[3:5]}-{dob[:2]}")
            if key is not None:
                add(key)

    return collect
