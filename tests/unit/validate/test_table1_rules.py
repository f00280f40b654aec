"""Table 1 rules, black box through `iom-gateway validate` (SPEC.md "The Table 1 standard", "CSV dialect").

Every test builds a fresh gateway root (a copy of the repository's schemas/ and gateway.toml), writes one CSV as
exact bytes, runs the CLI in-process twice (with and without --json) and checks the exit status, the errors
(row, column, rule), that each error is well formed, and that no rejected value is echoed back.
Each file starts from one minimal valid row and changes exactly one thing.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import re
import shutil
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main

REPO = Path(__file__).resolve().parents[3]
SCHEMA = json.loads((REPO / "schemas" / "table1.schema.json").read_text(encoding="utf-8"))
OWNERSHIP = json.loads((REPO / "schemas" / "ownership.json").read_text(encoding="utf-8"))
COLUMNS = frozenset(SCHEMA["properties"])
KINDS = tuple(OWNERSHIP["kinds"])
AGENCIES = ("police", "probation", "council", "housing", "treatment", "yos")
PERIOD = "2026-10"  # ages are checked on 01/10/2026

BASE = {"forename": "Siobhan", "surname": "Kelly", "gender": "F", "date_of_birth": "05/03/1990"}
HEADER = list(BASE)
CRO_LETTERS = "ZABCDEFGHJKLMNPQRTUVWXY"
FILE_RULES = {"file-too-large", "empty-file", "encoding", "no-rows", "too-many-rows"}
FIXED_MESSAGES = sorted(
    {
        error["message"]
        for prop in [*SCHEMA["properties"].values(), *SCHEMA["$defs"].values()]
        for error in prop.get("x-errors", {}).values()
    },
    key=len,
    reverse=True,
)
# the fix: after a colon ("...: remove any space"), or the required form ("must be M or F")
FIX = re.compile(r"(?::|\bmust be)\s*\S+\W+\w+")
SHORT = 4  # values shorter than this are too common to search the output for


# --------------------------------------------------------------------------------------------- helpers


def csv_bytes(*rows: Iterable[str], newline: str = "\r\n", encoding: str = "utf-8", bom: bool = False) -> bytes:
    """Rows written by csv.writer (RFC 4180 quoting), encoded exactly as asked."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=newline).writerows(rows)
    return (b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode(encoding)


def one_row(**cells: str | None) -> tuple[list[str], list[str]]:
    """(header, row) of the minimal valid row with `cells` overridden, added, or removed (None)."""
    row: dict[str, str] = dict(BASE)
    for column, value in cells.items():
        if value is None:
            row.pop(column, None)
        else:
            row[column] = value
    return list(row), list(row.values())


def cro(serial: str, year: str, *, sf: bool = False, offset: int = 0) -> str:
    """A CRO number with its check letter computed from SPEC.md's algorithm (`offset` != 0: a wrong letter)."""
    if not sf:
        digits = year + serial.zfill(6)
    elif int(year) >= 65:
        digits = year + serial.zfill(5)
    else:
        digits = serial.zfill(6)
    letter = CRO_LETTERS[(int(digits) + offset) % 23]
    return f"SF{year}/{serial}{letter}" if sf else f"{serial}/{year}{letter}"


@dataclass
class Outcome:
    rc: int
    report: dict[str, Any]
    text: str
    path: Path

    @property
    def errors(self) -> list[tuple[int | None, str | None, str]]:
        return [(e["row"], e["column"], e["rule"]) for e in self.report["errors"]]

    def error(self, rule: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = [e for e in self.report["errors"] if e["rule"] == rule]
        assert found, f"no {rule} error in {self.errors}"
        return found[0]

    def assert_valid(self) -> None:
        assert self.errors == []
        assert self.report["counts"] == {}
        assert self.report["valid"] is True
        assert self.rc == 0

    def assert_only(self, row: int | None, column: str | None, rule: str, value: str | None = None) -> None:
        """Exactly one error, (row, column, rule), and the rejected value is not echoed anywhere."""
        assert self.errors == [(row, column, rule)]
        assert self.report["counts"] == {rule: 1}
        assert self.report["valid"] is False
        assert self.rc == 1
        if value is not None:
            self.assert_not_echoed(value)

    def assert_not_echoed(self, value: str) -> None:
        """`value` appears nowhere in either report, once the file name and the schema's fixed messages
        (whose examples, e.g. BH11AA and 265416/21G, may contain a rejected value) are taken out."""
        if len(value) < SHORT:
            return
        dumped = json.dumps(self.report, ensure_ascii=False).replace(json.dumps(str(self.path))[1:-1], "")
        text = self.text.replace(str(self.path), "")
        for message in FIXED_MESSAGES:
            dumped = dumped.replace(json.dumps(message, ensure_ascii=False)[1:-1], "")
            text = text.replace(message, "")
        for form in {value, json.dumps(value, ensure_ascii=False)[1:-1], repr(value)[1:-1]}:
            assert form not in dumped, f"{value!r} leaked into the JSON report"
            assert form not in text, f"{value!r} leaked into the text report"


class Gateway:
    """One gateway root in tmp_path and the CLI run against it."""

    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.tmp, self.capsys = tmp_path, capsys
        self.root = tmp_path / "root"
        self.root.mkdir()
        shutil.copytree(REPO / "schemas", self.root / "schemas")
        shutil.copy(REPO / "gateway.toml", self.root / "gateway.toml")

    def configure(self, *, allow_formulas: bool = False, ownership: dict[str, list[str]] | None = None) -> None:
        toml = self.root / "gateway.toml"
        text = toml.read_text(encoding="utf-8")
        if allow_formulas:
            text, n = re.subn(r"(?m)^unsafe_allow_formula_cells\s*=\s*false", "unsafe_allow_formula_cells = true", text)
            assert n == 1, "gateway.toml no longer has [policy] unsafe_allow_formula_cells = false"
        if ownership:
            text += "\n[ownership]\n" + "".join(
                f"{column} = {json.dumps(kinds)}\n" for column, kinds in ownership.items()
            )
        toml.write_text(text, encoding="utf-8")

    def cli(self, *args: str) -> tuple[int, str, str]:
        rc = main(["--root", str(self.root), *args])
        captured = self.capsys.readouterr()
        assert "Traceback" not in captured.err
        return rc, captured.out, captured.err

    def write(self, data: bytes, name: str = "submission.csv") -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        return path

    def check(self, data: bytes | Path, *, agency: str = "police", period: str = PERIOD) -> Outcome:
        path = data if isinstance(data, Path) else self.write(data)
        args = ["validate", str(path), "--agency", agency, "--period", period]
        rc, out, _ = self.cli(*args, "--json")
        report = json.loads(out)
        text_rc, text, _ = self.cli(*args)
        assert text_rc == rc
        outcome = Outcome(rc, report, text, path)
        assert_well_formed(outcome)
        return outcome

    def check_row(self, *, agency: str = "police", period: str = PERIOD, **cells: str | None) -> Outcome:
        return self.check(csv_bytes(*one_row(**cells)), agency=agency, period=period)


def assert_well_formed(outcome: Outcome) -> None:
    """SPEC.md: every error names row, column (where there is one), a rule, and a message saying the fix."""
    report = outcome.report
    assert {"file", "agency", "valid", "rows", "errors", "counts"} <= set(report)
    assert report["valid"] is (outcome.rc == 0) is (not report["errors"])
    assert sum(report["counts"].values()) == len(report["errors"])  # far below max_reported_errors
    for error in report["errors"]:
        assert set(error) == {"row", "column", "rule", "message", "shape"}
        assert re.fullmatch(r"[a-z]+(?:-[a-z]+)*", error["rule"]), error
        assert FIX.search(error["message"]), f"message says no fix: {error['message']!r}"
        assert f"[{error['rule']}]" in outcome.text
        if error["rule"] in FILE_RULES:
            assert error["row"] is None
        else:
            assert isinstance(error["row"], int) and error["row"] >= 1, error
        if error["shape"] is not None and error["rule"] == "unknown-column":  # a header cell: row 1, its letter
            assert error["row"] == 1 and re.fullmatch(r"[A-Z]+", error["column"]), error
        elif error["shape"] is not None:  # a cell error: its row is a data row and its column a Table 1 column
            assert isinstance(error["row"], int) and error["row"] >= 2 and error["column"] in COLUMNS, error


@pytest.fixture
def gw(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Gateway:
    return Gateway(tmp_path, capsys)


# --------------------------------------------------------------------------------------------- CRO numbers


def test_cro_algorithm_matches_spec_example() -> None:
    assert cro("265416", "21") == "265416/21G"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("265416/21G", id="spec-example"),
        pytest.param(cro("7", "99"), id="serial-1-digit"),
        pytest.param(cro("42", "05"), id="serial-2-digits"),
        pytest.param(cro("999999", "00"), id="serial-6-digits"),
        pytest.param(cro("000123", "87"), id="serial-leading-zeros"),
        pytest.param(cro("12345", "65", sf=True), id="sf-yy65"),
        pytest.param(cro("12345", "99", sf=True), id="sf-yy99"),
        pytest.param(cro("123456", "64", sf=True), id="sf-yy64"),
        pytest.param(cro("1", "00", sf=True), id="sf-yy00-serial-1"),
    ],
)
def test_cro_valid(gw: Gateway, value: str) -> None:
    gw.check_row(cro_number=value).assert_valid()


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        pytest.param("265416/21H", "cro-check-letter", id="spec-example-wrong-letter"),
        pytest.param(cro("7", "99", offset=1), "cro-check-letter", id="serial-1-digit-wrong"),
        pytest.param(cro("999999", "00", offset=22), "cro-check-letter", id="serial-6-digits-wrong"),
        pytest.param(cro("12345", "65", sf=True, offset=1), "cro-check-letter", id="sf-yy65-wrong"),
        pytest.param(cro("123456", "64", sf=True, offset=1), "cro-check-letter", id="sf-yy64-wrong"),
        # SF64 computed with the YY>=65 rule (year prefixed) must not pass
        pytest.param(
            "SF64/123456" + CRO_LETTERS[int("64123456") % 23], "cro-check-letter", id="sf-yy64-with-year-rule"
        ),
        pytest.param("1234567/21" + CRO_LETTERS[int("211234567") % 23], "cro-format", id="serial-7-digits"),
        pytest.param("/21G", "cro-format", id="serial-missing"),
        pytest.param("265416/2G", "cro-format", id="year-1-digit"),
        pytest.param("265416/21g", "cro-format", id="lower-case-letter"),
        pytest.param("265416/21I", "cro-format", id="letter-I"),
        pytest.param("265416/21O", "cro-format", id="letter-O"),
        pytest.param("265416/21S", "cro-format", id="letter-S"),
        pytest.param("265416/21", "cro-format", id="no-letter"),
        pytest.param("265416 /21G", "cro-format", id="space-before-slash"),
        pytest.param("265416/21 G", "cro-format", id="space-before-letter"),
        pytest.param(" 265416/21G", "cro-format", id="leading-space"),
        pytest.param("265416/21G ", "cro-format", id="trailing-space"),
        pytest.param("265416-21G", "cro-format", id="hyphen-not-slash"),
        pytest.param("sf65/12345" + cro("12345", "65", sf=True)[-1], "cro-format", id="sf-lower-case"),
    ],
)
def test_cro_invalid(gw: Gateway, value: str, rule: str) -> None:
    gw.check_row(cro_number=value).assert_only(2, "cro_number", rule, value)


