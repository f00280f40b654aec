"""`iom-gateway init`: create a gateway root, its gateway key and vault (and, with --demo, the demo partnership).

A first `init` is all-or-nothing: the root is built in a hidden staging folder inside the target and
what it made is moved into place only once everything worked, so a failure (no vault passphrase, a
gpg error, an interrupt) leaves the target as it was, and the next `init` starts afresh with the
gateway.toml as it is then. `init` on an initialised root completes it (folders and passwords for
agencies added since, the demo's officers) and never makes another gateway key.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway import resources
from gateway.adapters.config import CONFIG_NAME, partnership_name
from gateway.adapters.db import DATABASE, MOVED, connect
from gateway.adapters.fsio import atomic_write_bytes, private_dirs
from gateway.adapters.gpg import Fingerprint, Keyring, Purpose
from gateway.adapters.passwords import generate
from gateway.adapters.vault import MIN_PASSPHRASE, Vault
from gateway.core.errors import ConfigError, GatewayError, PolicyError, UsageError
from gateway.core.model import Delivery
from gateway.exchange.folders import agency_folders
from gateway.state.journal import Journal
from gateway.state.registry import Officer, Role, slug
from gateway.state.root import CLAIMS_FILE, DEMO_OFFICERS, GNUPG_HOME, KEYS, SAMPLES, STATE, Root
from gateway.state.subjects import SAR_CREDENTIAL, index_key

log = logging.getLogger(__name__)
DEMO_PASSPHRASE_FILE = "vault-passphrase"  # noqa: S105 (a file name, not a secret)
DEMO_COMMENT = "DEMO KEY, never for real data"
SCHEMAS = "schemas"
STAGING_PREFIX = ".init-"
_STAGING = re.compile(re.escape(STAGING_PREFIX) + r"[a-z0-9_]{8}")  # what tempfile.mkdtemp names


@dataclass(frozen=True, slots=True)
class InitResult:
    root: Path
    gateway_key: str
    officers: tuple[str, ...]
    passwords: tuple[str, ...]


DEMO_PARTNERSHIP = "Demo IOM Partnership"  # [partnership] name in the gateway.toml that init --demo writes


def refuse_real_root(parent: Path, why: str) -> None:
    """Refuse to put a demo (demo keys, sample data) inside a production root: one whose gateway.toml
    names another partnership than the demo's, or whose register holds an officer not made by the demo."""
    config = parent / CONFIG_NAME
    if not config.is_file():
        return
    real = partnership_name(parent) != DEMO_PARTNERSHIP
    if not real and (parent / STATE / DATABASE).is_file():
        with Root.open(parent) as root:
            real = any(not officer.demo for officer in root.registry.all())
    if real:
        raise UsageError(
            f"{str(parent)!r} is a real gateway root (its {CONFIG_NAME} or officer register is not the demo's): " + why
        )


def init_root(path: Path, *, demo: bool, algorithm: str = "ed25519") -> InitResult:
    """Create (or complete) a gateway root at `path`: folders, gateway key, vault; `demo` adds the demo partnership.

    Raises UsageError if `path` is not a folder or has no gateway.toml (and not `demo`); any other
    GatewayError of a first init leaves `path` as it was.
    """
    _check_folder(path)
    if demo:
        refuse_real_root(path, "init --demo would add demo officers and keys to it; run it in a folder of its own")
    if not demo and not (path / CONFIG_NAME).is_file() and not _initialised(path):
        raise UsageError(
            f"no {CONFIG_NAME} in {str(path)!r}: write one (start from the example, {_example_hint()}) "
            "or run `iom-gateway init --demo`"
        )
    with _made_folder(path), _exclusive(path):
        if _initialised(path):
            return _build(path, path, demo=demo, algorithm=algorithm)
        _remove_stale_staging(path)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=path))
        try:
            _seed(path, staging)
            result = _build(staging, path, demo=demo, algorithm=algorithm)
            _stop_agents(staging)
            _publish(staging, path)
            for private in (KEYS, STATE):  # an existing folder merged into keeps its mode: these stay private
                os.chmod(path / private, 0o700)
        except GatewayError as exc:
            # name the files where they would have been, and say that nothing was kept
            named = exc.message.replace(str(staging), str(path))
            exc.message = f"{named} (init made nothing: fix that and run it again)"
            exc.args = (exc.message,)
            raise
        finally:
            _stop_agents(staging)
            shutil.rmtree(staging, ignore_errors=True)
    return result


