"""`access sync`: make the host match the officer register, so each active officer reaches their agency's folders
over the system's own OpenSSH (internal-sftp, chrooted, public key only) and nothing else.

The plan is worked out first, reading the host and the register and changing nothing; any refusal (an account the
gateway did not make, a chroot path sshd would reject, a drop-in `sshd -t` fails) stops it before the first
change. Each change is then made and recorded as an audit event, in order: groups, the agencies' folders, the
chroots and their bind mounts, the key command, the sshd drop-in, the accounts. A second run finds nothing to do.
"""

from __future__ import annotations

import functools
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from gateway.access.model import INBOX, OUTBOX, RECEIPTS, REJECTED, REQUESTS
from gateway.access.sshd import (
    DEV,
    DROP_IN,
    KEYS_COMMAND,
    check_config,
    chroot_mounts,
    drop_in,
    keys_command,
    mount_unit,
    unit_name,
)
from gateway.adapters import host
from gateway.adapters.perms import DROP_DIR, PASSAGE_DIR, READ_DIR, share_dir, share_file
from gateway.core.errors import PolicyError
from gateway.core.model import Agency
from gateway.state.accounts import LOCKED, OPEN, Account, Accounts
from gateway.state.registry import Officer
from gateway.state.root import Root

MAX_ACCOUNT_NAME = 32  # useradd's limit on Debian and Ubuntu
CHROOT_MODE = 0o750  # root:<agency group>: sshd wants it root's and not writable by the group
DEV_MODE = 0o711  # a chroot's dev/: internal-sftp reaches dev/log in it; nobody lists it


@dataclass(frozen=True, slots=True)
class Change:
    """One step of the plan: what it does (printed), the audit event that records it, and the step itself."""

    line: str
    event: str
    details: dict[str, object]
    apply: Callable[[], None]
    after: Callable[[], None] | None = None  # what the register learns once it is done (as the gateway user)


@dataclass(slots=True)
class Plan:
    """Every change the host needs, what was skipped and why (warnings), what the admin should do (notes)."""

    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)


class SyncRefused(PolicyError):
    """access sync will not change the host: each reason is named with its fix; nothing was changed."""


def require_root() -> None:
    """Raise SyncRefused unless this process is root (before the root is even opened: its owner may not be)."""
    if os.geteuid() != 0:
        raise SyncRefused(
            "access sync makes system accounts and mounts and writes sshd's config: run it as root "
            "(sudo iom-gateway access sync); nothing changed"
        )


def plan(root: Root) -> Plan:
    """Everything `access sync` would change on this host for `root`; raise SyncRefused (nothing changed)
    listing every reason it cannot."""
    require_root()
    planner = _Planner(root)
    planner.groups()
    planner.folders()
    planner.chroots()
    planner.sshd()
    planner.accounts()
    if planner.result.refusals:
        listed = "\n".join(f"  {reason}" for reason in planner.result.refusals)
        raise SyncRefused(f"access sync changed nothing:\n{listed}")
    return planner.result


def apply(root: Root, changes: list[Change]) -> Iterator[Change]:
    """Make each change in order, recording it as an audit event before the next; yield each once done."""
    gateway_uid = os.stat(root.path).st_uid
    for change in changes:
        change.apply()
        with host.as_user(gateway_uid):
            if change.after is not None:
                change.after()
            root.audit.append(change.event, actor="admin", **change.details)  # type: ignore[arg-type]
        yield change
    with host.as_user(gateway_uid):  # the checkpoint's gpg and its agent: the gateway user's, not root's
        root.checkpoint_audit()


