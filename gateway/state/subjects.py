"""The subject access index: which submission held whom, as keyed hashes only (Solihull 5.1;
Warwickshire Appendix 2).

At delivery, each subject key of the file (gateway.core.subject: its CRO numbers, its surnames
with dates of birth) is stored as HMAC-SHA-256 under the SAR key, truncated to 16 bytes (128 bits:
no two keys of a lifetime's files meet by chance), under a reference to the submission's id and
the key's id (`sar_submissions`); nothing else about the person. A look-up hashes the question
under the same key.

Threat-model limits: whoever holds the SAR key (it is in the vault) and the database can test a
guess (a name and a date of birth) against the index, as a look-up does; without the key, the
digests say nothing. Rotating the key (`rotate`) deletes the index made under the old one: it
could never be matched again. A worker that hashed under the old key while a rotation ran leaves
entries no look-up can match; `purge` removes those with the expired ones.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.adapters.db import Database, writing
from gateway.core.errors import ConfigError, VaultError
from gateway.core.secret import Secret

if TYPE_CHECKING:
    from gateway.adapters.vault import Vault
    from gateway.state.root import Root

SAR_CREDENTIAL = "sar.index"  # the vault credential: the SAR key, 32 random bytes as hex
_KEY_BYTES = 32
_BATCH = 65536  # digests sorted and inserted at a time (1 MiB of digests)
DIGEST_BYTES = 16
_KEY_ID_LABEL = b"iom-gateway subject access index key id"
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IndexKey:
    """The SAR key: hashes subject keys. `id` names it beside each entry (derived, never revealing it)."""

    secret: Secret

    @property
    def id(self) -> str:
        return "sar-" + hmac.digest(self._raw, _KEY_ID_LABEL, "sha256").hex()[:12]

    @property
    def _raw(self) -> bytes:
        return bytes.fromhex(self.secret.reveal())

    def digests(self, subjects: Iterable[str]) -> Iterator[bytes]:
        """HMAC-SHA-256 of each subject key, its first 16 bytes, in turn (streamed: a file's keys are never
        all hashed at once). Each starts from a copy of the keyed state: the key is not hashed again."""
        keyed = hmac.new(self._raw, digestmod="sha256")
        for subject in subjects:
            digest = keyed.copy()
            digest.update(subject.encode())
            yield digest.digest()[:DIGEST_BYTES]


def index_key(root: Root) -> IndexKey:
    """The SAR key from the vault, made now if the root has none (one made before the index existed).

    A root whose agencies all take OpenPGP may have no vault yet: it is made for the key. Raises
    ConfigError if there is no vault passphrase to make or open it, VaultError if the vault will not
    open, OSError if it cannot be saved (a delivery is then deferred: none goes unindexed).
    """
    _vault_made(root)
    stored = root.vault.credential(SAR_CREDENTIAL)
    if stored is not None:
        return IndexKey(stored)
    with root.changing_vault() as vault:  # another process may have made it meanwhile: keep theirs
        stored = vault.credential(SAR_CREDENTIAL)
        if stored is None:
            stored = _new_key(vault)
            log.info("made the subject access index key %s (this root had none)", IndexKey(stored).id)
    return IndexKey(stored)


def _vault_made(root: Root) -> None:
    if root.vault_path.exists():
        return
    from gateway.adapters.vault import Vault  # noqa: PLC0415 (its crypto loads only when a vault is used)

    try:
        passphrase = root.config.vault_passphrase()
    except ConfigError as exc:
        why = "the subject access index keeps its key in the vault, which needs a passphrase"
        raise ConfigError(f"{why}: {exc.message}") from None
    try:
        Vault.create(root.vault_path, passphrase)
    except VaultError:
        if not root.vault_path.exists():
            raise  # else another process made it meanwhile


def current_key_id(root: Root) -> str | None:
    """The id of the SAR key in the vault, None if there is none (nor a vault); never makes one."""
    if not root.vault_path.exists():
        return None
    stored = root.vault.credential(SAR_CREDENTIAL)
    return None if stored is None else IndexKey(stored).id


def new_index_key(root: Root) -> tuple[IndexKey, str | None]:
    """Replace the SAR key with a new random one; return it and the old key's id (None if there was none)."""
    _vault_made(root)
    with root.changing_vault() as vault:
        old = vault.credential(SAR_CREDENTIAL)
        return IndexKey(_new_key(vault)), None if old is None else IndexKey(old).id