def gateway_identity(partnership: str, *, demo: bool) -> tuple[str, str, str]:
    """The gateway key's name, e-mail and comment: after [partnership] name; only a demo's says DEMO KEY."""
    return (
        f"{partnership} IOM gateway",
        f"gateway@{slug(partnership) or 'iom'}.invalid",  # .invalid: nobody e-mails the gateway
        DEMO_COMMENT if demo else "",
    )


def _example_hint() -> str:
    return f"shipped as {resources.shipped(resources.EXAMPLE_CONFIG)}"


def _check_folder(path: Path) -> None:
    """Refuse a target that is, or lies below, something other than a folder (exit 2, never a traceback)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            if not candidate.is_dir():
                raise UsageError(
                    f"{str(candidate)!r} is not a folder: pass --root a folder for the gateway root "
                    "(a new one, or an existing root to complete)"
                )
            return


def _initialised(path: Path) -> bool:
    """Whether `path` has a journal with a gateway key (a root `init` finished once)."""
    if (path / STATE / MOVED).is_file():  # its journal moved to PostgreSQL, where [journal] url names it
        with Root.open(path) as root:
            return root.journal.current_gateway_key() is not None
    if not (path / STATE / DATABASE).is_file():
        return False
    connection = connect(path)
    try:
        return Journal(connection, claims=path / STATE / CLAIMS_FILE).current_gateway_key() is not None
    finally:
        connection.close()


@contextmanager
def _made_folder(path: Path) -> Iterator[None]:
    """Create `path` (and missing parents) 0700 for the body; remove what this made if the body fails."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        private_dirs(path)
    except OSError as exc:
        raise UsageError(f"cannot create the gateway root {str(path)!r}: {exc.strerror}") from None
    try:
        yield
    except BaseException:
        for folder in missing:  # deepest first; each is empty once the staging folder is gone
            try:
                folder.rmdir()
            except OSError:
                break
        raise


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the folder itself (a lock file would be left behind): one init at a time,
    so none takes another's staging folder for an interrupted one's."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_stale_staging(path: Path) -> None:
    """Delete what an init killed before it could clean up left (its gpg-agents first)."""
    for entry in path.iterdir():
        if _STAGING.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            log.info("removing %s, left by an init that was interrupted", entry)
            _stop_agents(entry)
            shutil.rmtree(entry)


def _seed(path: Path, staging: Path) -> None:
    """Give the staging folder the root's gateway.toml and schemas: links to the target's own, else the shipped."""
    for name in (CONFIG_NAME, SCHEMAS):
        if (path / name).exists():
            (staging / name).symlink_to(path / name)  # a link: _publish leaves the target's own in place
    if not (staging / CONFIG_NAME).exists():  # init --demo in a folder without one: the example's demo partnership
        atomic_write_bytes(staging / CONFIG_NAME, resources.shipped(resources.EXAMPLE_CONFIG).read_bytes())
    if not (staging / SCHEMAS).exists():
        private_dirs(staging / SCHEMAS)
        for schema in resources.schema_files():
            atomic_write_bytes(staging / SCHEMAS / schema.name, schema.read_bytes(), mode=0o644)


