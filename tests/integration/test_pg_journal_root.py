"""A root on the PostgreSQL journal (issue 16, item 1): `journal migrate --to` moves the SQLite journal whole and
verified; the gateway refuses a server it must not use (unreachable, the wrong password, another schema version,
another root's journal, a database that is not a journal) with the reason and the fix, and no traceback; the
password is never in gateway.toml, an argv or an environment; a server lost mid-run stops the node taking work
until it is back, and nothing is left half-written."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from gateway.adapters import pg
from tests.conftest import REPO
from tests.integration.daemon_harness import (
    GOOD,
    ROUTE,
    Daemon,
    audit_entries,
    cli,
    cli_output,
    copy_of,
    drop,
    journal_rows,
    outbox_clear,
    packages,
    run_once_process,
    temp_files,
    wait_until,
)
from tests.integration.pg_harness import Cluster, cluster, move_journal
from tests.integration.sshd_harness import free_port

# every table of the journal, as `journal migrate --to` counts them
TABLES = 19


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    """A cluster of the module's own: one test stops and starts it."""
    with cluster() as running:
        yield running


@pytest.fixture
def sqlite_root(routed_root: Path) -> Path:
    return routed_root


@pytest.fixture
def root(routed_root: Path, server: Cluster) -> Path:
    """A routed demo root whose journal was moved to its own database on the module's cluster."""
    move_journal(routed_root, server)
    return routed_root


def _url(root: Path) -> str:
    return (root / "state" / "journal-moved").read_text().strip()


def _raw(server: Cluster, url: str) -> psycopg.Connection[tuple[object, ...]]:
    return server.connect(dbname=url.rsplit("/", 1)[1])


def _config(root: Path, url: str) -> None:
    path = root / "gateway.toml"
    text = path.read_text()
    text = text[: text.index("\n[journal]")] if "\n[journal]" in text else text
    path.write_text(text + f'\n[journal]\nurl = "{url}"\n')


def _store_password(root: Path, password: str, folder: Path) -> None:
    """`keys journal-password` with `password`, from a 0600 file in `folder`."""
    assert cli(root, "keys", "journal-password", "--password-file", str(_password_file(folder / "pw", password))) == 0


