"""The only reader of gateway.toml and of the environment: everything is checked once, here."""

from __future__ import annotations

import os
import re
import shlex
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gateway.core.errors import ConfigError, GatewayError, UsageError
from gateway.core.marking import Level, Marking, Scheme
from gateway.core.model import AGENCY_ID, Agency, Delivery
from gateway.core.secret import Secret

ROOT_ENV = "IOM_GATEWAY_ROOT"
FAULT_ENV = "IOM_GATEWAY_UNSAFE_FAULT"
VAULT_ENV = "IOM_GATEWAY_VAULT_PASSPHRASE"
CREDENTIAL_NAME = "vault-passphrase"
JOURNAL_CREDENTIAL = "journal-password"  # the PostgreSQL journal's password: a systemd credential, or in the vault
CONFIG_NAME = "gateway.toml"
# a portable Unix group name (useradd/groupadd on Debian accept it): what `[agencies.X] group` may be
UNIX_GROUP = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
EVERY_KIND = "*"


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps that keep a hostile or mistaken file from exhausting the gateway."""

    max_file_bytes: int = 256 * 1024 * 1024
    max_rows: int = 1_000_000
    max_cell_chars: int = 65_536
    max_line_bytes: int = 1_048_576
    max_reported_errors: int = 1_000


@dataclass(frozen=True, slots=True)
class Policy:
    """Partnership choices that loosen a default; each one is named for its risk."""

    unsafe_allow_formula_cells: bool = False


PROTOCOL_MIN_PASSWORD = 8
DEFAULT_FLOOR = Marking(Level.PROTECT, "PERSONAL")


@dataclass(frozen=True, slots=True)
class Passwords:
    """AES-ZIP password settings: the policy floor is the protocol's (Solihull ISP 4.3.2)."""

    min_length: int = PROTOCOL_MIN_PASSWORD
    generated_length: int = 32


@dataclass(frozen=True, slots=True)
class Submissions:
    """How long a CSV may wait for its signature, and how old a signature may be."""

    pairing_timeout_seconds: int = 300
    signature_max_age_hours: int = 72
    clock_skew_seconds: int = 600
    due_day: int = 10  # `status` lists agencies with no submission for the month after this day


@dataclass(frozen=True, slots=True)
class Packages:
    """Packages expire after `expiry_days`; OpenPGP and AES ZIP use zlib level `compress_level`; `status` names
    a package no officer has receipted `receipt_days` after delivery; with `delete_after_receipt`, `purge`
    deletes a package once its agency has receipted it."""

    expiry_days: int = 35
    compress_level: int = 1
    receipt_days: int = 5
    delete_after_receipt: bool = False


WATCHERS = ("inotify", "polling")
MAX_WORKERS = 64


def default_workers() -> int:
    """The cores this process may use: one worker process each (validation and sealing are CPU-bound)."""
    count = getattr(os, "process_cpu_count", os.cpu_count)()  # process_cpu_count: Python 3.13+
    return max(1, min(MAX_WORKERS, count or 1))


@dataclass(frozen=True, slots=True)
class Daemon:
    """How `run` notices files: inotify, or polling for network shares where inotify sees nothing."""

    watcher: str = "inotify"
    settle_seconds: int = 2  # a file is taken once closed and unchanged this long
    poll_seconds: int = 1  # the polling watcher's interval
    rescan_seconds: int = 120  # a full scan catches what an inotify overflow lost
    checkpoint_minutes: int = 60  # the audit log gets a signed checkpoint at least this often...
    checkpoint_entries: int = 100  # ...and at least every this many entries
    workers: int = field(default_factory=default_workers)  # processes that take ready files in parallel


DEFAULT_LEASE_SECONDS = 30


@dataclass(frozen=True, slots=True)
class Journal:
    """Where the journal is: `state/gateway.db` (url None, the default) or the PostgreSQL database at `url`
    (no password in it: that comes from a systemd credential or the vault, `journal_password`)."""

    url: str | None = None
    # how long a node's claim on a submission lasts without renewal (renewed every third of it while the node
    # works): a node paused or cut off longer loses the submission to another, and writes nothing more for it
    lease_seconds: int = DEFAULT_LEASE_SECONDS


POSTGRESQL_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True, slots=True)
class Retention:
    """How long things live (packages: until their manifest's expiry, [packages] expiry_days)."""

    quarantine_days: int = 30
    reports_days: int = 30
    audit_days: int = 2192  # six years