def _build(at: Path, target: Path, *, demo: bool, algorithm: str) -> InitResult:
    """Make or complete the root at `at`, which becomes `target` (the same folder unless `at` is staging)."""
    root = Root.open(at)
    if at != target and root.config.journal.url is not None:
        raise UsageError(
            "init makes a new root's journal in state/gateway.db: remove [journal] url from gateway.toml, run init,"
            " then move the journal with `iom-gateway journal migrate --to URL`"
        )
    try:
        root = _passphrase_from(root, target, demo=demo)
        if demo:
            _demo_passphrase(root)
        _check_vault(root)  # before anything is made: the commonest failure
        for private in (KEYS, STATE):
            (at / private).mkdir(mode=0o700, exist_ok=True)
            os.chmod(at / private, 0o700)
        refused = [f for f in agency_folders(at, root.config.agencies, create=True) if f.state == "refused"]
        if refused:
            raise UsageError(f"cannot make {refused[0].folder}: {refused[0].why}")
        gateway = _gateway_key(root, algorithm, demo=demo)
        passwords = _vault(root)
        _sar_key(root)
        officers = _demo_officers(root, gateway) if demo else ()
    finally:
        root.close()  # ends the log with a signed checkpoint
    if demo:
        for sample in resources.sample_files():
            if not (target / SAMPLES / sample.name).exists():  # as in a checkout, whose samples are the shipped
                private_dirs(at / SAMPLES)
                atomic_write_bytes(at / SAMPLES / sample.name, sample.read_bytes(), mode=0o644)
    return InitResult(target, str(gateway), officers, passwords)


def _passphrase_from(root: Root, target: Path, *, demo: bool) -> Root:
    """A staged root reads a passphrase_file inside the root at its place in `target` (messages name that
    one); only a demo's own, made by this init, is staged with the rest."""
    configured = root.config.vault_passphrase_file
    if root.path == target or configured is None or not configured.is_relative_to(root.path):
        return root
    real = target / configured.relative_to(root.path)
    if demo and not real.exists():
        return root
    return dataclasses.replace(root, config=dataclasses.replace(root.config, vault_passphrase_file=real))


def _demo_passphrase(root: Root) -> None:
    """The demo's vault passphrase, in the configured file when that lies in the root and is missing."""
    secret = root.config.vault_passphrase_file or root.path / KEYS / DEMO_PASSPHRASE_FILE
    if secret.is_relative_to(root.path) and not secret.exists():
        private_dirs(secret.parent)
        atomic_write_bytes(secret, generate(32).reveal().encode())


def _check_vault(root: Root) -> None:
    """Raise ConfigError/VaultError/PolicyError now if the vault will not open or cannot be made (every
    root has one: the subject access index's key is kept there, as are the AES-ZIP agencies' passwords)."""
    if root.vault_path.exists():
        _ = root.vault
        return
    passphrase = root.config.vault_passphrase()
    if len(passphrase.reveal()) < MIN_PASSPHRASE:
        raise PolicyError(
            f"the vault passphrase needs at least {MIN_PASSPHRASE} characters: write a longer one (or set a "
            "longer IOM_GATEWAY_VAULT_PASSPHRASE)"
        )


def _gateway_key(root: Root, algorithm: str, *, demo: bool) -> Fingerprint:
    current = root.journal.current_gateway_key()
    if current is not None:
        return Fingerprint.parse(current)
    name, email, comment = gateway_identity(root.config.partnership, demo=demo)
    fingerprint = root.keyring.generate(name, email, algorithm=algorithm, comment=comment)
    expires = root.keyring.key(fingerprint).expires
    root.journal.add_gateway_key(str(fingerprint), expires.isoformat() if expires else None)
    # entry 1, signed: whoever deletes or rebuilds the log from scratch cannot make another
    root.audit.genesis(lambda data: root.keyring.sign_bytes(data, fingerprint, purpose=Purpose.AUDIT), str(fingerprint))
    root.audit.append("gateway.key.created", actor="admin", fingerprint=str(fingerprint))
    return fingerprint


