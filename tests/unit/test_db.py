"""The state database migrates an older root in place, keeping what it held."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.adapters.db import _MIGRATIONS, DATABASE, STATE, connect


def test_an_unversioned_database_is_migrated_and_pulls_gain_their_agency(tmp_path: Path) -> None:
    state = tmp_path / STATE
    state.mkdir(mode=0o700)
    old = sqlite3.connect(state / DATABASE)
    old.executescript(
        """
        CREATE TABLE officers (id TEXT PRIMARY KEY, agency TEXT NOT NULL, role TEXT NOT NULL, name TEXT NOT NULL,
            email TEXT NOT NULL, fingerprint TEXT NOT NULL UNIQUE, status TEXT NOT NULL,
            demo INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL, changed TEXT NOT NULL);
        CREATE TABLE submissions (id TEXT PRIMARY KEY, agency TEXT NOT NULL, name TEXT NOT NULL,
            sha256 TEXT NOT NULL, status TEXT NOT NULL, officer TEXT, marking TEXT, period TEXT, rows INTEGER,
            reason TEXT, created TEXT NOT NULL, updated TEXT NOT NULL);
        CREATE TABLE pulls (package TEXT NOT NULL, puller TEXT NOT NULL, pulled TEXT NOT NULL,
            PRIMARY KEY (package, puller));
        INSERT INTO officers VALUES ('yos-do', 'yos', 'DO', 'A', 'a@x', 'F', 'active', 0, 't', 't');
        INSERT INTO submissions VALUES ('s1', 'police', 'a.csv', 'h', 'delivered', 'police-do', 'M', '2026-10', 7,
            NULL, 't', 't');
        INSERT INTO pulls VALUES ('P1', 'yos-do', '2026-11-01T00:00:00+00:00');
        """
    )
    old.close()
    db = connect(tmp_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS)  # every migration
    assert tuple(db.execute("SELECT package, agency, puller FROM pulls").fetchone()) == ("P1", "yos", "yos-do")
    assert tuple(db.execute("SELECT status, attempts FROM submissions").fetchone()) == ("delivered", 0)
    db.close()
    again = connect(tmp_path)  # a second open changes nothing
    assert again.execute("SELECT COUNT(*) FROM pulls").fetchone()[0] == 1