def _new_key(vault: Vault) -> Secret:
    secret = Secret(secrets.token_bytes(_KEY_BYTES).hex())
    vault.set_credential(SAR_CREDENTIAL, secret)
    return secret


@dataclass(frozen=True, slots=True)
class Entries:
    """What to index for one submission: its subject keys, to be hashed under `key`."""

    key: IndexKey
    subjects: Iterable[str]

    def write(self, db: Database, submission: str) -> None:
        """Insert the entries (in the caller's transaction); a repeat, or a redo after a crash, adds nothing."""
        key_id, digests = self.key.id, self.key.digests(self.subjects)
        db.execute(
            "INSERT INTO sar_submissions (submission, key_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (submission, key_id),
        )
        (ref,) = db.execute(
            "SELECT ref FROM sar_submissions WHERE submission = ? AND key_id = ?", (submission, key_id)
        ).fetchone()
        # in sorted batches: random digests inserted one by one each touch a random page of the table
        # (7 s for 340,000 keys, against 2 s so), and sorting all at once would hold every digest
        while batch := sorted(itertools.islice(digests, _BATCH)):
            db.executemany(
                "INSERT INTO sar_index (digest, ref) VALUES (?, ?) ON CONFLICT DO NOTHING", ((d, ref) for d in batch)
            )


@dataclass(frozen=True, slots=True)
class Disclosed:
    """One package that held the person asked about: delivered by `sender` to `recipient`."""

    delivered: str  # when (UTC, ISO 8601)
    sender: str
    recipient: str
    marking: str
    period: str
    rows: int
    package: str
    status: str  # live (still in the inbox) | purged
    pulled: str | None  # the first pull from the gateway, if any
    received: str | None  # the first signed receipt, if any


# Deliveries that disclosed something: still in the inbox, or purged since (the journal keeps the row)
_LOOKUP = """
SELECT d.created, s.agency, d.recipient, COALESCE(s.marking, ''), COALESCE(s.period, ''), COALESCE(s.rows, 0),
       d.package, CASE d.status WHEN 'delivered' THEN 'live' ELSE 'purged' END,
       (SELECT MIN(p.pulled) FROM pulls p WHERE p.package = d.package AND p.agency = d.recipient),
       (SELECT MIN(r.received) FROM receipts r WHERE r.package = d.package AND r.agency = d.recipient)
FROM deliveries d JOIN submissions s ON s.id = d.submission
WHERE d.status IN ('delivered', 'purged')
  AND d.submission IN (SELECT m.submission FROM sar_index i JOIN sar_submissions m ON m.ref = i.ref
                       WHERE m.key_id = ? AND i.digest IN ({marks}))
ORDER BY d.created, d.package, d.recipient
"""

# Submissions whose index entries may have outlived them: nothing still in flight, and the last delivery
# older than the audit log keeps its entries (`past_retention` then checks that none is still live)
_OLD = """
SELECT s.id FROM submissions s
WHERE s.status NOT IN ('received', 'sealing', 'partial', 'rejecting')
  AND s.id IN (SELECT m.submission FROM sar_submissions m)
  AND COALESCE((SELECT MAX(d.created) FROM deliveries d WHERE d.submission = s.id), s.updated) < ?
"""
_CHUNK = 500  # submissions per statement (SQLite's limit on ? is 32,766 nowadays, 999 in old builds)