# --------------------------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("value", "period"),
    [
        pytest.param("29/02/2000", PERIOD, id="leap-day-2000"),
        pytest.param("29/02/1996", PERIOD, id="leap-day-1996"),
        pytest.param("29/02/2024", "2040-01", id="leap-day-2024"),
        pytest.param("31/12/1990", PERIOD, id="31-december"),
        pytest.param("01/10/2016", PERIOD, id="age-exactly-10"),
        pytest.param("02/10/1915", PERIOD, id="age-exactly-110"),
    ],
)
def test_date_of_birth_valid(gw: Gateway, value: str, period: str) -> None:
    gw.check_row(date_of_birth=value, period=period).assert_valid()


@pytest.mark.parametrize(
    ("value", "period", "rule"),
    [
        pytest.param("29/02/1900", "1980-01", "real-date", id="29-feb-1900-century"),
        pytest.param("29/02/2023", "2040-01", "real-date", id="29-feb-2023"),
        pytest.param("29/02/1990", PERIOD, "real-date", id="29-feb-1990"),
        pytest.param("30/02/2000", PERIOD, "real-date", id="30-feb"),
        pytest.param("31/04/1990", PERIOD, "real-date", id="31-april"),
        pytest.param("31/11/1990", PERIOD, "real-date", id="31-november"),
        pytest.param("00/01/1990", PERIOD, "real-date", id="day-00"),
        pytest.param("32/01/1990", PERIOD, "real-date", id="day-32"),
        pytest.param("01/00/1990", PERIOD, "real-date", id="month-00"),
        pytest.param("01/13/1990", PERIOD, "real-date", id="month-13"),
        pytest.param("1/2/1990", PERIOD, "date-format", id="no-leading-zeros"),
        pytest.param("1990-02-01", PERIOD, "date-format", id="iso"),
        pytest.param("01/02/90", PERIOD, "date-format", id="two-digit-year"),
        pytest.param("01-02-1990", PERIOD, "date-format", id="hyphens"),
        pytest.param("01.02.1990", PERIOD, "date-format", id="dots"),
        pytest.param(" 01/02/1990", PERIOD, "date-format", id="leading-space"),
        pytest.param("01/02/1990 00:00", PERIOD, "date-format", id="with-time"),
        pytest.param("02/10/2016", PERIOD, "age-range", id="age-9-by-one-day"),
        pytest.param("01/10/1915", PERIOD, "age-range", id="age-111-by-one-day"),
        pytest.param("15/06/2020", PERIOD, "age-range", id="age-6"),
    ],
)
def test_date_of_birth_invalid(gw: Gateway, value: str, period: str, rule: str) -> None:
    gw.check_row(date_of_birth=value, period=period).assert_only(2, "date_of_birth", rule, value)


