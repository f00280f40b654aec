"""One opened gateway root: configuration, standard, state, keys. Built once per command."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from gateway.audit import AuditLog
from gateway.config import Config
from gateway.crypto_gpg import Fingerprint, Keyring
from gateway.db import connect
from gateway.errors import ConfigError
from gateway.fsio import locked
from gateway.journal import Journal
from gateway.registry import Registry
from gateway.store import PackageStore
from gateway.validate import Standard, load_standard
from gateway.vault import Vault

KEYS = "keys"
GNUPG_HOME = "gnupg"
VAULT_FILE = "vault.json"
VAULT_LOCK = "vault.lock"
DEMO_OFFICERS = "demo-officers"


@dataclass
class Root:
    """The gateway root at `path` with its checked config and compiled standard; state opens on first use."""

    path: Path
    config: Config
    standard: Standard
    _vault: tuple[object, Vault] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: Path) -> Root:
        """Load `path`; raise ConfigError or SchemaError naming what to fix."""
        standard = load_standard(path)
        return cls(path, Config.load(path, columns=frozenset(standard.columns), kinds=standard.kinds), standard)

    @functools.cached_property
    def db(self):  # type: ignore[no-untyped-def]  # sqlite3.Connection, kept out of this module's imports
        return connect(self.path)

    @functools.cached_property
    def registry(self) -> Registry:
        return Registry(self.db)

    @functools.cached_property
    def journal(self) -> Journal:
        return Journal(self.db)

    @functools.cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.path)

    @functools.cached_property
    def store(self) -> PackageStore:
        return PackageStore(self.path)

    @functools.cached_property
    def keyring(self) -> Keyring:
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
            self._vault = (stamp, Vault.open(self.vault_path, self.config.vault_passphrase()))
        return self._vault[1]

    @contextmanager
    def changing_vault(self) -> Iterator[Vault]:
        """Hold the vault lock and yield the vault read afresh, so no other process's change is lost."""
        with locked(self.path / KEYS / VAULT_LOCK):
            self._vault = None
            yield self.vault
            self._vault = None

    def close(self) -> None:
        """Close the state database if it was opened (before this Root is replaced by a reload)."""
        if "db" in self.__dict__:
            self.db.close()

    def gateway_key(self) -> Fingerprint:
        """The current gateway signing key; raise ConfigError if the root was never initialised."""
        value = self.journal.current_gateway_key()
        if value is None:
            raise ConfigError(f"{str(self.path)!r} has no gateway key: run `iom-gateway init` there first")
        return Fingerprint.parse(value)

    def demo_home(self, officer_id: str) -> Path:
        return self.path / KEYS / DEMO_OFFICERS / officer_id