def _vault(root: Root) -> tuple[str, ...]:
    aes = [a for a in root.config.agencies.values() if a.delivery is Delivery.AES_ZIP]
    if not aes:
        return ()
    if not root.vault_path.exists():
        Vault.create(root.vault_path, root.config.vault_passphrase())
    made = []
    with root.changing_vault() as vault:
        for agency in aes:
            try:
                vault.current(agency.id)
            except GatewayError:
                record = vault.add(agency.id, generate(root.config.passwords.generated_length), datetime.now(UTC))
                root.audit.append("password.created", actor="admin", agency=agency.id, password_id=record.id)
                made.append(record.id)
    return tuple(made)


def _sar_key(root: Root) -> None:
    """The subject access index's key, in the vault (made with it if need be)."""
    if root.vault_path.exists() and root.vault.credential(SAR_CREDENTIAL) is not None:
        return
    root.audit.append("sar.key.created", actor="admin", key_id=index_key(root).id)


def _demo_officers(root: Root, gateway: Fingerprint) -> tuple[str, ...]:
    made = []
    gateway_public = root.keyring.export_public(gateway).encode()
    for agency in root.config.agencies.values():
        for role in (Role.PDO, Role.DO):
            officer_id = f"{agency.id}-{role.value.lower()}"
            if any(o.id == officer_id for o in root.registry.all(agency.id)):
                continue
            home = Keyring(root.demo_home(officer_id))
            fingerprint = home.generate(
                f"Demo {agency.name} {role.value}",
                f"{officer_id}@demo.invalid",
                comment=DEMO_COMMENT,
            )
            home.import_public(gateway_public)
            root.keyring.import_public(home.export_public(fingerprint).encode())
            officer = Officer(
                officer_id,
                agency.id,
                role,
                f"Demo {role.value}, {agency.name}",
                f"{officer_id}@demo.invalid",
                str(fingerprint),
                "active",
                demo=True,
            )
            root.registry.add(officer)
            root.audit.append(
                "officer.added",
                actor="admin",
                agency=agency.id,
                officer=officer_id,
                fingerprint=str(fingerprint),
                demo=True,
            )
            made.append(officer_id)
    return tuple(made)


def _stop_agents(at: Path) -> None:
    """Stop the gpg-agents of the homes under `at`: an agent keeps its home's path, so none may outlive a move."""
    keys = at / KEYS
    officers = sorted((keys / DEMO_OFFICERS).iterdir()) if (keys / DEMO_OFFICERS).is_dir() else []
    for home in [keys / GNUPG_HOME, *officers]:
        if (home / "pubring.kbx").exists():
            Keyring(home).stop_agent()


def _publish(staging: Path, target: Path) -> None:
    """Move what the staging folder made into `target`: every name `target` lacks, folders merged (the
    target's own, with their modes and ACLs, stay). The journal database goes last: until it is in place
    the root is not initialised. Raises ConfigError, before moving anything, if `target` already holds a
    file init made anew."""
    moves: list[tuple[Path, Path]] = []
    clashes: list[str] = []
    _plan(staging, target, staging, moves, clashes)
    if clashes:
        raise ConfigError(
            f"{str(target)!r} is not an initialised root but already holds {', '.join(clashes)}, which init makes: "
            "left by an older init or a command run before init; move them aside"
        )
    journal = staging / STATE / DATABASE
    for source, destination in sorted(moves, key=lambda move: move[0] == journal or journal.is_relative_to(move[0])):
        os.rename(source, destination)


def _plan(folder: Path, target: Path, staging: Path, moves: list[tuple[Path, Path]], clashes: list[str]) -> None:
    for entry in sorted(folder.iterdir()):
        destination = target / entry.relative_to(staging)
        if entry.is_symlink():
            continue  # a seed: the target's own file
        if not (destination.exists() or destination.is_symlink()):
            moves.append((entry, destination))
        elif entry.is_dir() and destination.is_dir() and not destination.is_symlink():
            _plan(entry, target, staging, moves, clashes)
        else:
            clashes.append(repr(str(destination.relative_to(target))))
