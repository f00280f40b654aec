"""The PostgreSQL test cluster itself (issue 16's tests stand on it): a real server on 127.0.0.1 that
takes the made password and refuses any other, runs as an account that is not root, keeps data through
a transaction, and leaves no process, port or folder behind."""

from __future__ import annotations

import os
import socket

import psycopg
import pytest

from tests.integration.pg_harness import DATABASE, USER, cluster


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_throwaway_cluster_takes_its_password_refuses_others_and_leaves_nothing_behind() -> None:
    with cluster() as running:
        assert running.password not in running.url and running.password not in repr(running)
        with running.connect() as connection:
            version = connection.execute("SHOW server_version_num").fetchone()
            user, database = connection.execute("SELECT current_user, current_database()").fetchone() or ("", "")
            assert version is not None and int(str(version[0])) >= 130000
            assert (user, database) == (USER, DATABASE)
            connection.execute("CREATE TABLE t (id integer PRIMARY KEY, v text NOT NULL)")
            connection.execute("INSERT INTO t VALUES (%s, %s)", (1, "kept"))
        with running.connect() as again:
            assert again.execute("SELECT v FROM t WHERE id = %s", (1,)).fetchone() == ("kept",)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            running.connect(password="not-" + running.password).close()
        data = running.base / "data"
        if os.geteuid() == 0:
            assert data.stat().st_uid != 0  # PostgreSQL never runs as root: here, as nobody
        assert data.stat().st_mode & 0o077 == 0
        assert not (running.base / "pw").exists()  # the password file went once initdb had read it
        process, port, base = running.process, running.port, running.base
        assert process is not None and _listening(port)
    assert process.poll() is not None
    assert not _listening(port) and not base.exists()
