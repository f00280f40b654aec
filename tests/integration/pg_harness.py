"""A throw-away PostgreSQL cluster for the tests (issue 16): Debian's server binaries, `initdb` in a
temporary folder as an unprivileged user, one `postgres` on a free port on 127.0.0.1 only, SCRAM
passwords (no trust), stopped and removed after.

As root (CI), the cluster runs as `nobody`: PostgreSQL refuses to run as root, and a cluster owned by
an account that owns nothing else cannot touch the test's files. Otherwise it runs as the caller.
The password is made here, reaches initdb in a 0600 file that is removed at once, and reaches clients
in-process (`Cluster.connect`): never in an argv or an environment.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.integration.daemon_harness import cli
from tests.integration.sshd_harness import free_port

SERVER_PACKAGE = "postgresql"  # what scripts/test installs when no server binaries are found
USER = "iom"
DATABASE = "iom"
STARTUP_SECONDS = 30


def server_bin() -> Path:
    """The newest installed PostgreSQL server's bin folder (Debian keeps initdb off PATH)."""
    found = [Path(p).parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    if found:
        return max(found, key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0))
    initdb = shutil.which("initdb")
    if initdb is None:
        raise AssertionError(f"no PostgreSQL server (initdb) on this machine: install {SERVER_PACKAGE}")
    return Path(initdb).parent


@dataclass
class Cluster:
    """A running cluster: its folder, port, role and password (held in memory only)."""

    base: Path
    port: int
    password: str = field(repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    bin_dir: Path = field(default=Path(), repr=False)
    owner: tuple[int, int] | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Shut the server down (fast: clients are disconnected, as in a restart or a failover)."""
        _stop(self)

    def start(self) -> None:
        """Start the stopped server again on the same port, with the same data."""
        _start(self, self.bin_dir, self.base / "data", self.owner, create=False)

    @property
    def url(self) -> str:
        """What `[journal] url` would name: no password in it."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def connect(self, *, password: str | None = None, dbname: str = DATABASE) -> psycopg.Connection[tuple[object, ...]]:
        """A client connection over TCP with the cluster's password (or `password`, to try another)."""
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=USER,
            dbname=dbname,
            password=self.password if password is None else password,
            connect_timeout=10,
        )

    def database(self, name: str) -> str:
        """Make an empty database `name` owned by the cluster's role; return its URL (no password in it)."""
        with self.connect(dbname="postgres") as connection:
            connection.autocommit = True
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{name}"

    def log(self) -> str:
        path = self.base / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _owner() -> tuple[int, int] | None:
    """The account the cluster runs as when we are root (nobody), else None: ourselves."""
    if os.geteuid() != 0:
        return None
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid


def _as_owner(argv: list[str], owner: tuple[int, int] | None) -> list[str]:
    if owner is None:
        return argv
    uid, gid = owner
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]


def _initdb(base: Path, bin_dir: Path, password: str, owner: tuple[int, int] | None) -> Path:
    data = base / "data"
    secret = base / "pw"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    if owner is not None:
        os.chown(secret, *owner)
    try:
        subprocess.run(
            _as_owner(
                [
                    *(str(bin_dir / "initdb"), "-D", str(data), "-U", USER),
                    *("--auth=scram-sha-256", f"--pwfile={secret}", "-E", "UTF8", "--no-locale", "--no-sync"),
                ],
                owner,
            ),
            check=True,
            capture_output=True,
            timeout=120,
            cwd=base,
        )
    finally:
        secret.unlink(missing_ok=True)
    return data


def _start(cluster: Cluster, bin_dir: Path, data: Path, owner: tuple[int, int] | None, *, create: bool = True) -> None:
    sockets = cluster.base / "sockets"
    sockets.mkdir(mode=0o700, exist_ok=True)
    if owner is not None:
        os.chown(sockets, *owner)
    log = os.open(cluster.base / "server.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    if owner is not None:
        os.fchown(log, *owner)
    argv = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(cluster.port), "-c", "listen_addresses=127.0.0.1"]
    argv += ["-c", f"unix_socket_directories={sockets}"]
    try:
        cluster.process = subprocess.Popen(
            _as_owner(argv, owner), stdout=log, stderr=log, cwd=cluster.base, start_new_session=True
        )
    finally:
        os.close(log)
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            with cluster.connect(dbname="postgres") as connection:
                connection.autocommit = True
                if create:
                    connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
            return
        except psycopg.OperationalError:
            if cluster.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL did not start:\n{cluster.log()}") from None
            time.sleep(0.1)


def _stop(cluster: Cluster) -> None:
    """Fast shutdown (SIGINT: roll back, disconnect, checkpoint), then SIGKILL if it will not go."""
    process = cluster.process
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@contextmanager
def cluster() -> Iterator[Cluster]:
    """A fresh cluster with an empty database `iom` owned by role `iom`; removed when the block ends."""
    bin_dir = server_bin()
    owner = _owner()
    base = Path(tempfile.mkdtemp(prefix="iompg", dir="/tmp"))
    try:
        if owner is not None:
            os.chown(base, *owner)  # initdb makes data/ inside, as the owner; nobody else may enter
        running = Cluster(base, free_port(), secrets.token_urlsafe(24), bin_dir=bin_dir, owner=owner)
        data = _initdb(base, bin_dir, running.password, owner)
        try:
            _start(running, bin_dir, data, owner)
            yield running
        finally:
            _stop(running)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def move_journal(root: Path, server: Cluster) -> str:
    """Move the demo root `root`'s journal into a new database on `server` as an admin does: the password into
    the vault (`keys journal-password`), `journal migrate --to URL`, then [journal] url in gateway.toml; return
    the database's URL."""
    url = server.database(f"journal_{secrets.token_hex(6)}")
    secret = root.parent / "journal-password"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(server.password + "\n")
    try:
        assert cli(root, "keys", "journal-password", "--password-file", str(secret)) == 0
    finally:
        secret.unlink()
    assert cli(root, "journal", "migrate", "--to", url) == 0
    config = root / "gateway.toml"
    config.write_text(config.read_text(encoding="utf-8") + f'\n[journal]\nurl = "{url}"\n', encoding="utf-8")
    return url


def on_journal(journal: str, root: Path, request: pytest.FixtureRequest) -> Path:
    """`root`, with its journal moved to the test process's cluster (the `pg_server` fixture) when `journal` is
    "postgresql" (the `journal` fixture, tests/integration/conftest.py)."""
    if journal == "postgresql":
        move_journal(root, request.getfixturevalue("pg_server"))
    return root