def test_date_of_birth_today_is_not_future(gw: Gateway) -> None:
    today = datetime.date.today()
    gw.check_row(date_of_birth=f"{today:%d/%m/%Y}", period="2099-01").assert_valid()


@pytest.mark.parametrize("days", [1, 5], ids=["tomorrow", "in-5-days"])
def test_date_of_birth_future(gw: Gateway, days: int) -> None:
    born = datetime.date.today() + datetime.timedelta(days=days)
    value = f"{born:%d/%m/%Y}"
    gw.check_row(date_of_birth=value, period="2099-01").assert_only(2, "date_of_birth", "future-date", value)


# --------------------------------------------------------------------------------------------- postcodes


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("M11AE", id="A9"),
        pytest.param("M601NW", id="A99"),
        pytest.param("BH11AA", id="AA9"),
        pytest.param("CR26XH", id="AA99"),
        pytest.param("W1A0AX", id="A9A"),
        pytest.param("EC1A1BB", id="AA9A"),
        pytest.param("GIR0AA", id="GIR"),
        pytest.param("BFPO1234", id="BFPO-4-digits"),
        pytest.param("BFPO1", id="BFPO-1-digit"),
        pytest.param("ZZ993VZ", id="no-fixed-abode"),
    ],
)
def test_postcode_valid(gw: Gateway, value: str) -> None:
    gw.check_row(postcode=value).assert_valid()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("M1 1AE", id="A9-space"),
        pytest.param("M60 1NW", id="A99-space"),
        pytest.param("BH1 1AA", id="AA9-space"),
        pytest.param("CR2 6XH", id="AA99-space"),
        pytest.param("W1A 0AX", id="A9A-space"),
        pytest.param("EC1A 1BB", id="AA9A-space"),
        pytest.param("GIR 0AA", id="GIR-space"),
        pytest.param("BFPO 1234", id="BFPO-space"),
        pytest.param("ZZ99 3VZ", id="no-fixed-abode-space"),
        pytest.param("bh11aa", id="lower-case"),
        pytest.param("Bh11AA", id="mixed-case"),
        pytest.param("ec1a1bb", id="AA9A-lower-case"),
        pytest.param("gir0aa", id="GIR-lower-case"),
        pytest.param("Q11AE", id="first-Q"),
        pytest.param("V11AE", id="first-V"),
        pytest.param("X11AE", id="first-X"),
        pytest.param("BI11AA", id="second-I"),
        pytest.param("BH11CA", id="inward-C"),
        pytest.param("BH11AI", id="inward-I"),
        pytest.param("BH11KA", id="inward-K"),
        pytest.param("BH11AM", id="inward-M"),
        pytest.param("BH11OA", id="inward-O"),
        pytest.param("BH11AV", id="inward-V"),
        pytest.param("BH11A", id="inward-too-short"),
        pytest.param("BH11AAA", id="inward-too-long"),
        pytest.param("BFPO12345", id="BFPO-5-digits"),
        pytest.param("BH1-1AA", id="hyphen"),
    ],
)
def test_postcode_invalid(gw: Gateway, value: str) -> None:
    gw.check_row(postcode=value).assert_only(2, "postcode", "postcode-format", value)


