"""`iom-gateway check`: gateway.toml, the schemas, the ownership matrix, the officer register, keys and
folders checked together, without starting anything.

It takes no lock, writes nothing (no journal change, no audit entry, no folder made) and leaves no
gpg-agent running (the command's end stops the agents it started). It reads state/gateway.db as
`status` does. The vault passphrase is needed only to see whether each AES-ZIP agency has a
current password: where it is not available (an admin's shell, while the service gets it as a
systemd credential) the passwords are listed as not checked, which is not a problem.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from gateway.adapters.config import CONFIG_NAME, VAULT_ENV, Config
from gateway.adapters.db import DATABASE, STATE
from gateway.adapters.vault import CURRENT, RELAY_CREDENTIAL, Vault
from gateway.core.errors import ConfigError, GatewayError, SchemaError, UsageError
from gateway.core.model import Agency, Delivery
from gateway.exchange.folders import Orphan, agency_folders, orphaned_folders
from gateway.exchange.health import KeyWarning, key_warnings
from gateway.exchange.mailin import tls_context
from gateway.exchange.mailout import relay_tls_context
from gateway.state.root import GNUPG_HOME, KEYS, VAULT_FILE, Root
from gateway.validate import Standard, load_standard

NONE, UNCHECKED = "none", "not checked"


@dataclass(frozen=True, slots=True)
class Route:
    """One agency: how it receives, whether it can be sealed for now, and who receives its files."""

    agency: str
    name: str
    kind: str
    delivery: str
    recipients: tuple[str, ...]
    active_officers: int | None  # None: the register could not be read
    password: str | None  # AES-ZIP: the current password's id, NONE, or UNCHECKED; None for OpenPGP

    @property
    def readiness(self) -> str:
        """Whether the gateway can seal for this agency now, for people: officers or the current password."""
        if self.password is not None:
            return {NONE: "NO current password", UNCHECKED: "password not checked"}.get(
                self.password, f"password {self.password}"
            )
        if self.active_officers is None:
            return "officers not checked"
        return f"{self.active_officers} active officer(s)" if self.active_officers else "NO active officer"


@dataclass(frozen=True, slots=True)
class Checked:
    """What `check_root` found: every problem names its fix; warnings and what was not checked do not fail."""

    root: str
    routes: tuple[Route, ...] = ()
    folders: int = 0  # agency folders that are there and sound
    missing: tuple[str, ...] = ()
    orphans: tuple[Orphan, ...] = ()
    keys: tuple[KeyWarning, ...] = ()
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    not_checked: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, object]:
        """The JSON form of `check --json`."""
        data = asdict(self)
        data["ok"] = self.ok
        return data


@dataclass
class _Findings:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)


def check_root(path: Path, now: datetime) -> Checked:
    """Check the root at `path` as of `now` without changing anything in it.

    Raises UsageError when `path` is not a gateway root at all (no such folder, no gateway.toml).
    """
    if not path.is_dir():
        raise UsageError(f"{str(path)!r} is not a folder: pass --root DIR (or set IOM_GATEWAY_ROOT) to a gateway root")
    if not (path / CONFIG_NAME).is_file():
        raise UsageError(
            f"no {CONFIG_NAME} in {str(path)!r}: pass --root DIR (or set IOM_GATEWAY_ROOT) to a gateway root"
        )
    found = _Findings()
    standard = _standard(path, found)
    config = _config(path, standard, found) if standard is not None else None
    if standard is None or config is None:
        if standard is None:
            found.not_checked.append(f"{CONFIG_NAME}, folders, officers and keys: the schemas must load first")
        else:
            found.not_checked.append("folders, officers and keys: gateway.toml must load first")
        return Checked(str(path), problems=tuple(found.problems), not_checked=tuple(found.not_checked))
    _ownership(config, standard, found)
    if config.smtp_intake is not None:
        try:
            tls_context(config.smtp_intake)
        except ConfigError as exc:
            found.problems.append(exc.message)
    _relay(path, config, found)
    states = agency_folders(path, config.agencies, create=False)
    missing = tuple(s.folder for s in states if s.state == "missing")
    for state in states:
        if state.state == "refused":
            found.problems.append(state.why)
    for folder in missing:
        found.problems.append(
            f"{folder} is missing: start the daemon or send it SIGHUP (it makes the folders of every agency in "
            f"{CONFIG_NAME}), or run `iom-gateway init`"
        )
    orphans = tuple(orphaned_folders(path, config.agencies))
    for orphan in orphans:
        agency = orphan.folder.split("/", 1)[1]
        if orphan.files:
            found.problems.append(
                f"{orphan.folder} holds {orphan.files} file(s) but agency {agency!r} is not in {CONFIG_NAME}, so "
                "nothing there is ever taken or pulled: add the agency back, or move the files out and remove "
                "the folder"
            )
        else:
            found.warnings.append(
                f"{orphan.folder} is empty and belongs to no agency in {CONFIG_NAME}: remove it (rmdir) or add "
                "the agency back"
            )
    routes, keys = _state(path, config, standard, now, found)
    return Checked(
        str(path),
        routes=routes,
        folders=sum(s.state == "ok" for s in states),
        missing=missing,
        orphans=orphans,
        keys=keys,
        problems=tuple(found.problems),
        warnings=tuple(found.warnings),
        not_checked=tuple(found.not_checked),
    )


def _standard(path: Path, found: _Findings) -> Standard | None:
    try:
        return load_standard(path)
    except SchemaError as exc:
        found.problems.append(exc.message)
        return None


def _config(path: Path, standard: Standard, found: _Findings) -> Config | None:
    try:
        return Config.load(path, columns=frozenset(standard.columns), kinds=standard.kinds)
    except ConfigError as exc:
        found.problems.append(exc.message)
        return None


def _ownership(config: Config, standard: Standard, found: _Findings) -> None:
    """Every agency's kind must hold each required column, or no file it sends can ever be valid."""
    required = [name for name, column in standard.columns.items() if column.required]
    for agency in config.agencies.values():
        for column in required:
            holders = standard.holders_of(column, config.ownership)
            if agency.kind not in holders:
                found.problems.append(
                    f"agency {agency.id!r} (kind {agency.kind}) can never send a valid file: the required column "
                    f"{column} is held only by {', '.join(holders) or 'no kind'}; add {agency.kind!r} to "
                    f"ownership.{column} in {CONFIG_NAME} (or to schemas/ownership.json)"
                )
        if not config.recipients(agency):
            found.problems.append(
                f"agency {agency.id!r} has no recipients: give it a route in {CONFIG_NAME}, or add another agency"
            )


