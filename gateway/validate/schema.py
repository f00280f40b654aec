"""Load schemas/ (the Table 1 JSON Schema and the ownership matrix) and compile them once.

Only the subset of draft 2020-12 the standard needs is accepted (string properties with
pattern, enum, minLength, maxLength, local $ref, and an allOf of `^[^…]*$` patterns: characters
refused anywhere in a cell, each with its own rule); anything else is refused at load, so the
compiled checks can never silently drift from the schema they come from.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

from gateway.core.errors import SchemaError

SCHEMA_FILE = "table1.schema.json"
OWNERSHIP_FILE = "ownership.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
EVERY_KIND = "*"
_TOP_KEYS = {
    "$schema",
    "$id",
    "title",
    "description",
    "x-version",
    "x-unicode",
    "type",
    "additionalProperties",
    "required",
    "$defs",
    "properties",
}
_ANNOTATIONS = {"description", "title", "examples", "x-errors", "x-aliases", "x-free-text"}
_ASSERTIONS = {"type", "pattern", "maxLength", "minLength", "enum", "allOf"}
_REFUSAL_KEYS = {"pattern", "description", "x-errors"}
# `[^…]*` with one class body of escapes and plain characters (no `[` or `]`, no leading `^`,
# no bare `-` at either end), so that two bodies side by side mean their union: the gate builds
# such classes.
_CLASS_ITEM = r"(?:\\.|[^\\\[\]])"  # an escape, or a character other than \ [ ]
_NEGATED_CLASS = re.compile(
    rf"\[\^((?:\\.|[^\\\[\]^-])(?:{_CLASS_ITEM}*(?:\\.|[^\\\[\]-]))?)\]\*"  # first not ^ or -, last not -
)
CHARACTER_PLACEHOLDER = "{character}"
# A Table 1 header has at most this many cells per column of the standard: enough for a full
# export with a case system's extra columns (each reported), far below anything that would make
# matching the header and compiling its row matcher expensive (issue 9: 520,000 columns, 60 s).
HEADER_CELLS_PER_COLUMN = 4
_T = TypeVar("_T")
_HEADER_NOISE = re.compile(r"[\s_\-/]+")


def negated_class(pattern: str) -> str | None:
    """The class body of a pattern that is exactly `[^…]*` (characters refused anywhere), or None."""
    found = _NEGATED_CLASS.fullmatch(pattern)
    return found.group(1) if found else None


def header_key(header: str) -> str:
    """Fold a header cell for matching: case-insensitive, ignoring spaces, `_`, `-` and `/`."""
    return _HEADER_NOISE.sub("", header).casefold()


@dataclass(frozen=True, slots=True)
class Failure:
    """How one schema keyword fails: the report's rule id and the sentence that says the fix."""

    rule: str
    message: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Characters a column refuses anywhere in a cell (an allOf `^[^…]*$` entry), and its rule."""

    chars: str  # the class body as the schema writes it, e.g. `\u202a-\u202e`
    search: re.Pattern[str]
    failure: Failure

    def failure_in(self, value: str) -> Failure | None:
        """The failure naming the first refused character in `value` (as `U+202E RIGHT-TO-LEFT OVERRIDE`), or None."""
        found = self.search.search(value)
        if found is None:
            return None
        char = found.group()
        named = f"U+{ord(char):04X} {unicodedata.name(char, 'an unnamed character')}"
        return Failure(self.failure.rule, self.failure.message.replace(CHARACTER_PLACEHOLDER, named))


@dataclass(frozen=True, slots=True)
class Column:
    """One Table 1 column, compiled from its schema property."""

    name: str
    required: bool
    free_text: bool
    pattern: re.Pattern[str] | None
    enum: frozenset[str] | None
    min_length: int | None
    max_length: int | None
    failures: Mapping[str, Failure]
    refusals: tuple[Refusal, ...] = ()

    def failure(self, value: str) -> Failure | None:
        """The first schema keyword a non-empty `value` breaks, or None (refused characters first)."""
        for refusal in self.refusals:
            if (failure := refusal.failure_in(value)) is not None:
                return failure
        if self.max_length is not None and len(value) > self.max_length:
            return self.failures["maxLength"]
        if self.min_length is not None and len(value) < self.min_length:
            return self.failures["minLength"]
        if self.pattern is not None and self.pattern.fullmatch(value) is None:
            return self.failures["pattern"]
        if self.enum is not None and value not in self.enum:
            return self.failures["enum"]
        return None


@dataclass(frozen=True, slots=True)
class Standard:
    """The compiled row standard plus the default ownership matrix."""

    version: str
    columns: Mapping[str, Column]
    headers: Mapping[str, str]
    kinds: frozenset[str]
    holders: Mapping[str, tuple[str, ...]]

    @property
    def max_header_cells(self) -> int:
        """The widest header read cell by cell; a wider one is refused whole (too-many-columns)."""
        return HEADER_CELLS_PER_COLUMN * len(self.columns)

    def column_for(self, header: str) -> str | None:
        """The canonical column a header cell names, or None if it names none."""
        return self.headers.get(header_key(header))

    def holders_of(self, column: str, overrides: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
        """The kinds that may send `column` (the partnership's override wins), '*' expanded."""
        holders = overrides.get(column, self.holders[column])
        return tuple(sorted(self.kinds)) if EVERY_KIND in holders else holders


def load_standard(root: Path) -> Standard:
    """Compile `root/schemas/` (cached per file version); raise SchemaError if missing or malformed."""
    folder = root / "schemas"
    try:
        stamps = tuple((folder / name).stat().st_mtime_ns for name in (SCHEMA_FILE, OWNERSHIP_FILE))
    except FileNotFoundError as exc:
        raise SchemaError(
            f"{exc.filename!r} is missing: the gateway refuses to validate without its schema; "
            "run from a gateway root or pass --root"
        ) from None
    return _compile(folder, stamps)


@functools.lru_cache(maxsize=4)
def _compile(folder: Path, stamps: tuple[int, ...]) -> Standard:
    schema = _read_json(folder / SCHEMA_FILE)
    ownership = _read_json(folder / OWNERSHIP_FILE)
    where = str(folder / SCHEMA_FILE)
    _expect(set(schema) <= _TOP_KEYS, where, f"unsupported top-level keywords {sorted(set(schema) - _TOP_KEYS)}")
    _expect(schema.get("$schema") == DRAFT, where, f"$schema must be {DRAFT}")
    _expect(
        schema.get("type") == "object" and schema.get("additionalProperties") is False,
        where,
        "a row must be type object with additionalProperties false (unknown columns are errors)",
    )
    properties = _need(schema.get("properties"), dict, where, "properties must list the columns")
    required = set(_need(schema.get("required", []), list, where, "required must be a list of columns"))
    _expect(required <= set(properties), where, f"required names unknown columns {sorted(required - set(properties))}")
    defs = schema.get("$defs", {})
    columns = {
        name: _column(name, _resolve(name, prop, defs, where), name in required, defs, where)
        for name, prop in properties.items()
    }
    headers: dict[str, str] = {}
    for name, prop in properties.items():
        for spelling in [name, *_resolve(name, prop, defs, where).get("x-aliases", [])]:
            key = header_key(spelling)
            _expect(headers.get(key, name) == name, where, f"header {spelling!r} names two columns")
            headers[key] = name
    kinds, holders = _ownership(ownership, set(columns), str(folder / OWNERSHIP_FILE))
    return Standard(str(schema.get("x-version", "")), columns, headers, kinds, holders)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SchemaError(f"{str(path)!r} cannot be read as JSON: {exc}; restore it from the release") from None
    _expect(isinstance(data, dict), str(path), "the top level must be an object")
    return data  # type: ignore[no-any-return]


def _need(value: Any, kind: type[_T], where: str, problem: str) -> _T:
    _expect(isinstance(value, kind) and bool(value), where, problem)
    return cast(_T, value)


def _expect(condition: bool, where: str, problem: str) -> None:
    if not condition:
        _fail(where, problem)


def _fail(where: str, problem: str) -> NoReturn:
    raise SchemaError(f"{where!r}: {problem}; restore the shipped schema or fix it")


def _resolve(name: str, prop: Any, defs: Mapping[str, Any], where: str) -> dict[str, Any]:
    _expect(isinstance(prop, dict), where, f"property {name!r} must be an object")
    ref = prop.get("$ref")
    if ref is None:
        return dict(prop)
    target = ref.removeprefix("#/$defs/")
    _expect(ref.startswith("#/$defs/") and target in defs, where, f"{name}: $ref {ref!r} must name a local $defs entry")
    _expect(set(prop) - {"$ref"} <= _ANNOTATIONS, where, f"{name}: only annotations may stand beside $ref")
    return {**defs[target], **{k: v for k, v in prop.items() if k != "$ref"}}


def _column(name: str, prop: dict[str, Any], required: bool, defs: Mapping[str, Any], where: str) -> Column:
    unknown = set(prop) - _ANNOTATIONS - _ASSERTIONS
    _expect(not unknown, where, f"{name}: unsupported keywords {sorted(unknown)}")
    _expect(prop.get("type") == "string", where, f"{name}: every column is type string")
    pattern = prop.get("pattern")
    compiled = None
    if pattern is not None:
        _expect(
            isinstance(pattern, str)
            and pattern.startswith("^")
            and pattern.endswith("$")
            and not pattern.endswith("\\$"),
            where,
            f"{name}: pattern must be anchored ^…$",
        )
        compiled = _regex(pattern[1:-1], where, name)
    failures = {key: _failure(prop, key) for key in ("pattern", "enum", "minLength", "maxLength")}
    enum = prop.get("enum")
    return Column(
        name=name,
        required=required,
        free_text=bool(prop.get("x-free-text")),
        pattern=compiled,
        enum=frozenset(enum) if enum is not None else None,
        min_length=prop.get("minLength"),
        max_length=prop.get("maxLength"),
        failures=failures,
        refusals=_refusals(name, prop.get("allOf", []), defs, where),
    )


def _refusals(name: str, entries: Any, defs: Mapping[str, Any], where: str) -> tuple[Refusal, ...]:
    _expect(isinstance(entries, list), where, f"{name}: allOf must be a list")
    refusals = []
    for entry in entries:
        sub = _resolve(name, entry, defs, where)
        pattern = sub.get("pattern")
        anchored = isinstance(pattern, str) and pattern.startswith("^") and pattern.endswith("$")
        chars = negated_class(str(pattern)[1:-1]) if anchored else None
        if chars is None or not set(sub) <= _REFUSAL_KEYS:
            _fail(
                where,
                f"{name}: allOf may only list patterns ^[^…]*$ (characters refused anywhere in a cell) "
                "with their x-errors",
            )
        refusals.append(Refusal(chars, _regex(f"[{chars}]", where, name), _failure(sub, "pattern")))
    return tuple(refusals)


def _regex(pattern: str, where: str, name: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise SchemaError(f"{where!r}: {name}: pattern does not compile: {exc}") from None


def _failure(prop: Mapping[str, Any], key: str) -> Failure:
    error = prop.get("x-errors", {}).get(key, {})
    return Failure(error.get("rule", _DEFAULT_RULES[key]), error.get("message", _DEFAULT_MESSAGES[key]))


_DEFAULT_RULES = {"pattern": "format", "enum": "value", "minLength": "min-length", "maxLength": "max-length"}
_DEFAULT_MESSAGES = {
    "pattern": "is not in the agreed format",
    "enum": "is not one of the agreed values",
    "minLength": "is too short",
    "maxLength": "is too long",
}


def _ownership(
    data: dict[str, Any], columns: set[str], where: str
) -> tuple[frozenset[str], dict[str, tuple[str, ...]]]:
    kinds = _need(data.get("kinds"), list, where, "kinds must list the agency kinds")
    table = _need(data.get("columns"), dict, where, "columns must map each column to its holders")
    _expect(set(table) == columns, where, "columns must give the holders of exactly the schema's columns")
    allowed = set(kinds) | {EVERY_KIND}
    for column, holders in table.items():
        _expect(
            isinstance(holders, list) and bool(holders) and set(holders) <= allowed,
            where,
            f"{column}: holders must be kinds from {sorted(allowed)}",
        )
    return frozenset(kinds), {column: tuple(holders) for column, holders in table.items()}
