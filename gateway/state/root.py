"""One opened gateway root: configuration, standard, state, keys. Built once per command."""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.adapters.config import Config
from gateway.adapters.fsio import locked
from gateway.core.errors import ConfigError, GatewayError, VaultError
from gateway.core.secret import Secret
from gateway.validate import Standard, load_standard

if TYPE_CHECKING:
    from gateway.adapters.db import Database
    from gateway.adapters.gpg import Fingerprint, Keyring
    from gateway.adapters.store import PackageStore
    from gateway.adapters.vault import Vault
    from gateway.state.audit import AuditLog, Signer
    from gateway.state.journal import Journal
    from gateway.state.registry import Registry

# The state, keys, vault and audit log are imported by the property that opens them, not above:
# `validate` opens a root for its configuration and standard only, and starts faster without them
# (issue 13; tests/integration/test_startup.py).

KEYS = "keys"
GNUPG_HOME = "gnupg"
VAULT_FILE = "vault.json"
VAULT_LOCK = "vault.lock"
DEMO_OFFICERS = "demo-officers"
ROOT_ID = "root-id"
CLAIMS_FILE = "claims.lock"  # the byte-range locks by which a node's processes claim submissions
log = logging.getLogger(__name__)


@dataclass
class Root:
    """The gateway root at `path` with its checked config and compiled standard; state opens on first use."""

    path: Path
    config: Config
    standard: Standard
    _vault: tuple[object, Vault] | None = field(default=None, repr=False)
    # the daemon and its workers claim the submissions they take (Journal.claim); set before first use
    claiming: bool = False

    @classmethod
    def open(cls, path: Path) -> Root:
        """Load `path`; raise ConfigError or SchemaError naming what to fix."""
        standard = load_standard(path)
        return cls(path, Config.load(path, columns=frozenset(standard.columns), kinds=standard.kinds), standard)

    @functools.cached_property
    def db(self) -> Database:
        """The journal: `state/gateway.db`, or the PostgreSQL database [journal] url names, checked as this root's
        (gateway.adapters.pg.check). Raises ConfigError or JournalUnavailable naming the fix."""
        url = self.config.journal.url
        if url is None:
            from gateway.adapters.db import connect  # noqa: PLC0415 (see the imports above)

            return connect(self.path)
        from gateway.adapters import pg  # noqa: PLC0415

        return pg.connect(
            url,
            self.journal_password(),
            root_id=self.identity,
            root_path=str(self.path),
            idle_seconds=self.config.journal.lease_seconds,
        )

    def journal_password(self) -> Secret | None:
        """The PostgreSQL journal's password: a systemd credential, else the vault's (`keys journal-password`)."""
        from gateway.adapters.config import JOURNAL_CREDENTIAL, journal_password  # noqa: PLC0415

        stored = self.vault.credential(JOURNAL_CREDENTIAL) if self.vault_path.exists() else None
        return journal_password(stored)

    @functools.cached_property
    def identity(self) -> str:
        """This root's id (`state/root-id`, made at first need): what a PostgreSQL journal records as its root,
        so that a second root pointed at the same database is refused."""
        state = self.path / STATE
        state.mkdir(mode=0o700, exist_ok=True)
        path = state / ROOT_ID
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:
            try:
                os.write(fd, f"{secrets.token_hex(16)}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        value = path.read_text(encoding="ascii").strip()
        if len(value) != 32 or not all(c in "0123456789abcdef" for c in value):
            raise ConfigError(f"{str(path)!r} is not a root id (32 hex digits): restore it from a backup of this root")
        return value

    @functools.cached_property
    def registry(self) -> Registry:
        from gateway.state.registry import Registry  # noqa: PLC0415

        return Registry(self.db)

    @functools.cached_property
    def journal(self) -> Journal:
        from gateway.state.journal import Journal  # noqa: PLC0415

        journal = Journal(
            self.db,
            claims=self.path / STATE / CLAIMS_FILE,
            lease_seconds=self.config.journal.lease_seconds,
            fences=self.store.fences,
        )
        journal.claiming = self.claiming
        return journal

    @functools.cached_property
    def audit(self) -> AuditLog:
        """The audit log, which signs a checkpoint with the gateway key whenever [daemon] bounds require one."""
        from gateway.state.audit import AuditLog, Bounds  # noqa: PLC0415

        daemon = self.config.daemon
        return AuditLog(
            self.path, bounds=Bounds(daemon.checkpoint_entries, daemon.checkpoint_minutes), signer=self.audit_signer
        )

    def audit_signer(self) -> Signer | None:
        """The current gateway key as the audit log's signer; None before `init` made one.

        Raises ConfigError if the key has expired (it signs nothing more: rotate it).
        """
        from gateway.adapters.gpg import Purpose  # noqa: PLC0415
        from gateway.state.audit import Signer  # noqa: PLC0415

        if self.journal.current_gateway_key() is None:
            return None
        gateway = self.gateway_key()
        return Signer(lambda data: self.keyring.sign_bytes(data, gateway, purpose=Purpose.AUDIT), str(gateway))

    def checkpoint_audit(self) -> dict[str, object] | None:
        """Sign a checkpoint over the log's last entry unless it is one; return it or None.

        Raises ConfigError (no or an expired gateway key), CryptoError (gpg could not sign).
        """
        signer = self.audit_signer()
        return None if signer is None else self.audit.checkpoint(signer.sign, signer.key)

    @functools.cached_property
    def store(self) -> PackageStore:
        from gateway.adapters.store import PackageStore  # noqa: PLC0415

        config = self.config

        def recipients(sender: str) -> list[str]:  # asked per claim, not built for every agency up front
            agency = config.agencies.get(sender)
            return [] if agency is None else [r.id for r in config.recipients(agency)]

        return PackageStore(self.path, {a.id: a.unix_group for a in config.agencies.values()}, recipients)

    @functools.cached_property
    def keyring(self) -> Keyring:
        from gateway.adapters.gpg import Keyring  # noqa: PLC0415

        keys = self.path / KEYS
        keys.mkdir(mode=0o700, exist_ok=True)
        return Keyring(keys / GNUPG_HOME)

    @property
    def vault_path(self) -> Path:
        return self.path / KEYS / VAULT_FILE

    @property
    def vault(self) -> Vault:
        """The vault as it is on disk now: reopened when another process (an admin command) saved it."""
        try:
            info = self.vault_path.stat()
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            stamp = None
        if self._vault is None or stamp != self._vault[0]:
            self._vault = (stamp, self._open_vault())
        return self._vault[1]

    def _open_vault(self) -> Vault:
        from gateway.adapters.vault import Vault  # noqa: PLC0415

        try:
            vault = Vault.open(self.vault_path, self.config.vault_passphrase())
        except VaultError:
            # a rotation that stopped between re-encrypting the vault and replacing the passphrase file
            # left the new passphrase beside it: finish it
            pending = self.pending_passphrase_file
            if pending is None or not pending.is_file():
                raise
            vault = Vault.open(self.vault_path, Secret(pending.read_text(encoding="utf-8").strip()))
            assert self.config.vault_passphrase_file is not None  # noqa: S101 (pending implies it)
            os.replace(pending, self.config.vault_passphrase_file)
            return vault
        if self.pending_passphrase_file is not None:  # a rotation that stopped before re-encrypting: void
            self.pending_passphrase_file.unlink(missing_ok=True)
        return vault

    @property
    def pending_passphrase_file(self) -> Path | None:
        """Where a vault rotation keeps the new passphrase until the vault is re-encrypted with it."""
        configured = self.config.vault_passphrase_file
        return None if configured is None else configured.with_name(configured.name + ".next")

    @contextmanager
    def changing_vault(self) -> Iterator[Vault]:
        """Hold the vault lock and yield the vault read afresh, so no other process's change is lost."""
        with locked(self.path / KEYS / VAULT_LOCK):
            self._vault = None
            yield self.vault
            self._vault = None

    def close(self, *, checkpoint: bool = False) -> None:
        """End a command: checkpoint the audit log if this Root appended to it (or `checkpoint`), so a log
        at rest always ends with a signed checkpoint; then close the state database if it was opened.

        A key that cannot sign is logged, not raised: what the command did is done and on the log.
        """
        if checkpoint or ("audit" in self.__dict__ and self.audit.appended):
            try:
                self.checkpoint_audit()
            except GatewayError as exc:
                log.error(
                    "the audit log could not be checkpointed (%s): `iom-gateway audit verify` reports it until the"
                    " gateway key signs again",
                    exc.message,
                )
        if "journal" in self.__dict__:
            self.journal.unclaim()
        if "db" in self.__dict__:
            self.db.close()

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def gateway_key(self) -> Fingerprint:
        """The current gateway signing key; raise ConfigError if the root was never initialised or the
        key has expired (an expired key never signs: rotate it)."""
        from gateway.adapters.gpg import Fingerprint  # noqa: PLC0415

        value = self.journal.current_gateway_key()
        if value is None:
            raise ConfigError(f"{str(self.path)!r} has no gateway key: run `iom-gateway init` there first")
        expires = self.journal.gateway_key_expires(value)
        if expires is not None and datetime.fromisoformat(expires) <= datetime.now(UTC):
            raise ConfigError(
                f"the gateway key {value} expired on {expires[:10]} and signs nothing more: "
                "run `iom-gateway keys rotate --gateway`, then give partners the new key (`keys export --gateway`)"
            )
        return Fingerprint.parse(value)

    def demo_home(self, officer_id: str) -> Path:
        return self.path / KEYS / DEMO_OFFICERS / officer_id


FLUSH_LOCK = "audit-flush.lock"


def flush_audit(root: Root, *, check_log: bool = False) -> int:
    """Append the audit events the journal staged; with `check_log`, skip those a crash already appended.

    Only events durably staged are appended (`Journal.staged_audit(ready=True)`: a package.delivered
    waits for its submission's end), all of them in one write with one fsync (`AuditLog.append_all`).
    Several processes (the daemon's workers) flush the one journal: each flush holds
    `state/audit-flush.lock` and reads what is staged under it, so no event is appended twice. The
    lock file names the events being appended until the journal has let them go: a flusher that
    finds names there knows its predecessor died in between, and looks those events up in the log.
    On the PostgreSQL journal, nodes on other hosts flush too: the journal's sequencer lock is taken first.
    """
    if not root.journal.staged_audit(ready=True):  # the common case: nothing to append, no lock taken
        return 0
    with root.journal.sequencer(), _flushing(root.path / STATE / FLUSH_LOCK) as fd:
        interrupted = set(os.pread(fd, 1 << 20, 0).decode(errors="replace").split("\n")) - {""}
        staged = root.journal.staged_audit(ready=True)
        there = {
            s.ref for s in staged if (check_log or s.ref in interrupted) and root.audit.find_ref(s.ref) is not None
        }
        if there:
            root.journal.audit_appended(*there)
        todo = [s for s in staged if s.ref not in there]
        if todo:
            os.ftruncate(fd, 0)
            os.pwrite(fd, "\n".join(s.ref for s in todo).encode(), 0)
            root.audit.append_all([(s.event, s.actor, s.agency, s.ref, s.details) for s in todo])
            root.journal.audit_appended(*(s.ref for s in todo))
        os.ftruncate(fd, 0)
    return len(todo)


@contextmanager
def _flushing(path: Path) -> Iterator[int]:
    """Hold the flush lock; yield its descriptor (the marker of the event in hand lives in the file).

    The marker is never fsynced: a process crash leaves it in the page cache, and a power cut is
    covered by recovery at start-up, which flushes with `check_log`.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


SAMPLES = "samples"


QUARANTINE = "quarantine"


INBOX = "inbox"


STATE = "state"


KEYS = "keys"