def _state(
    path: Path, config: Config, standard: Standard, now: datetime, found: _Findings
) -> tuple[tuple[Route, ...], tuple[KeyWarning, ...]]:
    """The routes with what each recipient needs to be sealed for, and the keys; from the register and vault."""
    passwords = _passwords(path, config, found)
    if not (path / STATE / DATABASE).is_file():
        found.problems.append(f"{str(path)!r} was never initialised (no {STATE}/{DATABASE}): run `iom-gateway init`")
        found.not_checked.append("officers and keys: the root has no state yet")
        return _routes(config, {}, passwords), ()
    if not (path / KEYS / GNUPG_HOME).is_dir():
        found.problems.append(
            f"{KEYS}/{GNUPG_HOME} is missing: the gateway key and officers' keys are gone; restore {KEYS}/ from backup"
        )
        found.not_checked.append("keys: there is no keyring")
        return _routes(config, {}, passwords), ()
    root = Root(path, config, standard)
    try:
        officers = root.registry.all()
        active = {a: sum(o.active and o.agency == a for o in officers) for a in config.agencies}
        for officer in officers:
            if officer.agency not in config.agencies and officer.active:
                found.warnings.append(
                    f"officer {officer.id} is active for agency {officer.agency!r}, which is not in {CONFIG_NAME}: "
                    f"revoke them (`iom-gateway officers revoke {officer.id}`) or add the agency back"
                )
        if root.journal.current_gateway_key() is None:
            found.problems.append("there is no gateway key: run `iom-gateway init` to make one")
        keys = tuple(key_warnings(root, now))
        holders = {o.fingerprint: o.id for o in officers}
    finally:
        root.close()
    for warning in keys:
        if warning.owner == "gateway":
            fix = "`iom-gateway keys rotate --gateway`, then give partners the new key (`keys export --gateway`)"
        else:
            fix = f"`iom-gateway officers rekey {holders.get(warning.fingerprint, 'O')} --key NEW.asc`"
        line = f"{warning.owner} key {warning.fingerprint}: {warning.problem} ({fix})"
        # a key that still works for a while is a warning; one missing, revoked or expired breaks now
        (found.warnings if warning.problem.startswith("key expires in") else found.problems).append(line)
    routes = _routes(config, active, passwords)
    for route in routes:
        agency = config.agencies[route.agency]
        if agency.delivery is Delivery.GPG and route.active_officers == 0:
            found.problems.append(
                f"{agency.id} has no active officer to encrypt to, so nothing can be delivered to it: register one "
                f"(`iom-gateway officers add --agency {agency.id} ...`)"
            )
        elif route.active_officers == 0:
            found.warnings.append(
                f"{agency.id} has no active officer: it can receive, but cannot submit; register one "
                f"(`iom-gateway officers add --agency {agency.id} ...`) before it sends"
            )
    return routes, keys


