"""Where the journal lives: move a root's SQLite journal (and the register in it) to PostgreSQL, verified row
for row, and bring a PostgreSQL journal's schema up to this gateway's (issue 16)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.adapters import db, pg
from gateway.adapters.config import JOURNAL_CREDENTIAL, journal_url_problem
from gateway.adapters.fsio import atomic_write_bytes
from gateway.admin.keys import read_password_file
from gateway.core.errors import InputFileError, PolicyError, UsageError
from gateway.state.root import STATE, Root

# identity columns whose next value PostgreSQL must be told after rows are copied in with their own ids
_IDENTITIES = (("runs", "id"), ("sar_submissions", "ref"), *((table, "rowid") for table in pg.ROWID_TABLES))
_MODULUS = 1 << 256


@dataclass(frozen=True, slots=True)
class Table:
    """One table as both journals hold it after a move: its rows, and a digest of them (the same on both)."""

    name: str
    rows: int
    digest: str


@dataclass(frozen=True, slots=True)
class Moved:
    url: str
    tables: tuple[Table, ...]

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


def set_password(root: Root, source: Path) -> None:
    """Keep the password in `source` (a 0600 file) in the vault as the PostgreSQL journal's login password."""
    password = read_password_file(source)
    if not password:
        raise InputFileError(f"{str(source)!r} is empty: give a file holding the journal's password")
    with root.changing_vault() as vault:
        vault.set_credential(JOURNAL_CREDENTIAL, password)
    root.audit.append("journal.password_set", actor="admin")


def move_to(root: Root, url: str) -> Moved:
    """Copy the root's SQLite journal whole into the empty PostgreSQL database at `url`, in one transaction, and
    check that every table holds the same rows on both sides (counts, and a digest of every row); then leave
    `state/journal-moved` naming `url`, so the SQLite journal is never used again. The caller holds the root's
    run lock (no daemon is working on it).

    Raises UsageError for a bad URL or a root already on PostgreSQL, PolicyError for a database that is not
    empty or a copy that does not verify (nothing is kept in PostgreSQL then), JournalUnavailable or
    ConfigError for a server that cannot be used.
    """
    problem = journal_url_problem(url)
    if problem is not None:
        raise UsageError(problem.replace("journal.url", "--to"))
    if root.config.journal.url is not None:
        raise UsageError(
            f"this root's journal is already in PostgreSQL ({root.config.journal.url}): a move starts from an SQLite"
            " journal; `iom-gateway journal migrate` without --to brings that one's schema up to date"
        )
    source = root.db  # brought to the newest SQLite schema, which PostgreSQL's first step matches; kept open for
    # the audit log's checkpoint when the command ends (after the move, the root opens no SQLite journal)
    raw = pg.dial(url, root.journal_password())
    try:
        with pg.translated():
            tables = _move(source, raw, url, root)
    finally:
        raw.close()
    moved = Moved(url, tables)
    atomic_write_bytes(root.path / STATE / db.MOVED, f"{url}\n".encode())
    root.audit.append("journal.moved", actor="admin", to=url, tables=len(tables), rows=moved.rows)
    return moved


def _move(source: db.Database, raw: Any, url: str, root: Root) -> tuple[Table, ...]:
    """Check the database (pg.check: this root's, or empty and made so), then copy and verify in one transaction."""
    pg.check(raw, url, root_id=root.identity, root_path=str(root.path))
    names = _tables(source)
    with raw.transaction():
        raw.execute("SELECT pg_advisory_xact_lock(%s)", (pg.WRITER,))
        held = {name: _count(raw, name) for name in names}
        if any(held.values()):
            listed = ", ".join(f"{name} {count}" for name, count in sorted(held.items()) if count)
            raise PolicyError(
                f"the journal at {url} already holds rows ({listed}): a move goes into an empty journal only;"
                " nothing was copied"
            )
        try:
            for name in names:
                _copy(source, raw, name)
        except db.IntegrityError as exc:
            raise PolicyError(
                f"PostgreSQL refused a row of the journal ({exc}): nothing was kept there; the SQLite journal is"
                " still this root's"
            ) from None
        for table, column in _IDENTITIES:
            raw.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"  # noqa: S608 (our names)
                f" COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"
            )
        return tuple(_verify(source, raw, name, url) for name in names)


def upgrade(root: Root) -> int:
    """Bring the PostgreSQL journal [journal] url names to this gateway's schema; return the version it is at.
    (An SQLite journal does this itself whenever it is opened: UsageError.)"""
    url = root.config.journal.url
    if url is None:
        raise UsageError(
            "this root's journal is state/gateway.db, which brings itself up to date when opened: nothing to do"
            " (move it to PostgreSQL with --to URL)"
        )
    raw = pg.dial(url, root.journal_password())
    try:
        pg.migrate(raw)
        pg.check(raw, url, root_id=root.identity, root_path=str(root.path))
        return pg.version(raw)
    finally:
        raw.close()


def _tables(source: db.Database) -> list[str]:
    """The journal's tables, each after the tables its foreign keys name (so each row copied finds its parent)."""
    rows = source.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    parents = {
        str(row[0]): {str(key[2]) for key in source.execute(f"PRAGMA foreign_key_list({row[0]})")} for row in rows
    }
    ordered: list[str] = []
    while len(ordered) < len(parents):
        ready = [t for t in sorted(parents) if t not in ordered and parents[t] - {t} <= set(ordered)]
        if not ready:  # a cycle: never in this schema
            raise PolicyError(f"the journal's foreign keys form a cycle among {sorted(set(parents) - set(ordered))}")
        ordered.extend(ready)
    return ordered


def _columns(source: db.Database, table: str) -> list[str]:
    """The table's columns, with SQLite's implicit rowid where PostgreSQL keeps it (the order rows were written)."""
    columns = [str(row[1]) for row in source.execute(f"PRAGMA table_info({table})")]
    return [*columns, "rowid"] if table in pg.ROWID_TABLES else columns


def _count(raw: Any, table: str) -> int:
    return int(raw.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608 (a journal table's name)


def _copy(source: db.Database, raw: Any, table: str) -> None:
    columns = _columns(source, table)
    rows = source.execute(f"SELECT {', '.join(columns)} FROM {table}")  # noqa: S608 (a journal table's name)
    pg.copy_rows(raw, table, columns, rows)


def _digest(rows: Iterable[Any]) -> tuple[int, str]:
    """How many rows, and their digest: the sum of each row's SHA-256 (so neither engine's order matters)."""
    count, total = 0, 0
    for row in rows:
        values = [{"bytes": bytes(v).hex()} if isinstance(v, bytes | memoryview) else v for v in row]
        total = (total + int.from_bytes(hashlib.sha256(json.dumps(values).encode()).digest())) % _MODULUS
        count += 1
    return count, f"{total:064x}"


def _verify(source: db.Database, raw: Any, table: str, url: str) -> Table:
    columns = ", ".join(_columns(source, table))
    select = f"SELECT {columns} FROM {table}"  # noqa: S608 (a journal table's name)
    here, there = _digest(source.execute(select)), _digest(raw.execute(select))
    if here != there:
        raise PolicyError(
            f"the copy of table {table} into {url} does not match state/gateway.db ({here[0]} rows here, {there[0]}"
            " there, or the same count with other values): nothing was kept in PostgreSQL; the SQLite journal is"
            " still this root's"
        )
    return Table(table, *here)
