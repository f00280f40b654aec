"""Cell values for property tests: the agreed valid forms, and near misses built from them."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from tests.conftest import REPO

_SCHEMA = json.loads((REPO / "schemas" / "table1.schema.json").read_text(encoding="utf-8"))
_FREE = [
    "Burglary (2019), theft; see notes",
    "Line one\nline two",
    "a=b",
    "x-ray 2020",
    'Quote "inside"',
    "Zoë's case",
    "(+) positive test",
]
_SHORT = ["14 Chapel Hill", "Flat 3, 88 High Street", "Acocks Green", "Sgt K. Doyle"]
_NAMES = ["Ann", "Siobhán", "Zoë", "Zoe\u0308", "O'Brien", "Smith-Jones", "St. John", "Łukasz", "李", "محمد"]

VALID: dict[str, list[str]] = {
    "title": ["Mr", "Mrs", "Miss", "Ms", "Mx", "Dr", "Rev", "Prof", "Sir", "Lady", "Lord", "Rt Hon"],
    "forename": _NAMES,
    "surname": _NAMES,
    "address_street": _SHORT,
    "address_locality": _SHORT,
    "post_town": _SHORT,
    "postcode": ["BH11AA", "M11AE", "M601NW", "CR26XH", "W1A0AX", "EC1A1BB", "B911AA", "GIR0AA", "BFPO1234", "ZZ993VZ"],
    "gender": ["M", "F"],
    "ethnicity": _SCHEMA["properties"]["ethnicity"]["enum"],
    "date_of_birth": ["01/01/1990", "29/02/2000", "31/12/1975", "15/06/2001"],
    "cro_number": ["265416/21G", "1/99W", "SF65/1T", "SF64/123456Q"],
    "om_name": _SHORT,
    "om_organisation": _SHORT,
    "victim_consent": ["Y", "N"],
}
for _column, _prop in _SCHEMA["properties"].items():
    if _prop.get("$ref") == "#/$defs/free_text":
        VALID[_column] = _FREE

# Bidirectional controls and U+FEFF (format characters, Cf) are what Trojan-source text is made of:
# drawn often, beside the rest of Cf.
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"
_NOISE = st.one_of(
    st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Z", "Cc", "Cf", "M")), st.sampled_from(BIDI_CONTROLS)
)


@st.composite
def _near_miss(draw: st.DrawFn, column: str) -> str:
    value = draw(st.sampled_from(VALID[column]))
    how = draw(st.sampled_from(["insert", "delete", "case", "pad", "repeat"]))
    at = draw(st.integers(0, len(value)))
    if how == "insert":
        return value[:at] + draw(_NOISE) + value[at:]
    if how == "delete":
        return value[:at] + value[at + 1 :]
    if how == "case":
        return value.swapcase()
    if how == "pad":
        return draw(st.sampled_from([" ", "\n", "\t", "\r\n"])) + value if at % 2 else value + " "
    return value * draw(st.integers(2, 700))


def cell_values(column: str) -> st.SearchStrategy[str]:
    """Valid values, near misses of them, and arbitrary text, for `column`."""
    return st.one_of(st.sampled_from(VALID[column]), _near_miss(column), st.text(_NOISE, max_size=60))


def valid_values(column: str) -> st.SearchStrategy[str]:
    return st.sampled_from(VALID[column])
