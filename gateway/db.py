"""The state database (SQLite now; the seam a PostgreSQL adapter would replace). The only user of sqlite3."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

STATE = "state"
DATABASE = "gateway.db"
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


def connect(root: Path) -> sqlite3.Connection:
    """Open (creating if needed) `root/state/gateway.db`: WAL, synchronous=FULL, private files."""
    folder = root / STATE
    folder.mkdir(mode=0o700, exist_ok=True)
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
    return connection
