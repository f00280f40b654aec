"""`iom-gateway sar`: which packages held a person (Solihull 5.1; Warwickshire Appendix 2).

The question is hashed under the SAR key and looked up in the subject access index
(gateway.state.subjects), which holds keyed hashes only; the answer comes from the journal's
deliveries, pulls and receipts. Every look-up is an audit event that says who asked and how many
packages were found, never whom they asked about.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from gateway.core.errors import UsageError
from gateway.core.subject import cro_key, name_key
from gateway.state.root import Root
from gateway.state.subjects import Disclosed, SubjectIndex, index_key
from gateway.validate.rules import CRO_NUMBER, cro_check_letter_ok
from gateway.validate.schema import Standard

_DOB = re.compile(r"[0-9]{2}/[0-9]{2}/[0-9]{4}")


@dataclass(frozen=True, slots=True)
class Query:
    """A checked question: the subject keys to look up (personal data: never stored, logged or audited)."""

    by: str  # "cro" | "name": how the person was named, all the audit log says of the question
    keys: tuple[str, ...]

    def __repr__(self) -> str:
        return f"Query(by={self.by!r}, <redacted>)"


def by_cro(standard: Standard, cro: str) -> Query:
    """A question by CRO number (case and spaces do not matter); raise UsageError for one that is not a CRO number."""
    value = "".join(cro.split()).upper()
    column = standard.columns.get(CRO_NUMBER)
    failure = column.failure(value) if column is not None and value else None
    if not value or failure is not None:
        raise UsageError(
            "--cro must be a CRO number NNNNNN/YYC (e.g. 265416/21G) or SFYY/NNNNNC: copy it again from PNC"
        )
    if not cro_check_letter_ok(value):
        raise UsageError(
            f"--cro has the wrong check letter for its number (it ends {value[-1]!r}): copy it again from PNC; "
            "a file with that number would have been refused, so no package can hold it"
        )
    return Query("cro", (cro_key(value),))


def by_name(surname: str, dob: str) -> Query:
    """A question by surname and date of birth (DD/MM/YYYY); raise UsageError for a date that is not real."""
    text = dob.strip()
    born = None
    if _DOB.fullmatch(text):
        try:
            born = date(int(text[6:]), int(text[3:5]), int(text[:2]))
        except ValueError:
            born = None
    if born is None:
        raise UsageError("--dob must be a real date written DD/MM/YYYY with leading zeros, e.g. 05/03/1990")
    key = name_key(surname, born.isoformat())
    if key is None:
        raise UsageError("--surname is empty once spaces, apostrophes, hyphens and full stops are left out: give it")
    return Query("name", (key,))


@dataclass(frozen=True, slots=True)
class Answer:
    """The packages that held the person, oldest delivery first (an empty tuple: none in the index)."""

    by: str
    key_id: str
    packages: tuple[Disclosed, ...]

    def to_json(self) -> dict[str, Any]:
        return {"by": self.by, "key_id": self.key_id, "count": len(self.packages)} | {
            "packages": [asdict(p) for p in self.packages]
        }


def lookup(root: Root, query: Query, *, user: str) -> Answer:
    """Find every package that held the person of `query`, and audit the look-up (`user`: the login that asked).

    Raises ConfigError/VaultError if the SAR key cannot be read from the vault.
    """
    key = index_key(root)
    found = tuple(SubjectIndex(root.db).lookup(key, query.keys))
    root.audit.append(
        "sar.lookup",
        actor="admin",
        user=user,
        by=query.by,
        packages=len(found),
        submissions=len({p.package for p in found}),
        key_id=key.id,
    )
    return Answer(query.by, key.id, found)