def test_postcode_shape_is_masked(gw: Gateway) -> None:
    outcome = gw.check_row(postcode="BH1 1AA")
    outcome.assert_only(2, "postcode", "postcode-format", "BH1 1AA")
    error = outcome.error("postcode-format")
    assert error["shape"] == "AA9 9AA"
    assert "AA9 9AA" in outcome.text
    # the message is the schema's fixed sentence (its example BH11AA is not the value): nothing of BH1 1AA in it
    fixed = SCHEMA["properties"]["postcode"]["x-errors"]["pattern"]["message"]
    assert error["message"] == f"postcode {fixed}"
    assert "BH1" not in error["message"].replace("BH11AA", "")


# --------------------------------------------------------------------------------------------- names


def _forms(name: str) -> list[Any]:
    return [
        pytest.param(unicodedata.normalize("NFC", name), id=f"{name}-NFC"),
        pytest.param(unicodedata.normalize("NFD", name), id=f"{name}-NFD"),
    ]


@pytest.mark.parametrize(
    "value",
    [
        *_forms("Siobhán"),
        *_forms("Zoë"),
        pytest.param("O'Brien", id="apostrophe"),
        pytest.param("Smith-Jones", id="hyphen"),
        pytest.param("St. John", id="full-stop-and-space"),
        pytest.param("Łukasz", id="polish"),
        pytest.param("王小明", id="chinese"),
        pytest.param("محمد", id="arabic"),
        pytest.param("प्रिया", id="devanagari"),
        pytest.param("J", id="one-letter"),
        pytest.param("A" * 50, id="50-letters"),
    ],
)
def test_name_valid(gw: Gateway, value: str) -> None:
    assert unicodedata.category(value[0]).startswith("L")
    gw.check_row(forename=value).assert_valid()


@pytest.mark.parametrize(
    ("value", "rule"),
    [("Zoe\u0308-O'Brien", None), ("Kel1y", "name-format"), ("K" * 51, "max-length")],
    ids=["valid-NFD", "digit", "51-letters"],
)
def test_surname_same_rules_as_forename(gw: Gateway, value: str, rule: str | None) -> None:
    outcome = gw.check_row(surname=value)
    if rule is None:
        outcome.assert_valid()
    else:
        outcome.assert_only(2, "surname", rule, value)


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        pytest.param("J0hnathan", "name-format", id="ascii-digit"),
        pytest.param("Jo²hnathan", "name-format", id="superscript-digit"),
        pytest.param("Jo٣hnathan", "name-format", id="arabic-indic-digit"),
        pytest.param("John@home", "name-format", id="at-sign"),
        pytest.param("-Johnathan", "name-format", id="leading-hyphen"),
        pytest.param("'Johnathan", "name-format", id="leading-apostrophe"),
        pytest.param(" Johnathan", "name-format", id="leading-space"),
        pytest.param("John_athan", "name-format", id="underscore"),
        pytest.param("B" * 51, "max-length", id="51-letters"),
    ],
)
def test_forename_invalid(gw: Gateway, value: str, rule: str) -> None:
    gw.check_row(forename=value).assert_only(2, "forename", rule, value)


@pytest.mark.parametrize("column", sorted(SCHEMA["required"]))
def test_required_cell_empty(gw: Gateway, column: str) -> None:
    gw.check_row(**{column: ""}).assert_only(2, column, "required")


# --------------------------------------------------------------------------------------------- gender, ethnicity, title


@pytest.mark.parametrize("value", ["M", "F"])
def test_gender_valid(gw: Gateway, value: str) -> None:
    gw.check_row(gender=value).assert_valid()


@pytest.mark.parametrize("value", ["m", "f", "Male", "Female", "U", "X", "M ", " F"])
def test_gender_invalid(gw: Gateway, value: str) -> None:
    gw.check_row(gender=value).assert_only(2, "gender", "gender-value", value)


ETHNICITIES = SCHEMA["properties"]["ethnicity"]["enum"]


def test_ethnicity_enum_is_16_plus_1_codes_and_labels() -> None:
    assert len(ETHNICITIES) == 34
    assert sum(1 for value in ETHNICITIES if re.fullmatch(r"[A-Z][A-Z0-9]", value)) == 17


@pytest.mark.parametrize("value", ETHNICITIES)
def test_ethnicity_valid(gw: Gateway, value: str) -> None:
    gw.check_row(ethnicity=value).assert_valid()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("w1", id="lower-case-code"),
        pytest.param("White British", id="no-separator"),
        pytest.param("White – British", id="en-dash"),
        pytest.param("white - british", id="lower-case-label"),
        pytest.param("W1 ", id="trailing-space"),
        pytest.param("W3", id="unknown-code"),
    ],
)
def test_ethnicity_invalid(gw: Gateway, value: str) -> None:
    gw.check_row(ethnicity=value).assert_only(2, "ethnicity", "ethnicity-value", value)


@pytest.mark.parametrize("value", ["Mr", "Mrs", "Miss", "Ms", "Mx", "Dr", "Rev", "Prof", "Sir", "Lady", "Lord", "Dr."])
def test_title_valid(gw: Gateway, value: str) -> None:
    gw.check_row(title=value).assert_valid()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("T" * 21, id="21-letters"),
        pytest.param("Mr2", id="digit"),
        pytest.param("123", id="digits-only"),
        pytest.param("=Mr", id="formula"),
    ],
)
def test_title_invalid(gw: Gateway, value: str) -> None:
    gw.check_row(title=value).assert_only(2, "title", "title-format", value)


