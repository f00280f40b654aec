"""The state database: SQLite in `state/gateway.db` (the default), or PostgreSQL (gateway.adapters.pg) when
[journal] url names one. The only user of sqlite3.

The state modules see either engine as a `Database`: `execute` and `executemany` with `?` placeholders, rows
read by position or by column name, each statement committed at once outside `writing()`. Their SQL runs on
both (ON CONFLICT, RETURNING, no PRAGMA outside this module), and a constraint either engine refuses raises
one of `IntegrityError`.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from gateway.adapters import pg
from gateway.core.errors import ConfigError, StorageError


class Cursor(Protocol):
    """What the state modules read from a statement's result."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Database(Protocol):
    """A journal connection of either engine (sqlite3.Connection, pg.Connection)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...

    def close(self) -> None: ...


# a row a key, a CHECK or a NOT NULL refused, on either engine
IntegrityError: tuple[type[Exception], ...] = (sqlite3.IntegrityError, pg.IntegrityError)

STATE = "state"
DATABASE = "gateway.db"
MOVED = "journal-moved"  # `journal migrate --to` leaves the URL it moved the journal to here, beside the old one
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS officers (
        id TEXT PRIMARY KEY, agency TEXT NOT NULL, role TEXT NOT NULL CHECK (role IN ('DO', 'PDO')),
        name TEXT NOT NULL, email TEXT NOT NULL, fingerprint TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('active', 'revoked')), demo INTEGER NOT NULL DEFAULT 0,
        created TEXT NOT NULL, changed TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS officer_keys (
        fingerprint TEXT PRIMARY KEY, officer TEXT NOT NULL REFERENCES officers (id),
        added TEXT NOT NULL, retired TEXT)""",
    """CREATE TABLE IF NOT EXISTS submissions (
        id TEXT PRIMARY KEY, agency TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,
        status TEXT NOT NULL, officer TEXT, marking TEXT, period TEXT, rows INTEGER, reason TEXT,
        created TEXT NOT NULL, updated TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS submissions_by_content ON submissions (agency, sha256, status)",
    """CREATE TABLE IF NOT EXISTS deliveries (
        submission TEXT NOT NULL REFERENCES submissions (id), recipient TEXT NOT NULL,
        package TEXT NOT NULL, method TEXT NOT NULL, key_id TEXT NOT NULL, status TEXT NOT NULL,
        created TEXT NOT NULL, expires TEXT NOT NULL, PRIMARY KEY (submission, recipient))""",
    """CREATE TABLE IF NOT EXISTS gateway_keys (
        fingerprint TEXT PRIMARY KEY, created TEXT NOT NULL, expires TEXT,
        status TEXT NOT NULL CHECK (status IN ('current', 'retired')))""",
    """CREATE TABLE IF NOT EXISTS pulls (
        package TEXT NOT NULL, puller TEXT NOT NULL, pulled TEXT NOT NULL, PRIMARY KEY (package, puller))""",
)
# Each step moves the database one version up (PRAGMA user_version); none is ever edited once shipped.
_MIGRATIONS = (
    # 1: submissions and deliveries move through explicit states; audit events wait in an outbox
    # table in the same transaction as the state change that causes them (record, then act).
    (
        "ALTER TABLE submissions ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE submissions ADD COLUMN sealed_at TEXT",
        "ALTER TABLE submissions ADD COLUMN stage TEXT",
        "CREATE INDEX IF NOT EXISTS submissions_by_status ON submissions (status)",
        "CREATE INDEX IF NOT EXISTS deliveries_by_status ON deliveries (status, expires)",
        """CREATE TABLE IF NOT EXISTS audit_outbox (
            ref TEXT PRIMARY KEY, entry TEXT NOT NULL, created TEXT NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS quarantine (
            file TEXT PRIMARY KEY, agency TEXT NOT NULL, submission TEXT NOT NULL, key TEXT NOT NULL,
            created TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'kept')""",
        """CREATE TABLE IF NOT EXISTS runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT, mode TEXT NOT NULL, pid INTEGER NOT NULL,
            started TEXT NOT NULL, heartbeat TEXT NOT NULL, finished TEXT, processed INTEGER NOT NULL DEFAULT 0,
            errors INTEGER NOT NULL DEFAULT 0)""",
    ),
    # 2: every recipient of a submission gets a package of the same name: a pull belongs to an agency
    (
        "ALTER TABLE pulls RENAME TO pulls_v1",
        """CREATE TABLE pulls (
            package TEXT NOT NULL, agency TEXT NOT NULL, puller TEXT NOT NULL, pulled TEXT NOT NULL,
            PRIMARY KEY (package, agency, puller))""",
        """INSERT INTO pulls (package, agency, puller, pulled) SELECT p.package,
            COALESCE((SELECT o.agency FROM officers o WHERE o.id = p.puller), ''), p.puller, p.pulled
            FROM pulls_v1 p""",
        "DROP TABLE pulls_v1",
    ),
    # 3: which gateway key signed each package (a retired key is kept while its packages live), and
    # until when an officer's replaced key is still accepted for submissions (a rekey's grace period)
    (
        "ALTER TABLE deliveries ADD COLUMN signed_by TEXT",
        "ALTER TABLE officer_keys ADD COLUMN accepted_until TEXT",
        # a package being re-encrypted: its new files wait under .NAME.repack until all are written
        """CREATE TABLE IF NOT EXISTS repacks (
            submission TEXT NOT NULL, recipient TEXT NOT NULL, key_id TEXT NOT NULL, signed_by TEXT NOT NULL,
            files TEXT NOT NULL, PRIMARY KEY (submission, recipient))""",
    ),
    # 4: a delivery that cannot be made yet (its recipient has no active officer or no current
    # password) waits as 'deferred', with why; the submission stays in its outbox until it is made
    ("ALTER TABLE deliveries ADD COLUMN reason TEXT",),
    # 5: each officer's SSH public key (the bare `type base64` line) and its SHA256 fingerprint, for
    # SFTP; no two active officers share one, since a key would then open both their accounts
    (
        "ALTER TABLE officers ADD COLUMN ssh_key TEXT",
        "ALTER TABLE officers ADD COLUMN ssh_fingerprint TEXT",
        "CREATE UNIQUE INDEX officers_by_ssh_key ON officers (ssh_fingerprint) WHERE status = 'active'",
    ),
    # 6: the system accounts `access sync` made for officers (by name and uid), so it never takes over
    # an account it did not make, and locks its own when their officer is revoked
    (
        """CREATE TABLE accounts (
            name TEXT PRIMARY KEY, uid INTEGER NOT NULL, officer TEXT NOT NULL, agency TEXT NOT NULL,
            created TEXT NOT NULL, changed TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('open', 'locked')))""",
    ),
    # 7: who received each package (a checked, signed receipt): the disclosure register's "received by"
    (
        """CREATE TABLE receipts (
            package TEXT NOT NULL, agency TEXT NOT NULL, fingerprint TEXT NOT NULL, officer TEXT,
            received TEXT NOT NULL, recorded TEXT NOT NULL, PRIMARY KEY (package, agency, fingerprint))""",
    ),
    # 8: the password each officer logs in to the SMTP intake with, as an scrypt hash (never the password)
    (
        """CREATE TABLE officer_logins (
            officer TEXT PRIMARY KEY REFERENCES officers (id), hash TEXT NOT NULL, changed TEXT NOT NULL)""",
    ),
    # 9: messages to send through [smtp.relay] (packages by e-mail, notices), queued with the state change
    # that causes them, each sent exactly once: queued -> sent, or gave_up
    (
        """CREATE TABLE mail_out (
            id TEXT PRIMARY KEY, kind TEXT NOT NULL, address TEXT NOT NULL, officer TEXT, agency TEXT,
            package TEXT, sender TEXT, period TEXT, subject TEXT NOT NULL, body TEXT NOT NULL,
            attachment TEXT, status TEXT NOT NULL DEFAULT 'queued', attempts INTEGER NOT NULL DEFAULT 0,
            created TEXT NOT NULL, due TEXT NOT NULL, sent TEXT, error TEXT)""",
        "CREATE INDEX mail_out_by_status ON mail_out (status, due)",
    ),
    # 10: what validation counted in each submission, for the quality scorecard: numbers by column and
    # rule (JSON objects of counts), never a value
    (
        """CREATE TABLE quality (
            submission TEXT PRIMARY KEY, agency TEXT NOT NULL, period TEXT NOT NULL, received TEXT NOT NULL,
            rows INTEGER NOT NULL, bad_rows INTEGER NOT NULL, valid INTEGER NOT NULL, filled TEXT NOT NULL,
            errors TEXT NOT NULL, rule_rows TEXT NOT NULL, column_errors TEXT NOT NULL, corrects TEXT)""",
        "CREATE INDEX quality_by_period ON quality (period, agency)",
    ),
    # 11: the register of information requests between Designated Officers (Warwickshire 2.3.3): ids,
    # agencies, officers, dates and outcome only; the text is in state/requests/ID.gpg, encrypted, until
    # purge deletes it with the audit entries of the request's answer (text_purged: when)
    (
        """CREATE TABLE requests (
            id TEXT PRIMARY KEY, from_agency TEXT NOT NULL, from_officer TEXT NOT NULL, to_agency TEXT NOT NULL,
            received TEXT NOT NULL, due TEXT NOT NULL, urgent INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('open', 'answered', 'refused')),
            answered_by TEXT, answered_at TEXT, submission TEXT, package TEXT, key TEXT NOT NULL,
            text_purged TEXT)""",
        "CREATE INDEX requests_by_status ON requests (status, due)",
    ),
    # 12: the subject access index: the first 16 bytes of HMAC-SHA-256 digests (under the SAR key in the
    # vault) of who was in each delivered submission, each under a small reference to the submission and
    # the key it was made under; nothing else about anyone. Digests are random, so their B-tree takes
    # every insert at a random page: short rows (16 bytes and an integer, no index by submission) are
    # what keeps a large file's index fast to write and the database small
    (
        """CREATE TABLE sar_submissions (
            ref INTEGER PRIMARY KEY, submission TEXT NOT NULL, key_id TEXT NOT NULL, UNIQUE (submission, key_id))""",
        """CREATE TABLE sar_index (
            digest BLOB NOT NULL, ref INTEGER NOT NULL, PRIMARY KEY (digest, ref)) WITHOUT ROWID""",
    ),
    # 13: who holds each submission, on the PostgreSQL journal, where nodes on many hosts share a root: the
    # holder (host:pid), until when its lease runs, and the fencing number every later write of its must show.
    # SQLite's claims are byte-range locks on state/claims.lock (one host; the kernel drops a dead process's),
    # so this table stays empty there: it is in both schemas so that the two stay one
    (
        """CREATE TABLE claims (
            submission TEXT PRIMARY KEY, fence INTEGER NOT NULL, node TEXT NOT NULL, until TEXT NOT NULL)""",
    ),
)


def connect(root: Path) -> sqlite3.Connection:
    """Open (creating if needed) `root/state/gateway.db`: WAL, synchronous=FULL, private files. Raises ConfigError
    if the journal was moved to PostgreSQL."""
    folder = root / STATE
    folder.mkdir(mode=0o700, exist_ok=True)
    moved = folder / MOVED
    if moved.is_file():  # the journal lives on in PostgreSQL: this copy is history, and must not take new work
        where = moved.read_text(encoding="utf-8", errors="replace").strip()
        raise ConfigError(
            f"this root's journal moved to {where} (`iom-gateway journal migrate`): set [journal] url = {where!r}"
            f" in gateway.toml (state/{DATABASE} is kept as it was at the move, and is not used again)"
        )
    path = folder / DATABASE
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    for statement in _SCHEMA:
        connection.execute(statement)
    _migrate(connection)
    return connection


def _migrate(connection: sqlite3.Connection) -> None:
    """Bring an older database up to date, one version per transaction."""
    while (version := int(connection.execute("PRAGMA user_version").fetchone()[0])) < len(_MIGRATIONS):
        with connection:
            connection.execute("BEGIN IMMEDIATE")
            if int(connection.execute("PRAGMA user_version").fetchone()[0]) != version:
                continue  # another process migrated meanwhile
            for statement in _MIGRATIONS[version]:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {version + 1:d}")


@contextmanager
def writing(connection: Database, *, durable: bool = True, serial: bool = True) -> Iterator[Database]:
    """One write transaction, begun by taking the database's write lock (BEGIN IMMEDIATE: a read-then-write
    in it is safe across processes), committed when the block ends, rolled back if it raises. With
    `durable=False` its commit does not sync the WAL (state.journal's "Durability" says which may).

    The one place a write transaction begins, so that another engine's adapter has one thing to mean by
    it. Raises StorageError if the database cannot be written (a full disk, a lock held too long).
    """
    if isinstance(connection, pg.Connection):  # serial=False: the claims, which lock their own rows
        with connection.transaction(durable=durable, serial=serial) as db:
            yield db
        return
    assert isinstance(connection, sqlite3.Connection)  # noqa: S101 (the two engines)
    try:
        if not durable:
            connection.execute("PRAGMA synchronous=NORMAL")
        try:
            with connection:
                connection.execute("BEGIN IMMEDIATE")
                yield connection
        finally:
            if not durable:
                connection.execute("PRAGMA synchronous=FULL")
    except sqlite3.OperationalError as exc:
        raise StorageError(
            f"the journal cannot be written ({exc}): free disk space in state/; nothing was lost"
        ) from exc
