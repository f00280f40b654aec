"""The only reader of gateway.toml and of the environment: everything is checked once, here."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, UsageError
from gateway.model import AGENCY_ID, Agency

ROOT_ENV = "IOM_GATEWAY_ROOT"
CONFIG_NAME = "gateway.toml"
EVERY_KIND = "*"


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps that keep a hostile or mistaken file from exhausting the gateway."""

    max_file_bytes: int = 256 * 1024 * 1024
    max_rows: int = 1_000_000
    max_cell_chars: int = 65_536
    max_line_bytes: int = 1_048_576
    max_reported_errors: int = 1_000


@dataclass(frozen=True, slots=True)
class Policy:
    """Partnership choices that loosen a default; each one is named for its risk."""

    unsafe_allow_formula_cells: bool = False


@dataclass(frozen=True, slots=True)
class Config:
    """A checked gateway.toml: build it with `Config.load`."""

    root: Path
    partnership: str
    agencies: Mapping[str, Agency]
    limits: Limits = field(default_factory=Limits)
    policy: Policy = field(default_factory=Policy)
    ownership: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def agency(self, agency_id: str) -> Agency:
        """The agency called `agency_id`; raise UsageError listing the partnership's agencies."""
        try:
            return self.agencies[agency_id]
        except KeyError:
            known = ", ".join(sorted(self.agencies)) or "none"
            raise UsageError(
                f"agency {agency_id!r} is not in {CONFIG_NAME} (agencies: {known}): use one of those ids"
            ) from None

    @classmethod
    def load(cls, root: Path, *, columns: frozenset[str], kinds: frozenset[str]) -> Config:
        """Read `root/gateway.toml`, checking it against the standard's `columns` and agency `kinds`.

        Raises ConfigError listing every mistake with its line and the fix.
        """
        path = root / CONFIG_NAME
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"no {CONFIG_NAME} in {str(root)!r}: pass --root DIR or set {ROOT_ENV} to a gateway root"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{str(path)!r} cannot be read: {exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{str(path)!r}: {exc}: fix the TOML syntax there") from None
        checker = _Checker(path, text)
        config = checker.config(root, data, columns, kinds)
        checker.raise_problems()
        return config


def resolve_root(arg: str | None) -> Path:
    """The gateway root: --root, else $IOM_GATEWAY_ROOT, else the current folder."""
    chosen = arg or os.environ.get(ROOT_ENV) or "."
    return Path(chosen).resolve()


class _Checker:
    """Collects every problem in one gateway.toml, each with its line number."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = _key_lines(text)
        self.problems: list[tuple[int, str]] = []

    def problem(self, key: str, message: str) -> None:
        line = self.lines.get(key)
        while line is None and "." in key:
            key = key.rsplit(".", 1)[0]
            line = self.lines.get(key)
        self.problems.append((line or 0, message))

    def raise_problems(self) -> None:
        if self.problems:
            listed = "\n".join(
                f"  line {line}: {message}" if line else f"  {message}" for line, message in sorted(self.problems)
            )
            raise ConfigError(f"{str(self.path)!r} has {len(self.problems)} mistake(s):\n{listed}")

    def config(self, root: Path, data: dict[str, Any], columns: frozenset[str], kinds: frozenset[str]) -> Config:
        for section in sorted(set(data) - {"partnership", "limits", "policy", "agencies", "ownership"}):
            self.problem(section, f"unknown section [{section}]: remove it or check its spelling")
        partnership = self.table(data, "partnership")
        name = partnership.get("name")
        if not isinstance(name, str) or not name.strip():
            self.problem("partnership", '[partnership] needs name = "…" (the partnership\'s name)')
            name = ""
        return Config(
            root=root,
            partnership=name,
            agencies=self.agencies(self.table(data, "agencies"), kinds),
            limits=self.dataclass_table(Limits, self.table(data, "limits"), "limits"),
            policy=self.dataclass_table(Policy, self.table(data, "policy"), "policy"),
            ownership=self.ownership(self.table(data, "ownership"), columns, kinds),
        )

    def table(self, data: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.problem(key, f"{key} must be a table, written [{key}]")
            return {}
        return value

    def dataclass_table(self, kind: Any, table: dict[str, Any], section: str) -> Any:
        known = {f.name: f for f in fields(kind)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            where = f"{section}.{key}"
            if key not in known:
                self.problem(where, f"unknown setting {key!r} in [{section}]: known are {', '.join(known)}")
            elif isinstance(getattr(kind(), key), bool):
                if isinstance(value, bool):
                    values[key] = value
                else:
                    self.problem(where, f"{section}.{key} must be true or false")
            elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
                values[key] = value
            else:
                self.problem(where, f"{section}.{key} must be a whole number above 0")
        return kind(**values)

    def agencies(self, table: dict[str, Any], kinds: frozenset[str]) -> dict[str, Agency]:
        agencies: dict[str, Agency] = {}
        if not table:
            self.problem("agencies", "no agencies: add one [agencies.<id>] table per partner agency")
        for agency_id, entry in table.items():
            where = f"agencies.{agency_id}"
            if not AGENCY_ID.fullmatch(agency_id):
                self.problem(where, f"agency id {agency_id!r} must be lower-case letters, digits and '-'")
                continue
            if not isinstance(entry, dict):
                self.problem(where, f"agencies.{agency_id} must be a table [agencies.{agency_id}]")
                continue
            for key in sorted(set(entry) - {"name", "kind"}):
                self.problem(f"{where}.{key}", f"unknown setting {key!r} for agency {agency_id!r}")
            name, kind = entry.get("name"), entry.get("kind")
            if not isinstance(name, str) or not name.strip():
                self.problem(where, f'agency {agency_id!r} needs name = "…"')
            if kind not in kinds:
                self.problem(f"{where}.kind", f"agency {agency_id!r} kind must be one of {', '.join(sorted(kinds))}")
            if isinstance(name, str) and isinstance(kind, str):
                agencies[agency_id] = Agency(agency_id, name, kind)
        return agencies

    def ownership(
        self, table: dict[str, Any], columns: frozenset[str], kinds: frozenset[str]
    ) -> dict[str, tuple[str, ...]]:
        overrides: dict[str, tuple[str, ...]] = {}
        for column, holders in table.items():
            where = f"ownership.{column}"
            if column not in columns:
                self.problem(where, f"[ownership] names unknown column {column!r}: use a Table 1 column name")
                continue
            allowed = kinds | {EVERY_KIND}
            if not isinstance(holders, list) or not all(isinstance(h, str) and h in allowed for h in holders):
                self.problem(where, f"ownership.{column} must be a list of kinds from {', '.join(sorted(allowed))}")
                continue
            overrides[column] = tuple(holders)
        return overrides


def _key_lines(text: str) -> dict[str, int]:
    """Map dotted keys (`limits.max_rows`, `agencies.police`) to their line in a hand-written TOML file."""
    lines: dict[str, int] = {}
    table = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("["):
            table = line.strip("[] \t").replace('"', "")
            lines.setdefault(table, number)
        elif "=" in line and not line.startswith("#"):
            key = line.split("=", 1)[0].strip().strip('"')
            lines.setdefault(f"{table}.{key}" if table else key, number)
    return lines