# an account name is the prefix + an officer id; both kept to what useradd accepts everywhere
ACCOUNT_PREFIX = re.compile(r"[a-z_][a-z0-9_-]{0,15}")
HOST_PATH = re.compile(r"/[A-Za-z0-9/._-]*")


@dataclass(frozen=True, slots=True)
class Access:
    """Where `access sync` puts the officers' SFTP access: system accounts `account_prefix` + officer id, the
    sshd drop-in under `sshd_dir`, one chroot per agency under `chroot_dir`, their mount units in `systemd_dir`;
    `log_socket` is bound into each chroot as /dev/log, where internal-sftp writes its log."""

    account_prefix: str = "iom-"
    sshd_dir: Path = Path("/etc/ssh")
    chroot_dir: Path = Path("/srv/iom-gateway")
    systemd_dir: Path = Path("/etc/systemd/system")
    log_socket: Path = Path("/dev/log")  # syslog's socket, which a chrooted internal-sftp logs to


SMTP_EMAIL = re.compile(r"[^@\s<>()\[\],;:\\\"]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
SMTP_HOST = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]")
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SmtpIntake:
    """`[smtp.intake]`: where officers send their monthly file by e-mail (`iom-gateway smtp`)."""

    host: str  # what `listen = "HOST:PORT"` names
    port: int
    address: str  # the one address it accepts mail for
    tls_cert: Path  # PEM certificate chain (relative paths are under the root)
    tls_key: Path  # its PEM private key, 0600
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


RELAY_TLS = ("starttls", "implicit")
DEFAULT_RELAY_MAX_BYTES = 25 * 1024 * 1024  # what most mail systems take in one message
NOTICE_KINDS = ("landed", "rejected", "late", "key_expiry", "relay_gave_up")


@dataclass(frozen=True, slots=True)
class SmtpRelay:
    """`[smtp.relay]`: the mail server the gateway sends packages and notices through (always over TLS)."""

    host: str
    port: int
    tls: str  # "starttls" (port 587) or "implicit" (port 465)
    sender: str  # the From: of everything the gateway sends
    ca_file: Path | None = None  # the CAs the server's certificate is checked against; None: the system's
    user: str = ""  # the login; its password is in the vault (`keys relay-password`); "": no AUTH
    max_message_bytes: int = DEFAULT_RELAY_MAX_BYTES  # a package larger than this is not mailed (the inbox has it)
    give_up_hours: int = 24  # how long a message is retried before the admins are told it was not sent


@dataclass(frozen=True, slots=True)
class Notices:
    """`[smtp.notices]`: which notices (messages carrying no personal data) are sent, and the admins' addresses."""

    admins: tuple[str, ...] = ()
    landed: bool = True  # to a recipient agency's officers: new packages to fetch
    rejected: bool = True  # to the sending officer: a file was rejected (counts and where the report is)
    late: bool = True  # to the admins: an agency has not sent this month's file by the due day
    key_expiry: bool = True  # to the admins: a key expires within the warning period
    relay_gave_up: bool = True  # to the admins: a message could not be sent

    def wanted(self, kind: str) -> bool:
        return bool(getattr(self, kind))