class _Planner:
    """Works out the plan for one root, reading the host and the register (as the gateway user) only."""

    def __init__(self, root: Root) -> None:
        self.root = root
        self.path = root.path
        self.agencies = sorted(root.config.agencies.values(), key=lambda a: a.id)
        self.access = root.config.access
        self.gateway_uid = os.stat(root.path).st_uid
        self.gateway = host.user_name(self.gateway_uid)
        self.result = Plan()

    def add(self, change: Change) -> None:
        self.result.changes.append(change)

    # --- groups and the agencies' folders ---------------------------------------------------------------

    def groups(self) -> None:
        gateway = host.user(self.gateway)
        for agency in self.agencies:
            name = agency.unix_group
            found = host.group(name)
            if found is None:
                self.add(
                    Change(
                        f"make the group {name} for the officers of {agency.id}",
                        "access.group.made",
                        {"agency": agency.id, "group": name},
                        functools.partial(host.add_group, name),
                    )
                )
            member = found is not None and (
                self.gateway in found.gr_mem or (gateway is not None and gateway.pw_gid == found.gr_gid)
            )
            if self.gateway_uid != 0 and not member:  # root may give any file any group
                note = (
                    "restart the gateway's daemon (systemctl restart iom-gateway) so it runs in its new groups: "
                    "until then it keeps what it writes for those agencies private"
                )
                if note not in self.result.notes:
                    self.result.notes.append(note)
                self.add(
                    Change(
                        f"add the gateway user {self.gateway} to {name}, so it can give {agency.id}'s files that group",
                        "access.group.joined",
                        {"agency": agency.id, "group": name, "user": self.gateway},
                        functools.partial(host.join_group, self.gateway, name),
                    )
                )

    def folders(self) -> None:
        """Folders made while an agency's group did not exist stayed private (0700): share them once it does."""
        for agency in self.agencies:
            folders = [
                (self.path / INBOX / agency.id, READ_DIR),
                (self.path / OUTBOX / agency.id, DROP_DIR),
                (self.path / OUTBOX / agency.id / REJECTED, READ_DIR),
                (self.path / OUTBOX / agency.id / RECEIPTS, DROP_DIR),
                (self.path / OUTBOX / agency.id / REQUESTS, DROP_DIR),
            ]
            group = host.group(agency.unix_group)
            if group is not None and all(
                _is(path, stat.S_IFDIR, mode, uid=None, gid=group.gr_gid) for path, mode in folders
            ):
                continue
            self.add(
                Change(
                    f"share {agency.id}'s inbox/, outbox/, rejected/, receipts/ and requests/ with its group "
                    f"{agency.unix_group}",
                    "access.folders.shared",
                    {"agency": agency.id, "group": agency.unix_group},
                    functools.partial(_share, self.path, agency, folders, self.gateway_uid),
                )
            )

    # --- chroots and their mounts -------------------------------------------------------------------------

    def chroots(self) -> None:
        base = self.access.chroot_dir
        for ancestor in [*reversed(base.parents), base]:
            try:
                info = os.lstat(ancestor)
            except FileNotFoundError:
                break
            if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
                self.result.refusals.append(
                    f"{ancestor}: not a folder; [access] chroot_dir must be a path of real folders"
                )
            elif info.st_uid != 0 or info.st_mode & 0o022:
                self.result.refusals.append(
                    f"{ancestor}: sshd's ChrootDirectory needs every folder above a chroot owned by root and writable "
                    f"by root alone (this one: mode {stat.S_IMODE(info.st_mode):04o}, uid {info.st_uid}): set "
                    "[access] chroot_dir elsewhere (never under /tmp), e.g. /srv/iom-gateway"
                )
        if not _real_dir(base, 0o755, None):
            self.add(
                Change(
                    f"make the chroots' folder {base} (root, 0755)",
                    "access.chroot.made",
                    {"path": str(base)},
                    functools.partial(_make_dir, base, 0o755, 0),
                )
            )
        for agency in self.agencies:
            chroot = base / agency.id
            group = host.group(agency.unix_group)
            if group is None or not _real_dir(chroot, CHROOT_MODE, group.gr_gid):
                self.add(
                    Change(
                        f"make {agency.id}'s chroot {chroot} (root:{agency.unix_group}, {CHROOT_MODE:04o})",
                        "access.chroot.made",
                        {"agency": agency.id, "path": str(chroot)},
                        functools.partial(_make_chroot, chroot, agency),
                    )
                )
        log = self.log_socket()
        if log is not None:
            for agency in self.agencies:
                dev = base / agency.id / DEV
                if not _real_dir(dev, DEV_MODE, 0):
                    self.add(
                        Change(
                            f"make {dev} (root, {DEV_MODE:04o}: its log socket only, which officers cannot list)",
                            "access.chroot.made",
                            {"agency": agency.id, "path": str(dev)},
                            functools.partial(_make_dir, dev, DEV_MODE, 0),
                        )
                    )
        mounted = host.mounts()
        for agency, what, where, read_only in chroot_mounts(self.path, self.root.config.agencies, self.access, log):
            self.mount(agency, what, where, read_only, mounted.get(str(where)))

    def log_socket(self) -> Path | None:
        """The host's syslog socket (links resolved), which each chroot gets as dev/log; None, with a warning,
        if the host has none."""
        configured = self.access.log_socket
        resolved = Path(os.path.realpath(configured))
        try:
            if stat.S_ISSOCK(os.stat(resolved).st_mode):
                return resolved
        except OSError:
            pass
        self.result.warnings.append(
            f"no syslog socket at {configured} ([access] log_socket): the officers' logins are logged by sshd, but "
            "not their file operations (internal-sftp logs to /dev/log inside the chroot); start journald or "
            "rsyslog and run access sync again"
        )
        return None

    def mount(self, agency: Agency, what: Path, where: Path, read_only: bool, mounted: host.Mount | None) -> None:
        unit = unit_name(where)
        text = mount_unit(self.path, what, where, read_only=read_only, agency=agency)
        unit_path = self.access.systemd_dir / unit
        wants = self.access.systemd_dir / "local-fs.target.wants" / unit
        role = "inbox, read-only" if read_only else ("outbox" if where.name == OUTBOX else "syslog socket")
        details: dict[str, object] = {"agency": agency.id, "what": str(what), "where": str(where), "unit": unit}
        if _read(unit_path) != text or not (wants.is_symlink() and os.readlink(wants) == str(unit_path)):
            self.add(
                Change(
                    f"write the mount unit {unit_path} ({agency.id}'s {role}) and enable it at boot",
                    "access.mount.unit",
                    details,
                    functools.partial(_write_unit, unit_path, wants, text),
                )
            )
        if mounted is not None and not _same_dir(what, where):
            self.result.refusals.append(
                f"{where}: something else is mounted there: umount {where} and run access sync again"
            )
        elif mounted is None or mounted.read_only != read_only or not {"nosuid", "nodev", "noexec"} <= mounted.options:
            self.add(
                Change(
                    f"bind-mount {what} on {where} ({role}, nosuid, nodev, noexec)",
                    "access.mount.made",
                    details,
                    functools.partial(_mount, what, where, read_only, mounted is not None),
                )
            )

    # --- sshd ---------------------------------------------------------------------------------------------

    def sshd(self) -> None:
        main = self.access.sshd_dir / "sshd_config"
        if not main.is_file():
            self.result.refusals.append(
                f"{main} does not exist: install OpenSSH's server (apt-get install openssh-server) or set "
                "[access] sshd_dir to the folder of its sshd_config"
            )
            return
        command = self.access.sshd_dir / KEYS_COMMAND
        script = keys_command(self.path, sys.executable)
        # sshd runs the key command as the gateway user: an installation that user cannot run (a venv under
        # /root, say) would refuse every officer without a word
        problem = host.fails_as(self.gateway_uid, sys.executable, "-I", "-m", "gateway", "--version")
        if problem is not None:
            self.result.refusals.append(
                f"sshd would run {command} as {self.gateway}, who cannot run {sys.executable} ({problem}): install "
                f"iom-gateway where {self.gateway} can run it (e.g. in a venv under /opt) and run access sync with "
                "that installation"
            )
        if _read(command) != script or not _real_file(command, 0o755):
            self.add(
                Change(
                    f"write {command}, which sshd runs as {self.gateway} to ask the register for an officer's key",
                    "access.keys_command.installed",
                    {"path": str(command)},
                    functools.partial(_write_root_file, command, script, 0o755),
                )
            )
        installed = self.access.sshd_dir / DROP_IN
        text = drop_in(self.path, self.agencies, self.access, self.gateway)
        if _read(installed) == text and _real_file(installed, 0o644):
            return
        problem = _check_drop_in(main, installed, text)
        if problem is not None:
            self.result.refusals.append(problem)
            return
        self.add(
            Change(
                f"install the sshd drop-in {installed} (sshd -t accepts it)",
                "access.sshd.installed",
                {"path": str(installed), "agencies": [a.id for a in self.agencies]},
                functools.partial(_install_drop_in, installed, text),
            )
        )
        if host.systemd_running():
            self.result.notes.append(
                "sshd was reloaded (systemctl try-reload-or-restart ssh): new connections read the drop-in"
            )
        else:
            self.result.notes.append("sshd reads the new drop-in when it reloads: send it SIGHUP, or restart it")

    # --- accounts -----------------------------------------------------------------------------------------

    def accounts(self) -> None:
        with host.as_user(self.gateway_uid):
            officers = self.root.registry.all()
            made = Accounts(self.root.db).all()
        wanted: set[str] = set()
        for officer in officers:
            if not officer.active or officer.agency not in self.root.config.agencies:
                continue
            name = self.access.account_prefix + officer.id
            if officer.ssh_key is None:
                self.result.warnings.append(
                    f"officer {officer.id!r} ({officer.agency}) has no SSH key, so no account: add one with "
                    f"`iom-gateway officers ssh-key {officer.id} FILE` and run access sync again"
                )
                continue
            if len(name) > MAX_ACCOUNT_NAME:
                self.result.warnings.append(
                    f"officer {officer.id!r}: the account name {name!r} is longer than {MAX_ACCOUNT_NAME} characters,"
                    " which useradd refuses, so no account: choose a shorter [access] account_prefix"
                )
                continue
            wanted.add(name)
            self.account(name, officer, self.root.config.agencies[officer.agency], made.get(name))
        for name, account in made.items():
            if name not in wanted:
                self.lock(name, account)

    def account(self, name: str, officer: Officer, agency: Agency, ours: Account | None) -> None:
        found = host.user(name)
        details: dict[str, object] = {"agency": agency.id, "officer": officer.id, "account": name}
        if found is None:
            self.add(
                Change(
                    f"make the account {name} for {officer.id!r}: locked, no shell, in {agency.unix_group} only",
                    "access.account.made",
                    details,
                    functools.partial(host.add_account, name, agency.unix_group, f"iom-gateway officer {officer.id}"),
                    functools.partial(self.record, name, officer.id, agency.id, OPEN),
                )
            )
            return
        if ours is None or ours.uid != found.pw_uid or ours.officer != officer.id:
            self.result.refusals.append(
                f"the system account {name!r} (uid {found.pw_uid}) exists and iom-gateway did not make it: rename or "
                "remove it, or choose another [access] account_prefix"
            )
            return
        group = host.group(agency.unix_group)
        lock = host.lock_state(name)
        if (
            group is not None
            and found.pw_gid == group.gr_gid
            and host.groups_of(found) == {group.gr_gid}
            and found.pw_shell == host.NOLOGIN
            and found.pw_dir == "/"
            and lock.locked
            and not lock.expired
            and ours.status == OPEN
        ):
            return
        self.add(
            Change(
                f"restore the account {name}: locked, no shell, in {agency.unix_group} only, not expired",
                "access.account.fixed",
                details,
                functools.partial(host.fix_account, name, agency.unix_group),
                functools.partial(self.record, name, officer.id, agency.id, OPEN),
            )
        )

    def lock(self, name: str, account: Account) -> None:
        """The account of an officer revoked (or gone from the register): locked and expired, its key unserved."""
        found = host.user(name)
        if found is None or found.pw_uid != account.uid:
            return  # gone from the host, or another account now: nothing of ours to lock
        lock = host.lock_state(name)
        if account.status == LOCKED and lock.locked and lock.expired:
            return
        self.add(
            Change(
                f"lock the account {name}: officer {account.officer!r} is revoked or no longer registered",
                "access.account.locked",
                {"agency": account.agency, "officer": account.officer, "account": name},
                functools.partial(host.lock_account, name),
                functools.partial(self.record, name, account.officer, account.agency, LOCKED),
            )
        )

    def record(self, name: str, officer: str, agency: str, status: str) -> None:
        made = host.user(name)
        assert made is not None  # noqa: S101 (just made or changed)
        Accounts(self.root.db).record(Account(name, made.pw_uid, officer, agency, status))


