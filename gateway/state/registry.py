"""The register of Designated Officers (DO) and Primary Designated Officers (PDO)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.adapters.db import Database, IntegrityError, writing
from gateway.core.errors import PolicyError, UsageError

OFFICER_ID = re.compile(r"[a-z][a-z0-9-]{1,63}")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class Role(enum.Enum):
    DO = "DO"
    PDO = "PDO"


@dataclass(frozen=True, slots=True)
class Officer:
    """A registered officer, the fingerprint of their current OpenPGP key and their SSH public key, if any."""

    id: str
    agency: str
    role: Role
    name: str
    email: str
    fingerprint: str
    status: str
    demo: bool = False
    ssh_key: str | None = None  # the bare `type base64` line (no comment, no options)
    ssh_fingerprint: str | None = None  # `SHA256:...`, as `ssh-keygen -lf` prints it

    @property
    def active(self) -> bool:
        return self.status == "active"

    def to_json(self) -> dict[str, str | None]:
        return {
            "id": self.id,
            "agency": self.agency,
            "role": self.role.value,
            "name": self.name,
            "email": self.email,
            "fingerprint": self.fingerprint,
            "status": self.status,
            "ssh_key_type": self.ssh_key.split()[0] if self.ssh_key else None,
            "ssh_fingerprint": self.ssh_fingerprint,
        }


def slug(text: str) -> str:
    """`Karen Doyle` -> `karen-doyle`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class Registry:
    """Officers in the state database; every change is also an audit event (recorded by the caller)."""

    def __init__(self, connection: Database) -> None:
        self.db = connection

    def add(self, officer: Officer) -> Officer:
        """Register `officer`; raise UsageError for a malformed field, PolicyError for a taken id or fingerprint."""
        if not OFFICER_ID.fullmatch(officer.id):
            raise UsageError(f"officer id {officer.id!r} must be lower-case letters, digits and '-'")
        if not EMAIL.fullmatch(officer.email):
            raise UsageError(f"{officer.email!r} is not an e-mail address: give the officer's secure address")
        if not officer.name.strip():
            raise UsageError("the officer needs a name (--name)")
        now = _now()
        try:
            with writing(self.db):
                self._refuse_shared_ssh_key(officer.id, officer.ssh_fingerprint)
                self.db.execute(
                    "INSERT INTO officers (id, agency, role, name, email, fingerprint, status, demo, created, changed,"
                    " ssh_key, ssh_fingerprint) VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?, ?)",
                    (
                        officer.id,
                        officer.agency,
                        officer.role.value,
                        officer.name,
                        officer.email,
                        officer.fingerprint,
                        int(officer.demo),
                        now,
                        now,
                        officer.ssh_key,
                        officer.ssh_fingerprint,
                    ),
                )
                self.db.execute(
                    "INSERT INTO officer_keys (fingerprint, officer, added) VALUES (?, ?, ?)",
                    (officer.fingerprint, officer.id, now),
                )
        except IntegrityError:  # a well-formed request the register refuses: exit 1, not a usage error
            raise PolicyError(
                f"officer {officer.id!r} or key {officer.fingerprint} is already registered: "
                "choose another --id, or use `officers rekey` for a new key"
            ) from None
        return self.get(officer.id)

    def get(self, officer_id: str) -> Officer:
        """The officer called `officer_id`; raise UsageError naming `officers list`."""
        row = self.db.execute("SELECT * FROM officers WHERE id = ?", (officer_id,)).fetchone()
        if row is None:
            raise UsageError(f"no officer {officer_id!r} in the register: see `iom-gateway officers list`")
        return _officer(row)

    def all(self, agency: str | None = None) -> list[Officer]:
        """Every officer (of `agency`), by agency then id."""
        if agency is None:
            rows = self.db.execute("SELECT * FROM officers ORDER BY agency, id").fetchall()
        else:
            rows = self.db.execute("SELECT * FROM officers WHERE agency = ? ORDER BY id", (agency,)).fetchall()
        return [_officer(row) for row in rows]

    def by_fingerprint(self, fingerprint: str, now: datetime | None = None) -> Officer | None:
        """The officer whose current key has `fingerprint` or, at `now`, whose replaced key with it is
        still within its grace period; else None."""
        row = self.db.execute("SELECT * FROM officers WHERE fingerprint = ?", (fingerprint,)).fetchone()
        if row is None and now is not None:
            row = self.db.execute(
                "SELECT o.* FROM officers o JOIN officer_keys k ON k.officer = o.id"
                " WHERE k.fingerprint = ? AND k.accepted_until > ?",
                (fingerprint, now.isoformat(timespec="seconds")),
            ).fetchone()
        return None if row is None else _officer(row)

    def keys_of(self, officer_id: str) -> list[tuple[str, str, str | None]]:
        """Every key the officer has had: (fingerprint, added, retired), oldest first."""
        rows = self.db.execute(
            "SELECT fingerprint, added, retired FROM officer_keys WHERE officer = ? ORDER BY added, rowid",
            (officer_id,),
        ).fetchall()
        return [(str(r[0]), str(r[1]), r[2]) for r in rows]

    def revoke(self, officer_id: str) -> Officer:
        """Mark the officer revoked: their signatures are refused from now on."""
        officer = self.get(officer_id)
        if not officer.active:
            raise PolicyError(f"officer {officer_id!r} is already revoked: nothing changed")
        self.db.execute("UPDATE officers SET status = 'revoked', changed = ? WHERE id = ?", (_now(), officer_id))
        return self.get(officer_id)

    def rekey(self, officer_id: str, fingerprint: str, grace_until: datetime | None = None) -> Officer:
        """Make `fingerprint` the officer's current key; the old one is retired (kept for history) and
        still accepted for submissions until `grace_until`, if given."""
        officer = self.get(officer_id)
        if not officer.active:
            raise PolicyError(f"officer {officer_id!r} is revoked: register a new officer instead; nothing changed")
        now = _now()
        try:
            with writing(self.db):
                self.db.execute(
                    "UPDATE officer_keys SET retired = ?, accepted_until = ? WHERE fingerprint = ?",
                    (now, grace_until.isoformat(timespec="seconds") if grace_until else None, officer.fingerprint),
                )
                self.db.execute(
                    "INSERT INTO officer_keys (fingerprint, officer, added) VALUES (?, ?, ?)",
                    (fingerprint, officer_id, now),
                )
                self.db.execute(
                    "UPDATE officers SET fingerprint = ?, changed = ? WHERE id = ?", (fingerprint, now, officer_id)
                )
        except IntegrityError:
            raise PolicyError(
                f"key {fingerprint} is already registered to an officer: each officer needs their own key"
            ) from None
        return self.get(officer_id)

    def set_ssh_key(self, officer_id: str, line: str, fingerprint: str) -> Officer:
        """Make the SSH public key `line` (fingerprint `fingerprint`) the officer's, replacing any other.

        Raises PolicyError for a revoked officer or a key another active officer holds (nothing changed).
        """
        with writing(self.db):
            if not self.get(officer_id).active:
                raise PolicyError(
                    f"officer {officer_id!r} is revoked: a revoked officer gets no SSH key; nothing changed"
                )
            self._refuse_shared_ssh_key(officer_id, fingerprint)
            try:
                self.db.execute(
                    "UPDATE officers SET ssh_key = ?, ssh_fingerprint = ?, changed = ? WHERE id = ?",
                    (line, fingerprint, _now(), officer_id),
                )
            except IntegrityError:  # another process gave it to someone else meanwhile
                raise PolicyError(f"SSH key {fingerprint} is already registered: nothing changed") from None
        return self.get(officer_id)

    def set_login(self, officer_id: str, hashed: str) -> None:
        """Keep `hashed` (an scrypt hash, `passwords.hash_login`) as the officer's login password."""
        self.get(officer_id)
        with writing(self.db):
            self.db.execute(
                "INSERT INTO officer_logins (officer, hash, changed) VALUES (?, ?, ?)"
                " ON CONFLICT (officer) DO UPDATE SET hash = excluded.hash, changed = excluded.changed",
                (officer_id, hashed, _now()),
            )

    def login_hash(self, officer_id: str) -> str | None:
        """The officer's login password hash, or None (no such officer, or none set)."""
        row = self.db.execute("SELECT hash FROM officer_logins WHERE officer = ?", (officer_id,)).fetchone()
        return None if row is None else str(row[0])

    def _refuse_shared_ssh_key(self, officer_id: str, fingerprint: str | None) -> None:
        # said here, by name; the partial unique index is the backstop a race would hit
        if fingerprint is None:
            return
        row = self.db.execute(
            "SELECT id FROM officers WHERE ssh_fingerprint = ? AND status = 'active' AND id != ?",
            (fingerprint, officer_id),
        ).fetchone()
        if row is not None:
            raise PolicyError(
                f"SSH key {fingerprint} is already officer {row['id']!r}'s: each officer needs their own SSH key;"
                " nothing changed"
            )


def _officer(row: Any) -> Officer:
    return Officer(
        row["id"],
        row["agency"],
        Role(row["role"]),
        row["name"],
        row["email"],
        row["fingerprint"],
        row["status"],
        bool(row["demo"]),
        row["ssh_key"],
        row["ssh_fingerprint"],
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