def _open_vault(path: Path, config: Config, found: _Findings, needed_for: str) -> Vault | None:
    """The vault, or None with why it was not opened (no passphrase here: not checked; else a problem)."""
    configured = config.vault_passphrase_file
    if config.vault_passphrase_source() == "file" and (configured is None or not configured.is_file()):
        where = f"[vault] passphrase_file {str(configured)!r} does not exist" if configured else "no [vault] file"
        found.not_checked.append(
            f"{needed_for}: no vault passphrase here ({where}, {VAULT_ENV} is not set); "
            "run check where the service's passphrase is available to check them"
        )
        return None
    try:
        return Vault.open(path / KEYS / VAULT_FILE, config.vault_passphrase())
    except GatewayError as exc:
        found.problems.append(exc.message)
        return None


def _passwords(path: Path, config: Config, found: _Findings) -> dict[str, str]:
    """Each AES-ZIP agency's current password id ("none" if it has none), or "not checked" without the passphrase."""
    aes = [a.id for a in config.agencies.values() if a.delivery is Delivery.AES_ZIP]
    if not aes:
        return {}
    vault_path = path / KEYS / VAULT_FILE
    if not vault_path.is_file():
        found.problems.append(
            f"there is no password vault ({KEYS}/{VAULT_FILE}) for the AES-ZIP agencies {', '.join(aes)}: "
            "run `iom-gateway init` to make it and their passwords"
        )
        return dict.fromkeys(aes, NONE)
    vault = _open_vault(path, config, found, f"AES-ZIP passwords of {', '.join(aes)}")
    if vault is None:
        return dict.fromkeys(aes, UNCHECKED)
    current = {r.agency: r.id for r in vault.records() if r.status == CURRENT}
    for agency in aes:
        if agency not in current:
            found.problems.append(
                f"{agency} has no current AES password, so nothing can be delivered to it: run `iom-gateway init` "
                f"(makes one) or `iom-gateway keys import --agency {agency} --password-file F`"
            )
    return {a: current.get(a, NONE) for a in aes}


def _relay(path: Path, config: Config, found: _Findings) -> None:
    """[smtp.relay]: its CA file loads, its login's password is in the vault, and someone gets the admin notices."""
    relay = config.smtp_relay
    mailed = sorted(a.id for a in config.agencies.values() if a.email)
    if relay is None:
        if mailed:
            found.problems.append(
                f"{', '.join(mailed)} {'has' if len(mailed) == 1 else 'have'} email = true but gateway.toml has no "
                "[smtp.relay], so no package is mailed: add [smtp.relay] (host, sender), or remove email = true"
            )
        return
    try:
        relay_tls_context(relay)
    except ConfigError as exc:
        found.problems.append(exc.message)
    if relay.user and (path / KEYS / VAULT_FILE).is_file():
        vault = _open_vault(path, config, found, "the [smtp.relay] password")
        if vault is not None and vault.credential(RELAY_CREDENTIAL) is None:
            found.problems.append(
                f"[smtp.relay] user {relay.user!r} has no password in the vault, so nothing can be sent: run "
                "`iom-gateway keys relay-password --password-file F`"
            )
    notices = config.notices
    if not notices.admins and any(notices.wanted(k) for k in ("late", "key_expiry", "relay_gave_up")):
        found.warnings.append(
            "[smtp.notices] has no admins, so no one is told of late agencies, keys near expiry or mail that "
            'could not be sent: add admins = ["..."]'
        )


def _routes(config: Config, active: dict[str, int], passwords: dict[str, str]) -> tuple[Route, ...]:
    return tuple(_route(config, agency, active, passwords) for agency in config.agencies.values())


def _route(config: Config, agency: Agency, active: dict[str, int], passwords: dict[str, str]) -> Route:
    return Route(
        agency=agency.id,
        name=agency.name,
        kind=agency.kind,
        delivery=agency.delivery.value,
        recipients=tuple(r.id for r in config.recipients(agency)),
        active_officers=active.get(agency.id),
        password=passwords.get(agency.id),
    )