def test_title_20_letters_valid(gw: Gateway) -> None:
    gw.check_row(title="T" * 20).assert_valid()


# --------------------------------------------------------------------------------------------- free text


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("x" * 4000, id="4000-chars"),
        pytest.param("first line\nsecond line", id="LF-inside"),
        pytest.param("first line\r\nsecond line", id="CRLF-inside"),
        pytest.param("a=b", id="equals-inside"),
        pytest.param("x-ray", id="hyphen-inside"),
        pytest.param("(=) bracket first", id="bracket-first"),
        pytest.param('Said "no comment", left', id="quotes-and-comma"),
    ],
)
def test_free_text_valid(gw: Gateway, value: str) -> None:
    gw.check_row(criminal_history=value).assert_valid()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("before\x0bafter", id="vertical-tab"),
        pytest.param("before\x00after", id="NUL"),
        pytest.param("before\x1bafter", id="escape"),
        pytest.param("before\x85after", id="NEL-U+0085"),
        pytest.param("before\x0cafter", id="form-feed"),
        pytest.param("before\x7fafter", id="DEL"),
        pytest.param("before\tafter", id="tab"),
    ],
)
def test_free_text_control_character(gw: Gateway, value: str) -> None:
    gw.check_row(criminal_history=value).assert_only(2, "criminal_history", "control-character", value)


BIDI_CONTROLS = [
    "\u061c", "\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
    "\u2066", "\u2067", "\u2068", "\u2069", "\ufeff",
]  # fmt: skip
TEXT_COLUMNS = sorted(
    name
    for name, prop in SCHEMA["properties"].items()
    if prop.get("$ref") in ("#/$defs/name", "#/$defs/free_text") or prop.get("x-free-text") or name == "title"
)
SAMPLE_TEXT = {"title": "Mrs", "forename": "Siobhan", "surname": "Kelly", "victims_details": "Former partner"}


def _bidi_check(gw: Gateway, column: str, char: str) -> None:
    plain = SAMPLE_TEXT.get(column, "Sgt Doyle")
    value = plain[:2] + char + plain[2:]
    extra = {"victim_consent": "Y"} if column == "victims_details" else {}
    holders = OWNERSHIP["columns"][column]
    agency = next(a for a in AGENCIES if "*" in holders or a in holders)
    outcome = gw.check_row(agency=agency, **{column: value}, **extra)
    outcome.assert_only(2, column, "bidi-control", value)
    error = outcome.error("bidi-control")
    assert f"U+{ord(char):04X} {unicodedata.name(char)}" in error["message"]
    assert error["shape"].startswith(f"Aa\\u{ord(char):04x}a")
    assert char not in outcome.text and char not in json.dumps(outcome.report, ensure_ascii=False)


@pytest.mark.parametrize("column", TEXT_COLUMNS)
def test_right_to_left_override_refused_in_every_text_column(gw: Gateway, column: str) -> None:
    # Trojan-source text (CVE-2021-42574): U+202E makes a cell display other than it reads.
    _bidi_check(gw, column, "\u202e")


@pytest.mark.parametrize("column", ["forename", "criminal_history"])
@pytest.mark.parametrize("char", BIDI_CONTROLS, ids=[f"U+{ord(c):04X}" for c in BIDI_CONTROLS])
def test_every_bidi_control_and_inner_bom_refused(gw: Gateway, column: str, char: str) -> None:
    _bidi_check(gw, column, char)


def test_bidi_control_message_says_the_fix(gw: Gateway) -> None:
    message = gw.check_row(surname="Ke\u202elly").error("bidi-control")["message"]
    assert message.startswith("surname contains U+202E RIGHT-TO-LEFT OVERRIDE, ")
    assert ": delete it" in message


@pytest.mark.parametrize("length", [4001, 10_000])
def test_free_text_too_long(gw: Gateway, length: int) -> None:
    value = "x" * length
    outcome = gw.check_row(criminal_history=value)
    outcome.assert_only(2, "criminal_history", "max-length", value)
    assert len(outcome.error("max-length")["shape"]) < 100


FORMULAS = [
    pytest.param("=SUM(B2:B9)", id="equals"),
    pytest.param("+44 7700 900123", id="plus"),
    pytest.param("-5 units daily", id="minus"),
    pytest.param("@SUM(B2)", id="at"),
    pytest.param("\rcarriage note", id="CR"),
]


@pytest.mark.parametrize("allow_formulas", [False, True])
def test_leading_tab_is_a_control_character_whatever_the_policy(gw: Gateway, allow_formulas: bool) -> None:
    # SPEC: free text allows line breaks and no other control character; a tab is one.
    gw.configure(allow_formulas=allow_formulas)
    value = "\tindented note"
    gw.check_row(criminal_history=value).assert_only(2, "criminal_history", "control-character", value)


@pytest.mark.parametrize("value", FORMULAS)
def test_formula_injection_refused(gw: Gateway, value: str) -> None:
    gw.check_row(criminal_history=value).assert_only(2, "criminal_history", "formula-injection", value)


@pytest.mark.parametrize(
    "column", ["associates", "engagement", "case_management", "drug_test_results", "current_intelligence"]
)
def test_formula_injection_in_other_free_text_columns(gw: Gateway, column: str) -> None:
    value = "=HYPERLINK(target)"
    gw.check_row(**{column: value}).assert_only(2, column, "formula-injection", value)


