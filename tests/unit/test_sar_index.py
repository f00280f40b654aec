"""The subject access index's store: digests only, batches past the first, repeats once, look-ups under the
current key only, and what purge and rotation delete (a real SQLite database, made by the migrations)."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import pytest

from gateway.adapters.db import connect, writing
from gateway.core.secret import Secret
from gateway.state.subjects import _BATCH, Entries, IndexKey, SubjectIndex


def _key() -> IndexKey:
    return IndexKey(Secret(secrets.token_bytes(32).hex()))


def _submission(db: sqlite3.Connection, sid: str, *deliveries: tuple[str, str, str]) -> None:
    """A delivered submission and its (recipient, status, created) deliveries."""
    with writing(db):
        db.execute(
            "INSERT INTO submissions (id, agency, name, sha256, status, marking, period, rows, created, updated)"
            " VALUES (?, 'police', 'f.csv', 'h', 'done', 'PROTECT-PERSONAL', '2026-10', 3, 't', '2019-01-01')",
            (sid,),
        )
        for recipient, status, created in deliveries:
            db.execute(
                "INSERT INTO deliveries (submission, recipient, package, method, key_id, status, created, expires)"
                " VALUES (?, ?, ?, 'gpg', 'k', ?, ?, '2020-01-01')",
                (sid, recipient, f"P__{sid}", status, created),
            )


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    """The journal's database (tests/integration/test_pg_journal.py runs these tests on PostgreSQL's)."""
    return connect(tmp_path)


def test_a_file_larger_than_a_batch_is_indexed_whole_and_once(db: sqlite3.Connection) -> None:
    key = _key()
    _submission(db, "s1", ("probation", "delivered", "2026-11-01"))
    subjects = [f"cro:{n}/21G" for n in range(_BATCH + 100)]
    with writing(db):  # as journal.sealing writes them: in its transaction
        Entries(key, [*subjects, *subjects[:50]]).write(db, "s1")  # repeats add nothing
        Entries(key, subjects[:10]).write(db, "s1")  # nor a redo after a crash
    index = SubjectIndex(db)
    assert index.entries() == len(subjects)
    rows = db.execute(
        "SELECT i.digest, m.key_id, m.submission FROM sar_index i JOIN sar_submissions m USING (ref)"
    ).fetchall()
    assert {len(r[0]) for r in rows} == {16} and {(r[1], r[2]) for r in rows} == {(key.id, "s1")}
    (found,) = index.lookup(key, [subjects[-1]])
    assert (found.package, found.recipient, found.status, found.rows) == ("P__s1", "probation", "live", 3)
    assert index.lookup(key, ["cro:1/99W"]) == [] and index.lookup(_key(), [subjects[0]]) == []


def test_the_key_id_is_stable_and_reveals_nothing_of_the_key() -> None:
    key = _key()
    assert key.id == IndexKey(key.secret).id and key.id.startswith("sar-") and key.id[4:] not in key.secret.reveal()
    assert key.id != _key().id and "Secret(<redacted>)" in repr(key)


def test_purge_drops_submissions_past_retention_with_nothing_live_and_entries_of_old_keys(
    db: sqlite3.Connection,
) -> None:
    key, old = _key(), _key()
    _submission(db, "gone", ("probation", "purged", "2019-01-01"), ("housing", "purged", "2019-02-01"))
    _submission(db, "going", ("probation", "purged", "2019-01-01"), ("housing", "delivered", "2019-01-01"))
    _submission(db, "recent", ("probation", "purged", "2026-01-01"))
    _submission(db, "live", ("probation", "delivered", "2019-01-01"))
    with writing(db):
        for sid in ("gone", "going", "recent", "live"):
            Entries(key, [f"cro:{sid}", f"name:{sid}|1990-01-01"]).write(db, sid)
        Entries(old, ["cro:stale"]).write(db, "recent")
    index, cutoff = SubjectIndex(db), "2020-01-01"
    assert index.past_retention(cutoff, set()) == ["gone"]
    # a purge deleting housing's package of `going` counts it as purged
    assert sorted(index.past_retention(cutoff, {("going", "housing")})) == ["going", "gone"]
    assert index.stale(key.id, ["gone"]) == 3  # gone's two, and the entry under the old key
    assert index.entries() == 9
    assert index.drop_stale(key.id, ["gone"]) == 3
    assert index.lookup(key, ["cro:gone"]) == [] and len(index.lookup(key, ["cro:recent"])) == 1
    assert index.drop_other_keys(old.id) == 6 and index.entries() == 0
    assert db.execute("SELECT COUNT(*) FROM sar_submissions").fetchone()[0] == 0  # no reference outlives its entries
