"""The compiled standard must mean exactly what the JSON Schema says, and refuse what it cannot compile."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from gateway.core.errors import SchemaError
from gateway.validate.schema import header_key, load_standard
from tests.conftest import REPO, make_root
from tests.unit.validate.values import BIDI_CONTROLS, VALID, cell_values

SCHEMA = json.loads((REPO / "schemas" / "table1.schema.json").read_text(encoding="utf-8"))
STANDARD = load_standard(REPO)
REFERENCE = Draft202012Validator(SCHEMA)
FILLER = {"forename": "Ann", "surname": "Lee", "gender": "F", "date_of_birth": "01/01/1990"}


def test_shipped_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert set(STANDARD.columns) == set(SCHEMA["properties"])
    assert {name for name, column in STANDARD.columns.items() if column.required} == set(SCHEMA["required"])


def _reference_accepts(column: str, value: str) -> bool:
    row = {**FILLER, column: value}
    return not any(error.path and error.path[0] == column for error in REFERENCE.iter_errors(row))


@given(st.data())
def test_compiled_columns_agree_with_jsonschema(data: st.DataObject) -> None:
    column = data.draw(st.sampled_from(sorted(STANDARD.columns)))
    value = data.draw(cell_values(column).filter(bool))
    ours = STANDARD.columns[column].failure(value) is None
    theirs = _reference_accepts(column, value)
    if value.endswith("\n") and STANDARD.columns[column].pattern is not None:
        # Python's re lets `$` match before a final newline; the standard anchors like ECMA-262.
        assert not ours or theirs
    else:
        assert ours == theirs, (column, value)


@pytest.mark.parametrize("column", sorted(VALID))
def test_every_listed_valid_value_passes_both(column: str) -> None:
    for value in VALID[column]:
        assert STANDARD.columns[column].failure(value) is None, value
        assert _reference_accepts(column, value), value


TEXT_COLUMNS = sorted(
    c for c in STANDARD.columns if STANDARD.columns[c].free_text or c in ("title", "forename", "surname")
)


@pytest.mark.parametrize("column", ["forename", "criminal_history"])
def test_of_all_unicode_exactly_the_bidi_controls_are_bidi_control(column: str) -> None:
    # Issue 9, finding 6: U+061C, U+200E/F, U+202A-U+202E, U+2066-U+2069 and U+FEFF, nothing else.
    failures = (STANDARD.columns[column].failure(f"Ab{chr(code)}c") for code in range(0x110000))
    refused = {
        chr(code) for code, failure in enumerate(failures) if failure is not None and failure.rule == "bidi-control"
    }
    assert refused == set(BIDI_CONTROLS)


@pytest.mark.parametrize("column", TEXT_COLUMNS)
def test_every_text_column_refuses_the_bidi_controls_first(column: str) -> None:
    for char in BIDI_CONTROLS:
        for value in (char + "Ab", "Ab" + char, "A" * 4_001 + char):
            failure = STANDARD.columns[column].failure(value)
            assert failure is not None and failure.rule == "bidi-control", (column, value[:5])


def test_trailing_newline_is_not_a_postcode() -> None:
    assert STANDARD.columns["postcode"].failure("BH11AA\n") is not None


@pytest.mark.parametrize(
    ("header", "column"),
    [
        ("Date of Birth", "date_of_birth"),
        ("DATE-OF-BIRTH", "date_of_birth"),
        ("date/of/birth", "date_of_birth"),
        (" date_of_birth ", "date_of_birth"),
        ("Post Code", "postcode"),
        ("CRO Number", "cro_number"),
        ("Victims Details (with consent)", "victims_details"),
        ("Family Details/Circs", "family_details"),
        ("Date of Brith", None),
        ("", None),
    ],
)
def test_header_matching(header: str, column: str | None) -> None:
    assert STANDARD.column_for(header) == column


def test_header_key_ignores_case_space_underscore_hyphen_slash() -> None:
    assert header_key(" Om_Name-/ x\t") == "omnamex"


def _broken(tmp_path: Path, change: Any) -> Path:
    root = make_root(tmp_path / "root")
    schema = json.loads((root / "schemas" / "table1.schema.json").read_text(encoding="utf-8"))
    change(schema)
    (root / "schemas" / "table1.schema.json").write_text(json.dumps(schema), encoding="utf-8")
    return root


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda s: s["properties"]["postcode"].update({"format": "uk-postcode"}), "unsupported keywords"),
        (lambda s: s["properties"]["postcode"].update({"pattern": "[A-Z]+"}), "anchored"),
        (lambda s: s["properties"]["postcode"].update({"pattern": "^([A-Z]$"}), "does not compile"),
        (lambda s: s["properties"]["gender"].update({"type": "integer"}), "type string"),
        (lambda s: s.update({"additionalProperties": True}), "additionalProperties false"),
        (lambda s: s["properties"]["forename"].update({"$ref": "#/$defs/nothing"}), "local $defs"),
        (lambda s: s.update({"required": ["nobody"]}), "unknown columns"),
        (lambda s: s.pop("$schema"), "$schema"),
        (lambda s: s["properties"]["title"].update({"allOf": [{"pattern": "^[A-Z]*$"}]}), "allOf may only"),
        (lambda s: s["properties"]["title"].update({"allOf": [{"pattern": "^[^]a]*$"}]}), "allOf may only"),
        (lambda s: s["properties"]["title"].update({"allOf": [{"pattern": "^[^^a]*$"}]}), "allOf may only"),
        (lambda s: s["properties"]["title"].update({"allOf": [{"pattern": "^[^a-]*$"}]}), "allOf may only"),
        (lambda s: s["properties"]["title"].update({"allOf": [{"pattern": "^[^-a]*$"}]}), "allOf may only"),
        (lambda s: s["properties"]["title"].update({"allOf": [{"$ref": "#/$defs/none"}]}), "local $defs"),
        (
            lambda s: s["properties"]["title"].update({"allOf": [{"pattern": "^[^a]*$", "maxLength": 3}]}),
            "allOf may only",
        ),
        (lambda s: s["properties"]["title"].update({"allOf": {"pattern": "^[^a]*$"}}), "allOf must be a list"),
    ],
)
def test_load_refuses_what_it_cannot_compile(tmp_path: Path, change: Any, words: str) -> None:
    with pytest.raises(SchemaError, match=words.replace("$", r"\$")):
        load_standard(_broken(tmp_path, change))


def test_missing_schema_is_refused(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    (root / "schemas" / "ownership.json").unlink()
    with pytest.raises(SchemaError, match=r"ownership\.json"):
        load_standard(root)