@dataclass(frozen=True, slots=True)
class Config:
    """A checked gateway.toml: build it with `Config.load`."""

    root: Path
    partnership: str
    agencies: Mapping[str, Agency]
    purpose: str = ""
    legal_basis: str = ""
    marking: Marking = DEFAULT_FLOOR
    banner: bool = False  # opt-in: a banner line makes programs (pandas, csv readers) misread the CSV
    passwords: Passwords = field(default_factory=Passwords)
    submissions: Submissions = field(default_factory=Submissions)
    packages: Packages = field(default_factory=Packages)
    vault_passphrase_file: Path | None = None
    limits: Limits = field(default_factory=Limits)
    policy: Policy = field(default_factory=Policy)
    ownership: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    daemon: Daemon = field(default_factory=Daemon)
    retention: Retention = field(default_factory=Retention)
    access: Access = field(default_factory=Access)
    smtp_intake: SmtpIntake | None = None  # no [smtp.intake] section: no e-mail intake
    smtp_relay: SmtpRelay | None = None  # no [smtp.relay] section: nothing is sent by e-mail
    notices: Notices = field(default_factory=Notices)
    journal: Journal = field(default_factory=Journal)

    def agency(self, agency_id: str) -> Agency:
        """The agency called `agency_id`; raise UsageError listing the partnership's agencies."""
        try:
            return self.agencies[agency_id]
        except KeyError:
            known = ", ".join(sorted(self.agencies)) or "none"
            raise UsageError(
                f"agency {agency_id!r} is not in {CONFIG_NAME} (agencies: {known}): use one of those ids"
            ) from None

    def recipients(self, sender: Agency) -> tuple[Agency, ...]:
        """The agencies that receive `sender`'s files: its route, or every other partner."""
        ids = sender.route or tuple(a for a in self.agencies if a != sender.id)
        return tuple(self.agencies[a] for a in ids)

    def vault_passphrase_source(self) -> str:
        """Where the passphrase comes from: "environment", "credential" or "file" (the one a rotation can update)."""
        if os.environ.get(VAULT_ENV):
            return "environment"
        return "credential" if systemd_credential(CREDENTIAL_NAME) is not None else "file"

    def vault_passphrase(self) -> Secret:
        """The vault passphrase: ${VAULT_ENV}, a systemd credential, or [vault] passphrase_file (0600).

        Raises ConfigError naming the three places when none is set, or a file others can read.
        """
        value = os.environ.get(VAULT_ENV)
        if value:
            return Secret(value)
        credential = systemd_credential(CREDENTIAL_NAME)
        if credential is not None:
            return Secret(credential.read_text(encoding="utf-8").strip())
        path = self.vault_passphrase_file
        if path is not None:
            if path.is_file():
                if path.stat().st_mode & 0o077:
                    raise ConfigError(
                        f"{str(path)!r} is readable by others: chmod 600 it (it holds the vault passphrase)"
                    )
                return Secret(path.read_text(encoding="utf-8").strip())
            # the example gateway.toml names keys/vault-passphrase, which only `init --demo` makes
            raise ConfigError(
                f"no vault passphrase: {str(path)!r}, the [vault] passphrase_file in gateway.toml, "
                f"{'is not a file' if path.exists() else 'does not exist'}: make it with "
                f"`(umask 077; head -c 32 /dev/urandom | base64 > {shlex.quote(str(path))})` and keep a copy in the "
                f"partnership's safe, or set {VAULT_ENV}, or pass a systemd credential named {CREDENTIAL_NAME!r}"
            )
        raise ConfigError(
            f"no vault passphrase: set {VAULT_ENV}, pass a systemd credential named {CREDENTIAL_NAME!r}, "
            "or set [vault] passphrase_file in gateway.toml to a 0600 file"
        )

    @classmethod
    def load(cls, root: Path, *, columns: frozenset[str], kinds: frozenset[str]) -> Config:
        """Read `root/gateway.toml`, checking it against the standard's `columns` and agency `kinds`.

        Raises ConfigError listing every mistake with its line and the fix.
        """
        path = root / CONFIG_NAME
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"no {CONFIG_NAME} in {str(root)!r}: pass --root DIR or set {ROOT_ENV} to a gateway root"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{str(path)!r} cannot be read: {exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{str(path)!r}: {exc}: fix the TOML syntax there") from None
        checker = _Checker(path, text)
        config = checker.config(root, data, columns, kinds)
        checker.raise_problems()
        return config


_ZERO_OK = frozenset({"pairing_timeout_seconds", "clock_skew_seconds", "compress_level"})


def _lenient(root: Path, section: str, key: str) -> str | None:
    """`[section] key` of the gateway.toml in `root` if it is a string; None if absent or unparsable."""
    try:
        data = tomllib.loads((root / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    table = data.get(section)
    value = table.get(key) if isinstance(table, dict) else None
    return value if isinstance(value, str) else None


def partnership_name(root: Path) -> str | None:
    """The `[partnership] name` of the gateway.toml in `root`, read leniently; None if absent or unparsable."""
    return _lenient(root, "partnership", "name")


def journal_url(root: Path) -> str | None:
    """The `[journal] url` of the gateway.toml in `root`, read leniently (for sshd's key look-up, which loads
    nothing else): None for the SQLite journal, or when the file cannot be read (Config.load then says why)."""
    url = _lenient(root, "journal", "url")
    return None if url == "sqlite" else url


def journal_url_problem(value: object) -> str | None:
    """What is wrong with `value` as a PostgreSQL journal's URL, or None: a postgresql:// URL naming a database,
    with no password in it (a password in gateway.toml is readable by whoever reads the configuration)."""
    fix = (
        "keep the password out of it: store it with `iom-gateway keys journal-password --password-file FILE`,"
        f" or pass a systemd credential named {JOURNAL_CREDENTIAL!r}"
    )
    if not isinstance(value, str):
        return 'journal.url must be "sqlite" or a postgresql:// URL'
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # noqa: B018 (checks it)
    except ValueError as exc:
        return f"journal.url is not a URL ({exc}): write postgresql://USER@HOST:PORT/DATABASE"
    if parts.scheme not in POSTGRESQL_SCHEMES:
        return 'journal.url must be "sqlite" (state/gateway.db) or postgresql://USER@HOST:PORT/DATABASE'
    if parts.password is not None:
        return f"journal.url holds a password: {fix}"
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    if "password" in query:
        return f"journal.url has a password= parameter: {fix}"
    if not parts.path.strip("/") and "dbname" not in query:
        return "journal.url names no database: write postgresql://USER@HOST:PORT/DATABASE"
    return None


def journal_password(vault_credential: Secret | None) -> Secret | None:
    """The PostgreSQL journal's password: the systemd credential named journal-password, else the one stored in
    the vault (`vault_credential`), else None (libpq then tries ~/.pgpass, or peer authentication)."""
    credential = systemd_credential(JOURNAL_CREDENTIAL)
    if credential is not None:
        return Secret(credential.read_text(encoding="utf-8").strip()) or None
    return vault_credential


def systemd_credential(name: str) -> Path | None:
    """The file of the systemd credential `name` ($CREDENTIALS_DIRECTORY/name), if the service was given one.
    systemd owns its permissions (0400, or 0440 with an ACL from systemd 254)."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    path = Path(credentials) / name if credentials else None
    return path if path is not None and path.is_file() else None


def unsafe_fault_injection() -> str | None:
    """The crash tests' fault spec (IOM_GATEWAY_UNSAFE_FAULT), or None: never set outside a test."""
    return os.environ.get(FAULT_ENV) or None


def resolve_root(arg: str | None) -> Path:
    """The gateway root: --root, else $IOM_GATEWAY_ROOT, else the current folder."""
    chosen = arg or os.environ.get(ROOT_ENV) or "."
    return Path(chosen).resolve()


class _Checker:
    """Collects every problem in one gateway.toml, each with its line number."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = _key_lines(text)
        self.problems: list[tuple[int, str]] = []

    def problem(self, key: str, message: str) -> None:
        line = self.lines.get(key)
        while line is None and "." in key:
            key = key.rsplit(".", 1)[0]
            line = self.lines.get(key)
        self.problems.append((line or 0, message))

    def raise_problems(self) -> None:
        if self.problems:
            listed = "\n".join(
                f"  line {line}: {message}" if line else f"  {message}" for line, message in sorted(self.problems)
            )
            raise ConfigError(f"{str(self.path)!r} has {len(self.problems)} mistake(s):\n{listed}")

    def config(self, root: Path, data: dict[str, Any], columns: frozenset[str], kinds: frozenset[str]) -> Config:
        known = {
            "partnership",
            "marking",
            "passwords",
            "submissions",
            "packages",
            "vault",
            "limits",
            "policy",
            "agencies",
            "ownership",
            "daemon",
            "retention",
            "access",
            "smtp",
            "journal",
        }
        for section in sorted(set(data) - known):
            self.problem(section, f"unknown section [{section}]: remove it or check its spelling")
        partnership = self.table(data, "partnership")
        name = partnership.get("name")
        if not isinstance(name, str) or not name.strip():
            self.problem("partnership", '[partnership] needs name = "…" (the partnership\'s name)')
            name = ""
        for key in sorted(set(partnership) - {"name", "purpose", "legal_basis"}):
            self.problem(
                f"partnership.{key}", f"unknown setting {key!r} in [partnership]: known are name, purpose, legal_basis"
            )
        marking, banner = self.marking(self.table(data, "marking"))
        passwords = self.dataclass_table(Passwords, self.table(data, "passwords"), "passwords")
        if passwords.min_length < PROTOCOL_MIN_PASSWORD:
            self.problem(
                "passwords.min_length", "passwords.min_length cannot go below the protocol's 8 (Solihull 4.3.2)"
            )
        if passwords.generated_length < 24:
            self.problem("passwords.generated_length", "passwords.generated_length must be at least 24")
        packages = self.dataclass_table(Packages, self.table(data, "packages"), "packages")
        if packages.compress_level > 9:
            self.problem("packages.compress_level", "packages.compress_level must be 0 (none) to 9")
        agencies = self.agencies(self.table(data, "agencies"), kinds)
        submissions = self.dataclass_table(Submissions, self.table(data, "submissions"), "submissions")
        if submissions.due_day > 28:
            self.problem("submissions.due_day", "submissions.due_day must be 1 to 28 (every month has that day)")
        return Config(
            root=root,
            partnership=name,
            purpose=str(partnership.get("purpose", "")),
            legal_basis=str(partnership.get("legal_basis", "")),
            marking=marking,
            banner=banner,
            passwords=passwords,
            submissions=submissions,
            packages=packages,
            vault_passphrase_file=self.vault_file(root, self.table(data, "vault")),
            agencies=agencies,
            limits=self.dataclass_table(Limits, self.table(data, "limits"), "limits"),
            policy=self.dataclass_table(Policy, self.table(data, "policy"), "policy"),
            ownership=self.ownership(self.table(data, "ownership"), columns, kinds),
            daemon=self.daemon(self.table(data, "daemon")),
            retention=self.dataclass_table(Retention, self.table(data, "retention"), "retention"),
            access=self.access(self.table(data, "access")),
            smtp_intake=self.smtp(root, self.table(data, "smtp")),
            smtp_relay=self.relay(root, self.table(data, "smtp")),
            notices=self.notices(self.table(data, "smtp")),
            journal=self.journal(self.table(data, "journal")),
        )

    def table(self, data: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.problem(key, f"{key} must be a table, written [{key}]")
            return {}
        return value

    def dataclass_table(self, kind: Any, table: dict[str, Any], section: str) -> Any:
        known = {f.name: f for f in fields(kind) if f.type in ("int", "bool")}
        values: dict[str, Any] = {}
        for key, value in table.items():
            where = f"{section}.{key}"
            if key not in known:
                self.problem(where, f"unknown setting {key!r} in [{section}]: known are {', '.join(known)}")
            elif isinstance(getattr(kind(), key), bool):
                if isinstance(value, bool):
                    values[key] = value
                else:
                    self.problem(where, f"{section}.{key} must be true or false")
            elif isinstance(value, int) and not isinstance(value, bool) and value >= (0 if key in _ZERO_OK else 1):
                values[key] = value
            else:
                lowest = "0 or more" if key in _ZERO_OK else "above 0"
                self.problem(where, f"{section}.{key} must be a whole number {lowest}")
        return kind(**values)

    def agencies(self, table: dict[str, Any], kinds: frozenset[str]) -> dict[str, Agency]:
        agencies: dict[str, Agency] = {}
        if not table:
            self.problem("agencies", "no agencies: add one [agencies.<id>] table per partner agency")
        for agency_id, entry in table.items():
            where = f"agencies.{agency_id}"
            if not AGENCY_ID.fullmatch(agency_id):
                self.problem(where, f"agency id {agency_id!r} must be lower-case letters, digits and '-'")
                continue
            if not isinstance(entry, dict):
                self.problem(where, f"agencies.{agency_id} must be a table [agencies.{agency_id}]")
                continue
            for key in sorted(set(entry) - {"name", "kind", "delivery", "route", "group", "email"}):
                self.problem(f"{where}.{key}", f"unknown setting {key!r} for agency {agency_id!r}")
            name, kind = entry.get("name"), entry.get("kind")
            if not isinstance(name, str) or not name.strip():
                self.problem(where, f'agency {agency_id!r} needs name = "…"')
            if kind not in kinds:
                self.problem(f"{where}.kind", f"agency {agency_id!r} kind must be one of {', '.join(sorted(kinds))}")
            delivery = entry.get("delivery", Delivery.GPG.value)
            if delivery not in {d.value for d in Delivery}:
                self.problem(f"{where}.delivery", f'agency {agency_id!r} delivery must be "gpg" or "aes-zip"')
                delivery = Delivery.GPG.value
            route = entry.get("route", [])
            if not isinstance(route, list) or not all(isinstance(r, str) for r in route):
                self.problem(f"{where}.route", f"agency {agency_id!r} route must be a list of agency ids")
                route = []
            group = entry.get("group", f"iom-{agency_id}")
            if not isinstance(group, str) or not UNIX_GROUP.fullmatch(group):
                self.problem(
                    f"{where}.group",
                    f"agency {agency_id!r} group must be a Unix group name (a lower-case letter or '_', then up to "
                    f"31 lower-case letters, digits, '_' or '-'), e.g. group = \"iom-{agency_id}\"",
                )
                group = f"iom-{agency_id}"
            email = entry.get("email", False)
            if not isinstance(email, bool):
                self.problem(f"{where}.email", f"agency {agency_id!r} email must be true or false")
                email = False
            if isinstance(name, str) and isinstance(kind, str):
                agencies[agency_id] = Agency(agency_id, name, kind, Delivery(delivery), tuple(route), group, email)
        for agency in agencies.values():
            for target in agency.route:
                if target not in agencies or target == agency.id:
                    self.problem(
                        f"agencies.{agency.id}.route",
                        f"agency {agency.id!r} routes to {target!r}, which is not another agency of this partnership",
                    )
        return agencies

    def marking(self, table: dict[str, Any]) -> tuple[Marking, bool]:
        for key in sorted(set(table) - {"scheme", "floor", "descriptor", "banner"}):
            self.problem(f"marking.{key}", f"unknown setting {key!r} in [marking]")
        scheme = table.get("scheme", Scheme.GPMS.value)
        if scheme not in {s.value for s in Scheme}:
            self.problem("marking.scheme", 'marking.scheme must be "gpms" or "gsc"')
            scheme = Scheme.GPMS.value
        floor = table.get("floor", "PROTECT")
        try:
            level = Level.parse(str(floor))
        except GatewayError as exc:
            self.problem("marking.floor", exc.message)
            level = Level.PROTECT
        descriptor = table.get("descriptor", "PERSONAL")
        if not isinstance(descriptor, str) or (descriptor and not descriptor.replace("-", "").isalnum()):
            self.problem("marking.descriptor", "marking.descriptor must be a word such as PERSONAL")
            descriptor = "PERSONAL"
        banner = table.get("banner", False)
        if not isinstance(banner, bool):
            self.problem("marking.banner", "marking.banner must be true or false")
            banner = False
        return Marking(level, descriptor.upper(), Scheme(scheme)), banner

    def daemon(self, table: dict[str, Any]) -> Daemon:
        rest = dict(table)
        watcher = rest.pop("watcher", "inotify")
        if watcher not in WATCHERS:
            self.problem("daemon.watcher", 'daemon.watcher must be "inotify" or "polling" (for network shares)')
            watcher = "inotify"
        workers = rest.pop("workers", None)
        if workers is None:
            workers = default_workers()
        elif isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
            self.problem(
                "daemon.workers",
                f"daemon.workers must be a whole number from 1 to {MAX_WORKERS} (the worker processes that take "
                f"ready files in parallel), not {workers!r}: remove it for one per core ({default_workers()} here)",
            )
            workers = default_workers()
        numbers = self.dataclass_table(Daemon, rest, "daemon")
        return Daemon(
            watcher,
            numbers.settle_seconds,
            numbers.poll_seconds,
            numbers.rescan_seconds,
            numbers.checkpoint_minutes,
            numbers.checkpoint_entries,
            workers,
        )

    def access(self, table: dict[str, Any]) -> Access:
        for key in sorted(set(table) - {f.name for f in fields(Access)}):
            self.problem(
                f"access.{key}",
                f"unknown setting {key!r} in [access]: known are " + ", ".join(f.name for f in fields(Access)),
            )
        defaults = Access()
        prefix = table.get("account_prefix", defaults.account_prefix)
        if not isinstance(prefix, str) or not ACCOUNT_PREFIX.fullmatch(prefix):
            self.problem(
                "access.account_prefix",
                "access.account_prefix must start a Unix user name: a lower-case letter or '_', then up to 15 "
                "lower-case letters, digits, '_' or '-', e.g. account_prefix = \"iom-\"",
            )
            prefix = defaults.account_prefix
        folders: dict[str, Path] = {}
        for name in ("sshd_dir", "chroot_dir", "systemd_dir", "log_socket"):
            value = table.get(name, str(getattr(defaults, name)))
            # these paths go into sshd_config and systemd units: keep them to characters neither has to quote
            if not isinstance(value, str) or not HOST_PATH.fullmatch(value):
                self.problem(
                    f"access.{name}",
                    f"access.{name} must be an absolute path of letters, digits, '/', '.', '_' and '-'",
                )
                value = str(getattr(defaults, name))
            folders[name] = Path(os.path.normpath(value))
        return Access(prefix, **folders)

    def smtp(self, root: Path, table: dict[str, Any]) -> SmtpIntake | None:
        for key in sorted(set(table) - {"intake", "relay", "notices"}):
            self.problem(
                f"smtp.{key}", f"unknown section [smtp.{key}]: known are [smtp.intake], [smtp.relay], [smtp.notices]"
            )
        if "intake" not in table:
            return None
        intake = self.table(table, "intake")
        known = ("listen", "address", "tls_cert", "tls_key", "max_message_bytes")
        for key in sorted(set(intake) - set(known)):
            listed = ", ".join(known)
            self.problem(f"smtp.intake.{key}", f"unknown setting {key!r} in [smtp.intake]: known are {listed}")
        listen = intake.get("listen")
        host, _, port_text = listen.rpartition(":") if isinstance(listen, str) else ("", "", "")
        port = int(port_text) if port_text.isdigit() else 0
        if not SMTP_HOST.fullmatch(host) or not 1 <= port <= 65535:
            self.problem(
                "smtp.intake.listen",
                'smtp.intake.listen must be "HOST:PORT", e.g. listen = "0.0.0.0:587" (submission) or "[::]:587"',
            )
        address = intake.get("address")
        if not isinstance(address, str) or not SMTP_EMAIL.fullmatch(address):
            self.problem(
                "smtp.intake.address",
                "smtp.intake.address must be the one address the gateway takes mail for, "
                'e.g. address = "iom@gateway.example.org"',
            )
            address = ""
        files: dict[str, Path] = {}
        for name in ("tls_cert", "tls_key"):
            value = intake.get(name)
            if not isinstance(value, str) or not value:
                self.problem(
                    f"smtp.intake.{name}",
                    f"smtp.intake.{name} must name a PEM file (the intake speaks only TLS): e.g. {name} = "
                    f'"/etc/iom-gateway/smtp.{"crt" if name == "tls_cert" else "key"}"',
                )
                value = "."
            files[name] = root / value
        limit = intake.get("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1024 <= limit <= 1 << 31:
            self.problem(
                "smtp.intake.max_message_bytes",
                "smtp.intake.max_message_bytes must be a whole number from 1024 to 2 GiB",
            )
            limit = DEFAULT_MAX_MESSAGE_BYTES
        return SmtpIntake(host.strip("[]"), port, address.lower(), files["tls_cert"], files["tls_key"], limit)

    def relay(self, root: Path, table: dict[str, Any]) -> SmtpRelay | None:
        if "relay" not in table:
            return None
        relay = self.table(table, "relay")
        known = ("host", "port", "tls", "ca_file", "sender", "user", "max_message_bytes", "give_up_hours")
        for key in sorted(set(relay) - set(known)):
            listed = ", ".join(known)
            self.problem(f"smtp.relay.{key}", f"unknown setting {key!r} in [smtp.relay]: known are {listed}")
        host = relay.get("host")
        if not isinstance(host, str) or not SMTP_HOST.fullmatch(host):
            self.problem(
                "smtp.relay.host", 'smtp.relay.host must be the mail server\'s name, e.g. host = "smtp.example.org"'
            )
            host = ""
        tls = relay.get("tls", "starttls")
        if tls not in RELAY_TLS:
            self.problem(
                "smtp.relay.tls",
                'smtp.relay.tls must be "starttls" (port 587) or "implicit" (port 465): '
                "the gateway never sends in clear",
            )
            tls = "starttls"
        port = relay.get("port", 465 if tls == "implicit" else 587)
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            self.problem("smtp.relay.port", "smtp.relay.port must be a port number, e.g. port = 587")
            port = 587
        sender = relay.get("sender")
        if not isinstance(sender, str) or not SMTP_EMAIL.fullmatch(sender):
            self.problem(
                "smtp.relay.sender",
                'smtp.relay.sender must be the address the gateway sends from, e.g. sender = "iom@gateway.example.org"',
            )
            sender = ""
        ca_file = relay.get("ca_file")
        if ca_file is not None and (not isinstance(ca_file, str) or not ca_file):
            self.problem("smtp.relay.ca_file", "smtp.relay.ca_file must name a PEM file of CA certificates")
            ca_file = None
        user = relay.get("user", "")
        if not isinstance(user, str) or any(c.isspace() for c in user):
            self.problem("smtp.relay.user", "smtp.relay.user must be the relay login, without spaces")
            user = ""
        numbers = {"max_message_bytes": (DEFAULT_RELAY_MAX_BYTES, 1024, 1 << 31), "give_up_hours": (24, 1, 24 * 14)}
        values: dict[str, int] = {}
        for key, (default, low, high) in numbers.items():
            value = relay.get(key, default)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                self.problem(f"smtp.relay.{key}", f"smtp.relay.{key} must be a whole number from {low} to {high}")
                value = default
            values[key] = value
        return SmtpRelay(
            host.strip("[]"),
            port,
            tls,
            sender,
            None if ca_file is None else root / ca_file,
            user,
            values["max_message_bytes"],
            values["give_up_hours"],
        )

    def notices(self, table: dict[str, Any]) -> Notices:
        notices = self.table(table, "notices")
        if notices and "relay" not in table:
            self.problem("smtp.notices", "[smtp.notices] needs an [smtp.relay] to send them through: add one")
        for key in sorted(set(notices) - {"admins", *NOTICE_KINDS}):
            listed = ", ".join(("admins", *NOTICE_KINDS))
            self.problem(f"smtp.notices.{key}", f"unknown setting {key!r} in [smtp.notices]: known are {listed}")
        admins = notices.get("admins", [])
        if not isinstance(admins, list) or not all(isinstance(a, str) and SMTP_EMAIL.fullmatch(a) for a in admins):
            self.problem(
                "smtp.notices.admins",
                'smtp.notices.admins must be a list of addresses, e.g. admins = ["iom-admin@council.example.org"]',
            )
            admins = []
        switches: dict[str, bool] = {}
        for kind in NOTICE_KINDS:
            value = notices.get(kind, True)
            if not isinstance(value, bool):
                self.problem(f"smtp.notices.{kind}", f"smtp.notices.{kind} must be true or false")
                value = True
            switches[kind] = value
        return Notices(tuple(admins), **switches)

    def journal(self, table: dict[str, Any]) -> Journal:
        for key in sorted(set(table) - {"url", "lease_seconds"}):
            self.problem(f"journal.{key}", f"unknown setting {key!r} in [journal]: known are url, lease_seconds")
        lease = table.get("lease_seconds", DEFAULT_LEASE_SECONDS)
        if isinstance(lease, bool) or not isinstance(lease, int) or not 5 <= lease <= 3600:
            self.problem("journal.lease_seconds", "journal.lease_seconds must be a whole number of seconds, 5 to 3600")
            lease = DEFAULT_LEASE_SECONDS
        value = table.get("url", "sqlite")
        if value == "sqlite":
            return Journal(lease_seconds=lease)
        problem = journal_url_problem(value)
        if problem is not None:
            self.problem("journal.url", problem)
            return Journal(lease_seconds=lease)
        return Journal(value, lease)

    def vault_file(self, root: Path, table: dict[str, Any]) -> Path | None:
        for key in sorted(set(table) - {"passphrase_file"}):
            self.problem(f"vault.{key}", f"unknown setting {key!r} in [vault]")
        value = table.get("passphrase_file")
        if value is None:
            return None
        if not isinstance(value, str):
            self.problem("vault.passphrase_file", "vault.passphrase_file must be a path")
            return None
        return root / value

    def ownership(
        self, table: dict[str, Any], columns: frozenset[str], kinds: frozenset[str]
    ) -> dict[str, tuple[str, ...]]:
        overrides: dict[str, tuple[str, ...]] = {}
        for column, holders in table.items():
            where = f"ownership.{column}"
            if column not in columns:
                self.problem(where, f"[ownership] names unknown column {column!r}: use a Table 1 column name")
                continue
            allowed = kinds | {EVERY_KIND}
            if not isinstance(holders, list) or not all(isinstance(h, str) and h in allowed for h in holders):
                self.problem(where, f"ownership.{column} must be a list of kinds from {', '.join(sorted(allowed))}")
                continue
            overrides[column] = tuple(holders)
        return overrides


def _key_lines(text: str) -> dict[str, int]:
    """Map dotted keys (`limits.max_rows`, `agencies.police`) to their line in a hand-written TOML file."""
    lines: dict[str, int] = {}
    table = ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("["):
            table = line.strip("[] \t").replace('"', "")
            lines.setdefault(table, number)
        elif "=" in line and not line.startswith("#"):
            key = line.split("=", 1)[0].strip().strip('"')
            lines.setdefault(f"{table}.{key}" if table else key, number)
    return lines