class SubjectIndex:
    """The sar_index table of the journal's database."""

    def __init__(self, connection: Database) -> None:
        self.db = connection

    def lookup(self, key: IndexKey, subjects: Iterable[str]) -> list[Disclosed]:
        """Every delivery of a submission indexed under any of `subjects` (hashed with `key`), oldest first."""
        digests = list(dict.fromkeys(key.digests(subjects)))
        if not digests:
            return []
        sql = _LOOKUP.format(marks=",".join("?" * len(digests)))
        rows = self.db.execute(sql, (key.id, *digests)).fetchall()
        return [Disclosed(*tuple(row)) for row in rows]

    def entries(self) -> int:
        row = self.db.execute("SELECT COUNT(*) FROM sar_index").fetchone()
        return int(row[0])

    def past_retention(self, cutoff: str, going: set[tuple[str, str]]) -> list[str]:
        """The indexed submissions whose last delivery was made before `cutoff` (the audit log's retention) and
        none of whose deliveries is live (in an inbox, being made or deferred) once those in `going`
        ((submission, recipient) pairs a purge is deleting) are gone."""
        found = []
        for (submission,) in self.db.execute(_OLD, (cutoff,)).fetchall():
            live = self.db.execute(
                "SELECT recipient FROM deliveries WHERE submission = ?"
                " AND status IN ('sealing', 'delivered', 'deferred')",
                (submission,),
            ).fetchall()
            if all((submission, recipient) in going for (recipient,) in live):
                found.append(str(submission))
        return found

    def stale(self, key_id: str | None, submissions: list[str]) -> int:
        """How many entries `drop_stale` would delete now."""
        row = self.db.execute(
            f"SELECT COUNT(*) FROM sar_index WHERE ref IN ({_OTHER_KEYS})",  # noqa: S608 (constants)
            (key_id or "",),
        ).fetchone()
        old = int(row[0])
        for chunk in _chunks(submissions):
            row = self.db.execute(
                f"SELECT COUNT(*) FROM sar_index WHERE ref IN ({_OF_SUBMISSIONS.format(marks=_marks(chunk))})"  # noqa: S608
                " AND ref IN (SELECT ref FROM sar_submissions WHERE key_id = ?)",
                (*chunk, key_id or ""),
            ).fetchone()
            old += int(row[0])
        return old

    def drop_stale(self, key_id: str | None, submissions: list[str]) -> int:
        """Delete the entries of `submissions` (see past_retention) and those made under a key other than
        `key_id` (the current one; None: every entry is stale); return how many went."""
        with writing(self.db):
            gone = self._drop(_OTHER_KEYS, (key_id or "",))
            for chunk in _chunks(submissions):
                gone += self._drop(_OF_SUBMISSIONS.format(marks=_marks(chunk)), tuple(chunk))
        return gone

    def drop_other_keys(self, key_id: str) -> int:
        """Delete every entry made under a key other than `key_id`; return how many went."""
        with writing(self.db):
            return self._drop(_OTHER_KEYS, (key_id,))

    def _drop(self, refs: str, parameters: tuple[str, ...]) -> int:
        """Delete the entries under the references `refs` selects, then the references (in the caller's transaction)."""
        gone = self.db.execute(f"DELETE FROM sar_index WHERE ref IN ({refs})", parameters).rowcount  # noqa: S608 (only ?s)
        self.db.execute(f"DELETE FROM sar_submissions WHERE ref IN ({refs})", parameters)  # noqa: S608 (only ?s)
        return int(gone)


# the references of entries made under another key than ?, and those of the submissions listed
_OTHER_KEYS = "SELECT ref FROM sar_submissions WHERE key_id != ?"
_OF_SUBMISSIONS = "SELECT ref FROM sar_submissions WHERE submission IN ({marks})"


def _marks(chunk: list[str]) -> str:
    return ",".join("?" * len(chunk))


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
