"""Regenerate the Unicode character classes in table1.schema.json's name and title patterns.

Table 1 allows names in "letters of any script". Python's `re` (which evaluates the schema's
patterns) has no \\p{L} or \\p{M}, and its \\w counts superscript digits and Roman numerals as
word characters, so the classes are spelled out here from the Unicode database:

  LETTER = [^\\W\\d_A-Za-z + (No, Nl that \\w accepts)]   every non-ASCII letter, no number
  MARK   = [Mn Mc Me]                                              combining marks of any script

Run after a Python upgrade brings a newer Unicode version:  python3 scripts/unicode_classes.py
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path

SCHEMA = Path(__file__).resolve().parents[1] / "gateway" / "resources" / "schemas" / "table1.schema.json"


def _ranges(wanted: Callable[[str], bool]) -> str:
    spans: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        if wanted(chr(cp)):
            if spans and spans[-1][1] == cp - 1:
                spans[-1] = (spans[-1][0], cp)
            else:
                spans.append((cp, cp))
    return "".join(_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in spans)


def _escape(cp: int) -> str:
    return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"


def classes() -> tuple[str, str]:
    """(LETTER, MARK) as regular-expression classes for this Python's Unicode version."""
    numbers = _ranges(lambda c: unicodedata.category(c) in ("No", "Nl") and re.fullmatch(r"\w", c) is not None)
    marks = _ranges(lambda c: unicodedata.category(c).startswith("M"))
    return f"[^\\W\\d_A-Za-z{numbers}]", f"[{marks}]"


def main() -> None:
    letter, mark = classes()
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    # ASCII first, so most names never reach the long range lists; the alternatives are
    # disjoint (LETTER excludes A-Z a-z, marks are not \\w) so a near miss cannot backtrack
    # exponentially.
    schema["$defs"]["name"]["pattern"] = f"^(?:[A-Za-z]|{letter})(?:[A-Za-z' .-]|{letter}|{mark}){{0,49}}$"
    schema["properties"]["title"]["pattern"] = f"^(?:[A-Za-z]|{letter})(?:[A-Za-z .'-]|{letter}){{0,19}}$"
    schema["x-unicode"] = unicodedata.unidata_version
    SCHEMA.write_text(json.dumps(schema, indent=2, ensure_ascii=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