@pytest.mark.parametrize("value", FORMULAS)
def test_formula_cells_allowed_by_policy(gw: Gateway, value: str) -> None:
    gw.configure(allow_formulas=True)
    gw.check_row(criminal_history=value).assert_valid()


# --------------------------------------------------------------------------------------------- victims' consent


@pytest.mark.parametrize(
    ("details", "consent"),
    [
        pytest.param("Former partner; details held by OM", "Y", id="details-with-Y"),
        pytest.param("", "N", id="no-details-N"),
        pytest.param("", "Y", id="no-details-Y"),
        pytest.param("", "", id="no-details-blank"),
    ],
)
def test_victim_consent_valid(gw: Gateway, details: str, consent: str) -> None:
    gw.check_row(victims_details=details, victim_consent=consent).assert_valid()


@pytest.mark.parametrize(
    "consent",
    [pytest.param("N", id="N"), pytest.param("", id="blank"), pytest.param(None, id="column-absent")],
)
def test_victim_details_without_consent(gw: Gateway, consent: str | None) -> None:
    value = "Former partner; details held by OM"
    gw.check_row(victims_details=value, victim_consent=consent).assert_only(
        2, "victims_details", "victim-consent", value
    )


@pytest.mark.parametrize("consent", ["y", "Yes", "n"])
def test_victim_consent_value(gw: Gateway, consent: str) -> None:
    gw.check_row(victims_details="", victim_consent=consent).assert_only(2, "victim_consent", "consent-value", consent)


def test_victim_consent_lower_case_y_is_not_consent(gw: Gateway) -> None:
    outcome = gw.check_row(victims_details="Former partner; details held by OM", victim_consent="y")
    assert sorted(outcome.errors) == [(2, "victim_consent", "consent-value"), (2, "victims_details", "victim-consent")]
    assert outcome.rc == 1


# --------------------------------------------------------------------------------------------- ownership

SAMPLE_VALUES = {"cro_number": "265416/21G", "victim_consent": "N"}
OWNED = [
    ("cro_number", "police"),
    ("cro_number", "yos"),
    ("current_intelligence", "police"),
    ("licence_conditions", "probation"),
    ("in_treatment", "treatment"),
    ("drug_test_results", "police"),
    ("family_details", "council"),
    ("risk_assessment", "treatment"),
    ("compliance_history", "yos"),
    ("victim_consent", "probation"),
]
NOT_OWNED = [
    ("cro_number", "council"),
    ("current_intelligence", "probation"),
    ("licence_conditions", "police"),
    ("in_treatment", "police"),
    ("drug_test_results", "housing"),
    ("family_details", "treatment"),
    ("risk_assessment", "housing"),
    ("compliance_history", "council"),
    ("victim_consent", "treatment"),
]


def holders(column: str) -> list[str]:
    kinds = OWNERSHIP["columns"][column]
    return list(KINDS) if "*" in kinds else kinds


@pytest.mark.parametrize(("column", "agency"), OWNED, ids=[f"{c}-{a}" for c, a in OWNED])
def test_ownership_holder_may_send(gw: Gateway, column: str, agency: str) -> None:
    assert agency in holders(column)
    gw.check_row(agency=agency, **{column: SAMPLE_VALUES.get(column, "Seen weekly at the hub")}).assert_valid()


@pytest.mark.parametrize(("column", "agency"), NOT_OWNED, ids=[f"{c}-{a}" for c, a in NOT_OWNED])
def test_ownership_non_holder_refused(gw: Gateway, column: str, agency: str) -> None:
    assert agency not in holders(column)
    outcome = gw.check_row(agency=agency, **{column: SAMPLE_VALUES.get(column, "Seen weekly at the hub")})
    outcome.assert_only(1, column, "not-held")
    message = outcome.error("not-held")["message"]
    assert column in message
    for kind in holders(column):
        assert re.search(rf"\b{kind}\b", message), f"{kind} not named in {message!r}"


@pytest.mark.parametrize("agency", AGENCIES)
def test_ownership_identity_columns_held_by_every_kind(gw: Gateway, agency: str) -> None:
    everyone = [column for column, kinds in OWNERSHIP["columns"].items() if kinds == ["*"]]
    values = {
        "title": "Mr",
        "address_street": "1 Chapel Hill",
        "address_locality": "Heswall",
        "post_town": "Bournemouth",
        "postcode": "BH11AA",
        "ethnicity": "W1",
        "engagement": "Attends weekly",
        "case_management": "Reviewed monthly",
    }
    assert set(everyone) == set(values) | set(BASE)
    gw.check_row(agency=agency, **values).assert_valid()


@pytest.mark.parametrize(
    ("agency", "held"),
    [("treatment", True), ("police", False), ("council", False)],
)
def test_ownership_override_in_gateway_toml(gw: Gateway, agency: str, held: bool) -> None:
    gw.configure(ownership={"family_details": ["treatment"]})
    outcome = gw.check_row(agency=agency, family_details="Lives with mother")
    if held:
        outcome.assert_valid()
    else:
        outcome.assert_only(1, "family_details", "not-held")
        assert "treatment" in outcome.error("not-held")["message"]