# --- the steps themselves -------------------------------------------------------------------------------


def _share(root: Path, agency: Agency, folders: list[tuple[Path, int]], gateway_uid: int) -> None:
    group = host.group(agency.unix_group)
    assert group is not None  # noqa: S101 (made by an earlier step)
    gid = group.gr_gid
    for passage in (root, root / INBOX, root / OUTBOX):
        _fix_dir(passage, gateway_uid, lambda fd: os.fchmod(fd, PASSAGE_DIR))
    for path, mode in folders:
        with suppress(FileExistsError):
            path.mkdir(mode=0o700)
        acl = gateway_uid if mode == DROP_DIR else None  # the outbox and its receipts/
        _fix_dir(path, gateway_uid, functools.partial(share_dir, gid=gid, mode=mode, acl_uid=acl))
        if mode == READ_DIR:  # what the gateway wrote there before: packages, manifests, reports
            for entry in os.scandir(path):
                if entry.is_file(follow_symlinks=False):
                    fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                    try:
                        share_file(fd, gid)
                    finally:
                        os.close(fd)


def _fix_dir(path: Path, owner: int, fix: Callable[[int], object]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchown(fd, owner, -1)  # a folder root made just now: the gateway user's, like every folder of the root
        fix(fd)
    finally:
        os.close(fd)


def _make_chroot(chroot: Path, agency: Agency) -> None:
    group = host.group(agency.unix_group)
    assert group is not None  # noqa: S101 (made by an earlier step)
    _make_dir(chroot, CHROOT_MODE, group.gr_gid)


def _mount(what: Path, where: Path, read_only: bool, replace: bool) -> None:
    if replace:  # ours, with the wrong flags
        host.unmount(where)
    if what.is_dir():
        _make_dir(where, 0o755, 0)  # the mount point; once mounted it shows the agency's folder
    else:  # the syslog socket: bound on an empty file
        fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        os.close(fd)
    host.bind(what, where, read_only=read_only)


def _write_unit(unit_path: Path, wants: Path, text: str) -> None:
    _make_dir(unit_path.parent, 0o755, 0)
    _write_root_file(unit_path, text, 0o644)
    _make_dir(wants.parent, 0o755, 0)
    with suppress(FileNotFoundError):
        wants.unlink()
    wants.symlink_to(unit_path)  # what `systemctl enable` makes for WantedBy=local-fs.target
    if host.systemd_running():
        host.run("systemctl", "daemon-reload")


def _same_dir(a: Path, b: Path) -> bool:
    try:
        one, two = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (one.st_dev, one.st_ino) == (two.st_dev, two.st_ino)


def _is(path: Path, kind: int, mode: int, *, uid: int | None = 0, gid: int | None = None) -> bool:
    """Whether `path` itself (a link is not followed) is of `kind` (stat.S_IFDIR, S_IFREG) with exactly `mode`'s
    permission bits, and owned by `uid` and group `gid` where given (`uid` root's unless None)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    return (
        stat.S_IFMT(info.st_mode) == kind
        and stat.S_IMODE(info.st_mode) == stat.S_IMODE(mode)
        and (uid is None or info.st_uid == uid)
        and (gid is None or info.st_gid == gid)
    )


def _real_dir(path: Path, mode: int, gid: int | None) -> bool:
    """Whether `path` is a folder (not a link) of root's with `mode` (and group `gid`)."""
    return _is(path, stat.S_IFDIR, mode, gid=gid)


def _real_file(path: Path, mode: int) -> bool:
    """Whether `path` is a regular file (not a link) of root's with `mode`."""
    return _is(path, stat.S_IFREG, mode)


def _make_dir(path: Path, mode: int, gid: int) -> None:
    """`path` a real folder owned by root and `gid` with `mode` (missing parents made root 0755)."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with suppress(FileExistsError):
        path.mkdir(mode=0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchown(fd, 0, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, UnicodeDecodeError):
        return None


def _write_root_file(path: Path, text: str, mode: int) -> None:
    """Replace `path` with `text` atomically, root's with `mode`: written beside it under a dot name ending in
    .tmp, which neither sshd's `*.conf` nor systemd reads."""
    _make_dir(path.parent, 0o755, 0) if not path.parent.is_dir() else None
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fchown(out.fileno(), 0, 0)
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _check_drop_in(main: Path, installed: Path, text: str) -> str | None:
    """Why sshd would not take the drop-in `text` at `installed` under the main config `main` (None: it would)."""
    with tempfile.TemporaryDirectory(prefix="iom-gateway-sshd-") as scratch:
        candidate = Path(scratch) / "iom-gateway.conf"
        candidate.write_text(text, encoding="utf-8")
        checked = check_config(main, installed, candidate)
        if checked is None:
            return (
                f"{main} does not include {installed.parent}/*.conf, so sshd would never read the drop-in: add "
                f"`Include {installed.parent}/*.conf` as its first line"
            )
        config = Path(scratch) / "sshd_config"
        config.write_text(checked, encoding="utf-8")
        said = host.sshd_check(config)
    if said is None:
        return None
    return f"sshd -t refuses the drop-in {installed}, so nothing was installed: {said}"


def _install_drop_in(installed: Path, text: str) -> None:
    _write_root_file(installed, text, 0o644)
    if host.systemd_running():
        # only if it runs: with socket activation (Ubuntu 24.04's ssh.socket) each connection reads the config anew
        host.run("systemctl", "try-reload-or-restart", "ssh.service")