def _password_file(path: Path, value: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return path


# ----------------------------------------------------------------------------------------- journal migrate --to


def test_migrate_moves_every_table_verified_and_the_root_works_on_postgresql(
    sqlite_root: Path, server: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    drop(sqlite_root, "police", GOOD, GOOD.name, "police-do")
    assert cli(sqlite_root, "run", "--once") == 0
    before = {
        table: journal_rows(sqlite_root, f"SELECT COUNT(*) FROM {table}")[0][0]  # noqa: S608 (the test's own)
        for table in ("submissions", "deliveries", "officers", "officer_keys", "gateway_keys", "sar_index", "quality")
    }
    _store_password(sqlite_root, server.password, tmp_path)
    url = server.database(f"moved_{secrets.token_hex(4)}")
    code, out = cli_output(sqlite_root, capsys, "journal", "migrate", "--to", url)
    assert code == 0, out
    assert f"in {TABLES} tables to {url}; every table verified" in out
    assert f'now set [journal] url = "{url}"' in out
    assert server.password not in out
    assert _url(sqlite_root) == url
    # until gateway.toml names it, the root refuses to use the journal it moved away from
    code = cli(sqlite_root, "status")
    assert code == 1
    assert "moved to" in capsys.readouterr().err
    _config(sqlite_root, url)
    with _raw(server, url) as raw:
        for table, count in before.items():
            assert raw.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (count,), table  # noqa: S608
        assert count and before["submissions"] == 1 and before["deliveries"] == len(ROUTE)
    # the moved journal remembers: the same bytes again, under another name, are not delivered twice
    drop(sqlite_root, "police", GOOD, "again-2026-10.csv", "police-do")
    assert cli(sqlite_root, "run", "--once") == 0
    assert len(packages(sqlite_root, "probation")) == 1
    assert cli(sqlite_root, "audit", "verify") == 0
    events = [e["event"] for e in audit_entries(sqlite_root)]
    assert "journal.moved" in events and "journal.password_set" in events
    assert not any(server.password in line for line in (sqlite_root / "state" / "audit.jsonl").read_text().splitlines())
    assert journal_rows(sqlite_root, "SELECT COUNT(*) FROM submissions") == [(1,)]  # the same bytes: one submission


def test_migrate_into_a_database_that_holds_rows_is_refused_and_copies_nothing(
    sqlite_root: Path, server: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    other = sqlite_root.parent / "other"
    shutil.copytree(sqlite_root, other, symlinks=True, ignore=shutil.ignore_patterns("S.gpg-agent*"))
    url = move_journal(other, server)  # another copy of the root, already there: its rows
    (sqlite_root / "state" / "root-id").write_text((other / "state" / "root-id").read_text())
    _store_password(sqlite_root, server.password, tmp_path)
    capsys.readouterr()
    assert cli(sqlite_root, "journal", "migrate", "--to", url) == 1
    err = capsys.readouterr().err
    assert "already holds rows" in err and "nothing was copied" in err and "Traceback" not in err
    assert not (sqlite_root / "state" / "journal-moved").exists()
    assert cli(sqlite_root, "status") in (0, 1)  # the SQLite journal is still the root's


@pytest.mark.parametrize(
    ("to", "says"),
    [
        ("postgresql://iom:secret-in-argv@127.0.0.1:5432/iom", "--to holds a password"),
        ("mysql://iom@127.0.0.1/iom", "--to must be"),
    ],
)
def test_migrate_to_a_url_with_a_password_or_not_postgresql_is_a_usage_error(
    sqlite_root: Path, capsys: pytest.CaptureFixture[str], to: str, says: str
) -> None:
    capsys.readouterr()
    assert cli(sqlite_root, "journal", "migrate", "--to", to) == 2
    err = capsys.readouterr().err
    assert says in err and "secret-in-argv" not in err


def test_migrate_is_refused_while_a_daemon_works_on_the_root(
    sqlite_root: Path, server: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = Daemon(sqlite_root).ready()
    try:
        capsys.readouterr()
        assert cli(sqlite_root, "journal", "migrate", "--to", server.database(f"busy_{secrets.token_hex(4)}")) == 1
        assert "already working on" in capsys.readouterr().err
    finally:
        assert daemon.stop() == 0
    assert not (sqlite_root / "state" / "journal-moved").exists()


def test_a_root_already_on_postgresql_is_told_to_migrate_without_to(
    root: Path, server: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert cli(root, "journal", "migrate", "--to", server.database(f"again_{secrets.token_hex(4)}")) == 2
    assert "already in PostgreSQL" in capsys.readouterr().err
    code, out = cli_output(root, capsys, "journal", "migrate")
    assert code == 0 and f"schema version {pg.NEWEST}" in out


# ----------------------------------------------------------------------------------------- refusals at start


def _refused(root: Path, *needles: str) -> str:
    """`run --once` and the daemon both refuse to start, exit 1, saying each of `needles`, with no traceback."""
    once = run_once_process(root)
    assert once.returncode == 1, once.stderr
    daemon = Daemon(root)
    assert daemon.exited(timeout=60) == 1
    for text in (once.stderr, daemon.text()):
        assert "Traceback" not in text, text
        for needle in needles:
            assert needle in text, text
    return once.stderr


def test_an_unreachable_server_is_refused_with_the_fix(root: Path) -> None:
    _config(root, f"postgresql://iom@127.0.0.1:{_closed_port()}/iom")
    _refused(root, "cannot be reached", "check that the server runs")


def _closed_port() -> int:
    return free_port()


def test_a_wrong_password_is_refused_and_never_shown(root: Path, server: Cluster, tmp_path: Path) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    _store_password(root, wrong, tmp_path)
    text = _refused(root, "password authentication failed", "keys journal-password")
    assert wrong not in text and server.password not in text


@pytest.mark.parametrize(
    ("version", "says"),
    [(pg.NEWEST - 1, "run `iom-gateway journal migrate`"), (pg.NEWEST + 1, "upgrade iom-gateway on this node")],
)
def test_a_journal_at_another_schema_version_is_refused_with_the_fix(
    root: Path, server: Cluster, version: int, says: str
) -> None:
    with _raw(server, _url(root)) as raw:
        raw.execute("UPDATE journal_meta SET value = %s WHERE key = 'version'", (str(version),))
    _refused(root, f"at schema version {version}", says)


def test_two_roots_pointing_at_one_database_the_second_is_refused(root: Path, routed_template: Path) -> None:
    with copy_of(routed_template) as other:
        _config(other, _url(root))
        shutil.copy(root / "keys" / "vault.json", other / "keys" / "vault.json")  # the password, not the identity
        _refused(other, "belongs to another gateway root", str(root), "give this root a database of its own")
    assert run_once_process(root).returncode == 0  # the first is untouched


def test_a_database_that_is_not_a_journal_is_refused(root: Path, server: Cluster) -> None:
    url = server.database(f"theirs_{secrets.token_hex(4)}")
    with _raw(server, url) as raw:
        raw.execute("CREATE TABLE patients (id INTEGER)")
        raw.commit()
    _config(root, url)
    _refused(root, "holds tables that are not a gateway journal (patients)")


def test_the_password_is_in_no_argv_or_environment_of_the_daemon_or_its_workers(root: Path, server: Cluster) -> None:
    assert server.password not in (root / "gateway.toml").read_text()
    daemon = Daemon(root).ready()
    try:
        drop(root, "police", GOOD, GOOD.name, "police-do")
        wait_until(lambda: outbox_clear(root, "police"), 60, "the delivery")
        pids = [daemon.process.pid, *_children(daemon.process.pid)]
        assert len(pids) > 1  # the workers
        for pid in pids:
            for name in ("cmdline", "environ"):
                assert server.password.encode() not in Path(f"/proc/{pid}/{name}").read_bytes(), (pid, name)
    finally:
        assert daemon.stop() == 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


# ----------------------------------------------------------------------------------------- the server lost mid-run


@pytest.mark.slow
def test_a_server_lost_mid_run_stops_the_node_taking_work_until_it_is_back(root: Path, server: Cluster) -> None:
    daemon = Daemon(root).ready()
    try:
        server.stop()
        drop(root, "police", GOOD, GOOD.name, "police-do")
        daemon.wait_log("journal unreachable", timeout=60)
        assert daemon.process.poll() is None  # the node waits; it does not exit
        assert not outbox_clear(root, "police")  # and takes no work meanwhile
        assert not packages(root, "probation")
        server.start()
        daemon.wait_log("journal reachable again", timeout=120)
        wait_until(lambda: outbox_clear(root, "police"), 120, "the delivery once the journal is back")
    finally:
        assert daemon.stop(timeout=30) == 0, daemon.text()
    assert "Traceback" not in daemon.text(), daemon.text()
    assert [len(packages(root, agency)) for agency in ROUTE] == [1] * len(ROUTE)
    assert journal_rows(root, "SELECT status FROM submissions") == [("done",)]
    assert not temp_files(root)
    assert cli(root, "audit", "verify") == 0


def test_a_systemd_credential_gives_the_password_before_the_vault(root: Path, server: Cluster, tmp_path: Path) -> None:
    _store_password(root, "not-the-password", tmp_path)  # the vault's is wrong now
    assert run_once_process(root).returncode == 1
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    _password_file(credentials / "journal-password", server.password)
    once = subprocess.run(
        [sys.executable, "-m", "gateway", "--root", str(root), "run", "--once"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)},
        timeout=120,
        check=False,
    )
    assert once.returncode == 0, once.stderr