# --------------------------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("column", "spelling", "value"),
    [
        ("date_of_birth", "Date of Birth", "05/03/1990"),
        ("date_of_birth", "DATE-OF-BIRTH", "05/03/1990"),
        ("date_of_birth", "date/of/birth", "05/03/1990"),
        ("date_of_birth", " date_of_birth ", "05/03/1990"),
        ("date_of_birth", "DateOfBirth", "05/03/1990"),
        ("forename", "FORENAME", "Siobhan"),
        ("victims_details", "Victims Details (with consent)", "Former partner"),
        ("postcode", "Post Code (with no spaces)", "BH11AA"),
        ("family_details", "Family Details/Circs", "Lives with mother"),
        ("licence_conditions", "Licence or other Conditions", "Curfew 7pm"),
    ],
    ids=[
        "Date of Birth",
        "DATE-OF-BIRTH",
        "date/of/birth",
        "padded-with-spaces",
        "DateOfBirth",
        "FORENAME",
        "alias-victims-with-consent",
        "alias-post-code",
        "alias-family-circs",
        "alias-licence-conditions",
    ],
)
def test_header_spellings_match(gw: Gateway, column: str, spelling: str, value: str) -> None:
    header, row = one_row(**{column: value}, **({"victim_consent": "Y"} if column == "victims_details" else {}))
    header[header.index(column)] = spelling
    gw.check(csv_bytes(header, row), agency="probation").assert_valid()


def test_header_unknown_column_suggests_the_close_one(gw: Gateway) -> None:
    header, row = one_row()
    outcome = gw.check(csv_bytes([*header, "Date Of Brith"], [*row, "05/03/1990"]))
    outcome.assert_only(1, "E", "unknown-column")
    assert "date_of_birth" in outcome.error("unknown-column")["message"]


@pytest.mark.parametrize(
    ("cell", "shape"),
    [
        pytest.param("Siobhan Kelly", "Aaaaaaa Aaaaa", id="a-name"),
        pytest.param("Kelly 05/03/1990 BH1 1AA", "Aaaaa 99/99/9999 AA9 9AA", id="a-pasted-row"),
        pytest.param("Date Of Brith", "Aaaa Aa Aaaaa", id="a-misspelt-column"),
        pytest.param("x" * 5_000, "a" * 40 + "... (5,000 characters)", id="a-long-cell"),
        pytest.param("forename\u202e", "aaaaaaaa\\u202e", id="a-column-name-with-a-bidi-control"),
    ],
)
def test_header_unknown_column_is_masked(gw: Gateway, cell: str, shape: str) -> None:
    # A header cell is a cell: the report shows its shape, never its text (issue 9, finding 6).
    header, row = one_row()
    outcome = gw.check(csv_bytes([*header, cell], [*row, "x"]))
    outcome.assert_only(1, "E", "unknown-column", cell)
    error = outcome.error("unknown-column")
    assert error["shape"] == shape
    assert repr(cell) not in error["message"]
    assert f"(value shaped {shape!r})" in outcome.text


def test_header_misspelt_required_column(gw: Gateway) -> None:
    header, row = one_row()
    header[header.index("date_of_birth")] = "Date Of Brith"
    outcome = gw.check(csv_bytes(header, row))
    assert sorted(outcome.errors, key=str) == [(1, "D", "unknown-column"), (1, "date_of_birth", "missing-column")]
    assert "date_of_birth" in outcome.error("unknown-column")["message"]


@pytest.mark.parametrize("spelling", ["date_of_birth", "Date of Birth"])
def test_header_duplicate_column(gw: Gateway, spelling: str) -> None:
    header, row = one_row()
    gw.check(csv_bytes([*header, spelling], [*row, "05/03/1990"])).assert_only(1, "date_of_birth", "duplicate-column")


@pytest.mark.parametrize("column", sorted(SCHEMA["required"]))
def test_header_missing_required_column(gw: Gateway, column: str) -> None:
    gw.check(csv_bytes(*one_row(**{column: None}))).assert_only(1, column, "missing-column")


def test_header_missing_first_row_is_data(gw: Gateway) -> None:
    _, row = one_row()
    gw.check(csv_bytes(row, row)).assert_only(1, None, "no-header")


# --------------------------------------------------------------------------------------------- CSV dialect and encoding


@pytest.mark.parametrize(
    ("bom", "newline", "encoding"),
    [(False, "\r\n", "utf-8"), (True, "\r\n", "utf-8-sig"), (False, "\n", "utf-8"), (True, "\n", "utf-8-sig")],
    ids=["utf8-CRLF", "utf8-BOM-CRLF", "utf8-LF", "utf8-BOM-LF"],
)
def test_utf8_with_and_without_bom(gw: Gateway, bom: bool, newline: str, encoding: str) -> None:
    header, row = one_row(forename="Siobhán", surname="Zoë")
    outcome = gw.check(csv_bytes(header, row, row, newline=newline, bom=bom))
    outcome.assert_valid()
    assert outcome.report["encoding"] == encoding
    assert outcome.report["rows"] == 2


def test_no_trailing_newline(gw: Gateway) -> None:
    gw.check(csv_bytes(*one_row()).rstrip(b"\r\n")).assert_valid()


def test_windows_1252_accepted(gw: Gateway) -> None:
    data = csv_bytes(*one_row(forename="Siobhán", surname="Zoë"), encoding="cp1252")
    assert b"Siobh\xe1n" in data
    outcome = gw.check(data)
    outcome.assert_valid()
    assert outcome.report["encoding"] == "cp1252"


@pytest.mark.parametrize("newline", ["\r\n", "\n"], ids=["CRLF", "LF"])
def test_quoted_line_breaks_are_one_row(gw: Gateway, newline: str) -> None:
    header, good = one_row(criminal_history=f"first{newline}second{newline}third")
    _, bad = one_row(criminal_history="one line", gender="X")
    outcome = gw.check(csv_bytes(header, good, bad, newline=newline))
    outcome.assert_only(3, "gender", "gender-value")
    assert outcome.report["rows"] == 2


