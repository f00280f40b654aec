"""Subject keys: how a person in a Table 1 row is named for the subject access index (pure).

A key is built the same way from a row at validation and from a subject access request, so
that the two meet under the index's keyed hash: `cro:<CRO number>` and `name:<surname>|<date of
birth>`. The keys themselves are personal data: they live only in memory, and only their HMAC
under the gateway's SAR key is ever stored (gateway.state.subjects).
"""

from __future__ import annotations

import unicodedata

CRO_PREFIX, NAME_PREFIX = "cro:", "name:"
# apostrophes, hyphens and full stops as people type them: O'Brien = O’Brien = OBrien, Smith-Jones = Smith Jones
_DROPPED = dict.fromkeys(map(ord, "'\u2018\u2019\u02bc`\u00b4-\u2010\u2011\u2012\u2013\u2014\u2212."), None)


def cro_key(cro: str) -> str:
    """The key of a CRO number: upper case, every space removed (`265416/21g` and `265416/21G` meet)."""
    return CRO_PREFIX + "".join(cro.split()).upper()


def surname_key(surname: str) -> str:
    """A surname folded for matching: NFKC, case-folded, without whitespace, apostrophes, hyphens or full stops.

    NFKC makes a name typed with combining accents (e + U+0301) meet the same name typed with
    precomposed ones (é); it keeps the accents themselves (Zoë and Zoe stay two names).
    """
    if surname.isascii():  # the common case, and the same result: NFKC leaves ASCII alone, casefold is lower
        folded = surname.lower()
        if folded.isalpha():
            return folded
    else:
        folded = unicodedata.normalize("NFKC", surname).casefold()
    return "".join(folded.translate(_DROPPED).split())


def name_key(surname: str, born: str) -> str | None:
    """The key of a surname and an ISO date of birth (YYYY-MM-DD); None if the surname folds to nothing."""
    folded = surname_key(surname)
    return f"{NAME_PREFIX}{folded}|{born}" if folded else None
