"""The journal's PostgreSQL schema agrees with the SQLite one (issue 16, item 1: one set of migrations per
backend, the same states): against a real server, every table has the same columns in the same order, the
same NOT NULLs, defaults, primary and unique keys, checks and indexes, in the mapped types; the two lists of
steps end at the same version; migrating twice, or from two connections at once, changes nothing."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gateway.adapters import db, pg
from tests.integration.pg_harness import Cluster, cluster

TYPES = {"TEXT": "text", "INTEGER": "bigint", "BLOB": "bytea"}
Columns = dict[str, list[tuple[str, str, bool, str | None]]]  # table -> (name, type, NOT NULL, default)


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    with cluster() as running:
        yield running


@pytest.fixture
def migrated(server: Cluster) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with server.connect() as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")
        connection.commit()
        assert pg.migrate(connection) == pg.NEWEST
        yield connection


def _sqlite(tmp_path: Path) -> sqlite3.Connection:
    connection = db.connect(tmp_path)
    connection.row_factory = None
    return connection


def _sqlite_tables(connection: sqlite3.Connection) -> Columns:
    """Each table's columns: (name, mapped type, NOT NULL, default)."""
    names = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    tables = {}
    for name in names:
        if name.startswith("sqlite_"):
            continue
        columns = connection.execute(f"PRAGMA table_info({name})").fetchall()
        tables[name] = [
            (column, TYPES[kind], bool(notnull) or bool(pk and kind != "INTEGER"), _default(default))
            for _, column, kind, notnull, default, pk in columns
        ]
    return tables


def _default(value: object) -> str | None:
    return None if value is None else str(value).strip("'")


def _pg_tables(connection: psycopg.Connection[tuple[object, ...]]) -> Columns:
    rows = connection.execute(
        "SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity"
        " FROM information_schema.columns WHERE table_schema = 'public' AND table_name != 'journal_meta'"
        " ORDER BY table_name, ordinal_position"
    ).fetchall()
    tables: Columns = {}
    for table, column, kind, nullable, default, identity in rows:
        text = None if default is None else re.sub(r"::[a-z ]+$", "", str(default)).strip("'")
        # an identity column is SQLite's INTEGER PRIMARY KEY, which may be given NULL to take the next number
        tables.setdefault(str(table), []).append((str(column), str(kind), nullable == "NO" and identity != "YES", text))
    for table in pg.ROWID_TABLES:  # SQLite's implicit rowid, a column of that name here
        assert tables[table][-1] == ("rowid", "bigint", False, None)
        del tables[table][-1]
    return tables


def test_both_lists_of_steps_end_at_the_same_version() -> None:
    assert pg.STEPS[-1][0] == len(db._MIGRATIONS) == pg.NEWEST
    assert pg.STEPS[0][0] == pg.SQLITE_VERSION  # a journal moved from SQLite's version 12 or later


def test_every_table_has_the_same_columns_types_nulls_and_defaults(
    migrated: psycopg.Connection[tuple[object, ...]], tmp_path: Path
) -> None:
    assert _pg_tables(migrated) == _sqlite_tables(_sqlite(tmp_path))


def _sqlite_keys(connection: sqlite3.Connection) -> set[tuple[str, str, tuple[str, ...]]]:
    """(table, primary | unique | index:NAME, columns) for every key and index."""
    found = set()
    tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        if table.startswith("sqlite_"):
            continue
        info = connection.execute(f"PRAGMA table_info({table})").fetchall()
        primary = tuple(c[1] for c in sorted(info, key=lambda c: c[5]) if c[5])
        found.add((table, "primary", primary))
        for _, name, unique, origin, _partial in connection.execute(f"PRAGMA index_list({table})"):
            columns = tuple(r[2] for r in connection.execute(f"PRAGMA index_info({name})"))
            if origin == "pk":
                continue
            found.add((table, "unique" if origin == "u" else f"index:{name}{':unique' if unique else ''}", columns))
    return found


def _pg_keys(connection: psycopg.Connection[tuple[object, ...]]) -> set[tuple[str, str, tuple[str, ...]]]:
    rows = connection.execute(
        "SELECT t.relname, i.relname, x.indisprimary, x.indisunique,"
        " EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid AND c.contype = 'u'),"
        " ARRAY(SELECT a.attname FROM unnest(x.indkey) WITH ORDINALITY k(n, o)"
        "       JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.n ORDER BY k.o)"
        " FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid"
        " JOIN pg_namespace s ON s.oid = t.relnamespace WHERE s.nspname = 'public' AND t.relname != 'journal_meta'"
    ).fetchall()
    found = set()
    for table, name, primary, unique, constraint, columns in rows:
        kind = "primary" if primary else "unique" if constraint else f"index:{name}{':unique' if unique else ''}"
        found.add((str(table), kind, tuple(str(c) for c in columns)))  # type: ignore[attr-defined]
    return found


def test_every_table_has_the_same_keys_and_indexes(
    migrated: psycopg.Connection[tuple[object, ...]], tmp_path: Path
) -> None:
    assert _pg_keys(migrated) == _sqlite_keys(_sqlite(tmp_path))


@pytest.mark.parametrize(
    ("table", "columns", "values"),
    [
        ("officers", "id, agency, role, name, email, fingerprint, status, created, changed",
         ("o", "police", "BOSS", "n", "e", "f", "active", "t", "t")),
        ("gateway_keys", "fingerprint, created, status", ("f", "t", "lost")),
        ("accounts", "name, uid, officer, agency, created, changed, status", ("a", 1, "o", "police", "t", "t", "x")),
        ("requests", "id, from_agency, from_officer, to_agency, received, due, urgent, status, key",
         ("r", "a", "o", "b", "t", "d", 0, "closed", "k")),
    ],
)  # fmt: skip
def test_a_value_a_check_refuses_in_sqlite_is_refused_in_postgresql_too(
    migrated: psycopg.Connection[tuple[object, ...]],
    tmp_path: Path,
    table: str,
    columns: str,
    values: tuple[object, ...],
) -> None:
    lite = _sqlite(tmp_path)
    marks = ", ".join("?" * len(values))
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        lite.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", values)  # noqa: S608 (the test's own)
    with pytest.raises(psycopg.errors.CheckViolation):
        statement = f"INSERT INTO {table} ({columns}) VALUES ({marks.replace('?', '%s')})"  # noqa: S608 (the test's own)
        migrated.execute(statement, values)  # type: ignore[arg-type]
    migrated.rollback()


def test_migrating_again_or_from_two_connections_at_once_changes_nothing(server: Cluster, tmp_path: Path) -> None:
    with server.connect() as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")
        connection.commit()
    versions: list[int] = []

    def migrate() -> None:
        with server.connect() as connection:
            versions.append(pg.migrate(connection))

    workers = [threading.Thread(target=migrate) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    with server.connect() as connection:
        assert pg.migrate(connection) == pg.NEWEST
        (tables,) = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone() or (0,)
    assert versions == [pg.NEWEST, pg.NEWEST]
    assert tables == len(_sqlite_tables(_sqlite(tmp_path))) + 1  # the journal's tables and journal_meta