def _with_bad_byte(where: str) -> tuple[bytes, int]:
    header, row = one_row()
    if where == "offset-0":
        data = b"\x81" + csv_bytes(header, row)
    elif where == "header":
        data = csv_bytes(header, row).replace(b"surname", b"sur\x81name")
    elif where == "row-3":
        data = csv_bytes(header, row, row, row).replace(b"Kelly", b"Ke\x81lly", 2).replace(b"Ke\x81lly", b"Kelly", 1)
    else:  # "after-cp1252-byte": the UTF-8 reading fails earlier, at the \xe1 of a cp1252 Siobhán
        data = csv_bytes(header, one_row(forename="Siobhán")[1], encoding="cp1252").replace(b"Kelly", b"Ke\x81lly")
    return data, data.index(b"\x81")


@pytest.mark.parametrize("where", ["offset-0", "header", "row-3", "after-cp1252-byte"])
def test_neither_utf8_nor_windows_1252(gw: Gateway, where: str) -> None:
    data, offset = _with_bad_byte(where)
    outcome = gw.check(data)
    outcome.assert_only(None, None, "encoding")
    message = outcome.error("encoding")["message"]
    assert re.search(rf"\boffset {offset}\b|\boffset {offset:,}\b", message), (offset, message)


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_refused(gw: Gateway, codec: str) -> None:
    text = csv_bytes(*one_row()).decode("utf-8")
    data = text.encode(codec) if codec == "utf-16" else "\ufeff".encode(codec) + text.encode(codec)
    gw.check(data).assert_only(None, None, "encoding")


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf"], ids=["0-bytes", "BOM-only"])
def test_empty_file(gw: Gateway, data: bytes) -> None:
    gw.check(data).assert_only(None, None, "empty-file")


def test_header_only(gw: Gateway) -> None:
    outcome = gw.check(csv_bytes(HEADER))
    outcome.assert_only(None, None, "no-rows")
    assert outcome.report["rows"] == 0


@pytest.mark.parametrize("blank", [[], ["", "", "", ""]], ids=["empty-line", "only-commas"])
def test_blank_row_in_the_middle(gw: Gateway, blank: list[str]) -> None:
    header, row = one_row()
    outcome = gw.check(csv_bytes(header, row, row, blank, row))
    outcome.assert_only(4, None, "blank-row")


@pytest.mark.parametrize("extra", [["spare"], []], ids=["one-cell-too-many", "one-cell-too-few"])
def test_field_count(gw: Gateway, extra: list[str]) -> None:
    header, row = one_row()
    outcome = gw.check(csv_bytes(header, row, row + extra if extra else row[:-1], row))
    outcome.assert_only(3, None, "field-count")


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b'"Siobhan,Kelly,F,05/03/1990\r\n', id="unterminated-quote"),
        pytest.param(b'"Siob"han,Kelly,F,05/03/1990\r\n', id="text-after-closing-quote"),
        pytest.param(b'"ab"c,Kelly,F,05/03/1990\r\n', id="ab-c"),
    ],
)
def test_csv_syntax(gw: Gateway, line: bytes) -> None:
    header, row = one_row()
    gw.check(csv_bytes(header, row) + line).assert_only(3, None, "csv-syntax")


def test_csv_syntax_in_the_header_is_row_1(gw: Gateway) -> None:
    _, row = one_row()
    gw.check(b'forename,"sur"name,gender,date_of_birth\r\n' + csv_bytes(row)).assert_only(1, None, "csv-syntax")


def test_every_error_in_a_file_is_reported_with_its_row(gw: Gateway) -> None:
    header, good = one_row(postcode="BH11AA")
    rows = [good, one_row(postcode="bh11aa")[1], good, one_row(gender="Male", postcode="BH11AA")[1]]
    outcome = gw.check(csv_bytes(header, *rows))
    assert outcome.errors == [(3, "postcode", "postcode-format"), (5, "gender", "gender-value")]
    assert outcome.report["counts"] == {"postcode-format": 1, "gender-value": 1}
    assert outcome.report["rows"] == 4
    for value in ("bh11aa", "Male"):
        outcome.assert_not_echoed(value)


# --------------------------------------------------------------------------------------------- exit codes


def test_exit_valid_is_0_and_invalid_is_1(gw: Gateway) -> None:
    assert gw.check_row().rc == 0
    assert gw.check_row(gender="Z").rc == 1


def test_exit_unknown_agency_is_2(gw: Gateway) -> None:
    path = gw.write(csv_bytes(*one_row()))
    rc, out, err = gw.cli("validate", str(path), "--agency", "fire", "--period", PERIOD)
    assert rc == 2
    assert out == ""
    for agency in AGENCIES:
        assert agency in err


def test_exit_missing_file_is_2(gw: Gateway) -> None:
    rc, _, err = gw.cli("validate", str(gw.tmp / "nowhere.csv"), "--agency", "police", "--period", PERIOD)
    assert rc == 2
    assert "nowhere.csv" in err


def test_exit_bad_period_is_2(gw: Gateway) -> None:
    path = gw.write(csv_bytes(*one_row()))
    rc, _, _ = gw.cli("validate", str(path), "--agency", "police", "--period", "2026-13")
    assert rc == 2


def test_exit_symlink_is_refused(gw: Gateway) -> None:
    target = gw.write(csv_bytes(*one_row()), "real.csv")
    link = gw.tmp / "link.csv"
    link.symlink_to(target)
    assert gw.check(target).rc == 0
    rc, out, err = gw.cli("validate", str(link), "--agency", "police", "--period", PERIOD)
    assert rc == 1
    assert "link" in err
    assert "Siobhan" not in out + err


def test_exit_directory_is_refused(gw: Gateway) -> None:
    folder = gw.tmp / "folder.csv"
    folder.mkdir()
    rc, _, err = gw.cli("validate", str(folder), "--agency", "police", "--period", PERIOD)
    assert rc == 1
    assert err.strip()
