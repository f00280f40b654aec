"""The state modules' own tests, run on PostgreSQL (issue 16, item 1: the same tests against both backends):
each test imported here runs as in tests/unit/, with `db` a PostgreSQL journal made by the migrations on a
throw-away cluster instead of an SQLite one."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.adapters import pg
from gateway.core.errors import Claimed, ClaimLost
from gateway.core.secret import Secret
from gateway.state.journal import DUTY_CHECKPOINT, DUTY_METRICS, Journal
from tests.integration.pg_harness import Cluster, cluster
from tests.unit.test_sar_index import (  # noqa: F401 (collected here, with this module's `db`)
    test_a_file_larger_than_a_batch_is_indexed_whole_and_once,
    test_purge_drops_submissions_past_retention_with_nothing_live_and_entries_of_old_keys,
)


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    with cluster() as running:
        yield running


@pytest.fixture
def db(server: Cluster) -> Iterator[pg.Connection]:
    """A new PostgreSQL journal for each test, made by the migrations as a node's first connection makes it."""
    url = server.database(f"journal_{secrets.token_hex(4)}")
    connection = pg.connect(url, Secret(server.password), root_id=secrets.token_hex(16), root_path="test")
    yield connection
    connection.close()


# ----------------------------------------------------------------------------------------- claims and duties


def _journal(url: str, server: Cluster, root_id: str, lease: int = 5) -> Journal:
    """A Journal of its own (another process's view: its own connection) on the database at `url`."""
    journal = Journal(
        pg.connect(url, Secret(server.password), root_id=root_id, root_path="test"),
        claims=Path("/nonexistent/claims.lock"),  # never used on PostgreSQL
        lease_seconds=lease,
    )
    journal.claiming = True
    return journal


@pytest.fixture
def two(server: Cluster) -> Iterator[tuple[Journal, Journal]]:
    """Two processes' journals on one new database."""
    url, root_id = server.database(f"claims_{secrets.token_hex(4)}"), secrets.token_hex(16)
    first, second = _journal(url, server, root_id), _journal(url, server, root_id)
    yield first, second
    for journal in (first, second):
        journal.unclaim()
        journal.db.close()


SEALED = {"officer": "police-do", "marking": "PROTECT", "period": "2026-10", "rows": 7, "sealed_at": "2026-11-01"}


def _as_another_process(journal: Journal) -> None:
    """Make `journal`'s claims name another holder than this test process (claims name host:pid)."""
    journal.db.execute("UPDATE claims SET node = 'elsewhere:1' WHERE node != ''")


def test_a_submission_claimed_by_a_live_process_is_skipped_not_waited_for(two: tuple[Journal, Journal]) -> None:
    first, second = two
    first.claim("s1")
    _as_another_process(first)
    with pytest.raises(Claimed, match="being processed by elsewhere:1"):
        second.claim("s1")
    assert not second.try_claim("s1")
    second.claim("s2")  # any other is free


def test_a_lapsed_claim_is_taken_over_and_its_old_holder_writes_nothing_more(two: tuple[Journal, Journal]) -> None:
    first, second = two
    first.begin("s1", "police", "a.csv", "0" * 64)
    _as_another_process(first)
    first._lease._stop.set()  # type: ignore[union-attr]  # as if its process stopped: no renewal
    first.db.execute("UPDATE claims SET until = '2000-01-01T00:00:00.000+00:00'")  # and its lease ran out
    record = second.begin("s1", "police", "a.csv", "0" * 64)
    assert record.attempts == 2  # the first attempt counts, as a crash would
    fences = second.db.execute("SELECT fence FROM claims").fetchall()
    assert len(fences) == 1 and fences[0][0] == second._lease.fence > first._lease.fence  # type: ignore[union-attr]
    with pytest.raises(ClaimLost, match="taken over by another node"):
        first.sealing("s1", **SEALED)
    with pytest.raises(ClaimLost):
        first.release("s1")
    assert second.submission("s1").status == "received"  # type: ignore[union-attr]  # nothing of the first's
    second.sealing("s1", **SEALED)  # the holder writes on
    assert second.submission("s1").status == "sealing"  # type: ignore[union-attr]


def test_a_claim_is_renewed_while_held_and_released_after(two: tuple[Journal, Journal], server: Cluster) -> None:
    first, _ = two
    first.lease_seconds = 3
    first.claim("s1")
    before = first.db.execute("SELECT until FROM claims").fetchone()[0]
    time.sleep(2.5)  # past a third of the lease, twice
    assert first.db.execute("SELECT until FROM claims").fetchone()[0] > before
    first.unclaim()
    assert first.db.execute("SELECT node, until FROM claims").fetchone() == ("", "")


def test_a_duty_is_held_by_one_session_and_handed_over_when_it_ends(two: tuple[Journal, Journal]) -> None:
    first, second = two
    assert first.duty(DUTY_METRICS) and first.duty(DUTY_METRICS)  # held, and still held
    assert not second.duty(DUTY_METRICS)
    assert second.duty(DUTY_CHECKPOINT)  # another duty is another lock
    first.db.close()  # its node dies: the server ends the session, and its locks (a moment later)
    deadline = time.monotonic() + 10
    while not second.duty(DUTY_METRICS):
        assert time.monotonic() < deadline, "the duty was never handed over"
        time.sleep(0.05)
