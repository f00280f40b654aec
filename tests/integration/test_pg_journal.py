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
from gateway.adapters.store import FENCES, PackageStore
from gateway.core.errors import Claimed, ClaimLost
from gateway.core.secret import Secret
from gateway.state.journal import DUTY_CHECKPOINT, DUTY_METRICS, Journal
from tests.integration.pg_harness import Cluster, cluster
from tests.unit.test_sar_index import (  # noqa: F401 (collected here, with this module's `db`)
    test_a_file_larger_than_a_batch_is_indexed_whole_and_once,
    test_purge_drops_submissions_past_retention_with_nothing_live_and_entries_of_old_keys,
)

ROUTES = {"police": ["probation", "housing"]}  # a claim on a police file has a fence folder in each inbox


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


def _journal(url: str, server: Cluster, root_id: str, root: Path, lease: int = 5) -> Journal:
    """A Journal of its own (another process's view: its own connection and package store) on the database at
    `url`, for the root folder `root`."""
    journal = Journal(
        pg.connect(url, Secret(server.password), root_id=root_id, root_path="test"),
        claims=Path("/nonexistent/claims.lock"),  # never used on PostgreSQL
        lease_seconds=lease,
        fences=PackageStore(root, recipients=lambda sender: ROUTES.get(sender, [])).fences,
    )
    journal.claiming = True
    return journal


@pytest.fixture
def two(server: Cluster, tmp_path: Path) -> Iterator[tuple[Journal, Journal]]:
    """Two processes' journals on one new database, over one root folder."""
    url, root_id = server.database(f"claims_{secrets.token_hex(4)}"), secrets.token_hex(16)
    first, second = _journal(url, server, root_id, tmp_path), _journal(url, server, root_id, tmp_path)
    yield first, second
    for journal in (first, second):
        journal.unclaim()
        journal.db.close()


SEALED = {"officer": "police-do", "marking": "PROTECT", "period": "2026-10", "rows": 7, "sealed_at": "2026-11-01"}


def _as_another_process(journal: Journal) -> None:
    """Make `journal`'s claims name another holder than this test process (claims name host:pid)."""
    journal.db.execute("UPDATE claims SET node = 'elsewhere:1' WHERE node != ''")


def _lapse(journal: Journal) -> None:
    """As if `journal`'s process were paused past its lease: another holder's, not renewed, run out."""
    _as_another_process(journal)
    journal._lease._stop.set()  # type: ignore[union-attr]
    journal.db.execute("UPDATE claims SET until = '2000-01-01T00:00:00.000+00:00'")


def test_a_submission_claimed_by_a_live_process_is_skipped_not_waited_for(two: tuple[Journal, Journal]) -> None:
    first, second = two
    first.claim("s1", "police")
    _as_another_process(first)
    with pytest.raises(Claimed, match="being processed by elsewhere:1"):
        second.claim("s1", "police")
    assert not second.try_claim("s1", "police")
    second.claim("s2", "police")  # any other is free


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
    first.claim("s1", "police")
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


# ----------------------------------------------------------------------------------------- fencing the package store


def _store(journal: Journal) -> PackageStore:
    """The package store of `journal`'s process (the one its claims fence)."""
    assert journal.fences is not None
    store = PackageStore(journal.fences.base)
    store.fences = journal.fences
    return store


def _fences(root: Path, agency: str = "probation") -> list[str]:
    return sorted(p.name for p in (root / "inbox" / agency / FENCES).iterdir())


def test_each_claim_has_a_fence_folder_in_each_recipients_inbox_made_before_it_is_held_and_removed_when_let_go(
    two: tuple[Journal, Journal],
) -> None:
    first, _ = two
    root = _store(first).base
    first.claim("s1", "police")
    fence = first._lease.fence  # type: ignore[union-attr]
    assert first.fences is not None and first.fences.current == fence
    for agency in ROUTES["police"]:
        assert _fences(root, agency) == [str(fence)]
        assert (root / "inbox" / agency / FENCES / str(fence)).stat().st_mode & 0o777 == 0o700
    assert not (root / "inbox" / "police").exists()  # not a recipient of its own files
    first.unclaim()
    assert first.fences.current is None
    for agency in ROUTES["police"]:  # nor .fences itself, with no other claim's folder in it: only packages
        assert list((root / "inbox" / agency).iterdir()) == []


PUBLISHED = b"an encrypted package\n"


def _take_over(first: Journal, second: Journal) -> None:
    """The first process paused past its lease; the second takes its submission over."""
    _lapse(first)
    second.begin("s1", "police", "a.csv", "0" * 64)


def _by_create_once(store: PackageStore, first: Journal, second: Journal) -> None:
    with store.create_once("probation", "pkg.csv.gpg") as created:
        created.file.write(PUBLISHED)
        _take_over(first, second)  # while its temp file is written, before the link


def _by_nameless_file(store: PackageStore, first: Journal, second: Journal) -> None:
    staged = store.staging("probation")
    assert staged is not None, "this test needs O_TMPFILE"
    staged.write(PUBLISHED)
    staged.flush()
    with store.publish_staged("probation", "pkg.csv.gpg", staged, "0" * 64):
        _take_over(first, second)
    staged.close()


def _by_signed_document(store: PackageStore, first: Journal, second: Journal) -> None:
    _take_over(first, second)
    store.publish_signed("probation", "pkg.csv.gpg", PUBLISHED, "pkg.csv.gpg.sig", b"signature")


@pytest.mark.parametrize("publish", [_by_create_once, _by_nameless_file, _by_signed_document])
def test_a_holder_taken_over_while_paused_publishes_nothing(two: tuple[Journal, Journal], publish: object) -> None:
    first, second = two
    store, theirs = _store(first), _store(second)
    first.begin("s1", "police", "a.csv", "0" * 64)
    old = first._lease.fence  # type: ignore[union-attr]
    with pytest.raises(ClaimLost, match=f"fencing number {old} was taken over by another node"):
        publish(store, first, second)  # type: ignore[operator]
    inbox = store.root / "probation"
    assert sorted(p.name for p in inbox.iterdir()) == [FENCES]  # no package, no manifest, no temp file
    for agency in ROUTES["police"]:  # the old holder's folders revoked in every inbox; the new holder's made
        assert _fences(store.base, agency) == [str(second._lease.fence)]  # type: ignore[union-attr]
    with theirs.create_once("probation", "pkg.csv.gpg") as created:  # the new holder publishes
        created.file.write(b"the new holder's package\n")
    assert (inbox / "pkg.csv.gpg").read_bytes() == b"the new holder's package\n"


def test_a_holder_taken_over_while_paused_withdraws_nothing(two: tuple[Journal, Journal]) -> None:
    first, second = two
    store, theirs = _store(first), _store(second)
    first.begin("s1", "police", "a.csv", "0" * 64)
    _take_over(first, second)
    theirs.publish_signed("probation", "pkg.manifest.json", b"{}", "pkg.manifest.json.sig", b"signature")
    with pytest.raises(ClaimLost):
        store.withdraw("probation", ["pkg.manifest.json", "pkg.manifest.json.sig"])
    with pytest.raises(ClaimLost):  # nor replaces what the new holder published
        store.publish_signed("probation", "pkg.manifest.json", b"[]", "pkg.manifest.json.sig", b"other")
    inbox = store.root / "probation"
    assert (inbox / "pkg.manifest.json").read_bytes() == b"{}"
    assert (inbox / "pkg.manifest.json.sig").read_bytes() == b"signature"
    theirs.withdraw("probation", ["pkg.manifest.json", "pkg.manifest.json.sig"])  # the holder may
    assert sorted(p.name for p in inbox.iterdir()) == [FENCES]


def test_the_fence_folder_of_a_claim_no_one_holds_is_swept_with_what_its_writer_left(
    two: tuple[Journal, Journal],
) -> None:
    first, second = two
    store = _store(first)
    first.begin("s1", "police", "a.csv", "0" * 64)
    dead = first._lease.fence  # type: ignore[union-attr]
    (store.root / "housing" / FENCES / str(dead) / ".p.zip.0000.tmp").write_bytes(
        b"half a package"
    )  # a killed writer's
    second.begin("s2", "police", "b.csv", "1" * 64)
    live = second._lease.fence  # type: ignore[union-attr]
    fences = _store(second).fences
    assert fences.sweep(second.fence_live, quiet=0) == 0  # both claims held: nothing goes
    first._lease._stop.set()  # type: ignore[union-attr]  # its process died, and its lease ran out
    first.db.execute("UPDATE claims SET until = '2000-01-01T00:00:00.000+00:00' WHERE submission = 's1'")
    assert fences.sweep(second.fence_live, quiet=3600) == 0  # changed too recently to tell
    assert fences.sweep(second.fence_live, quiet=0) == 2  # its folder in each inbox
    assert [_fences(store.base, agency) for agency in ROUTES["police"]] == [[str(live)], [str(live)]]
