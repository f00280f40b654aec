"""The host's own tools for what `access sync` changes: accounts and groups (shadow's useradd, usermod, groupadd),
bind mounts (util-linux mount), sshd's config check and systemd. Each is a real command run with an argument
list and a bare environment; nothing here decides what should change."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.core.errors import GatewayError

SHADOW = Path("/etc/shadow")
MOUNTINFO = Path("/proc/self/mountinfo")
NOLOGIN = "/usr/sbin/nologin"
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}  # children see no secret, and speak English


class HostError(GatewayError):
    """A system command failed: its message is shown as it printed it."""


def run(*argv: str) -> str:
    """Run the system command `argv` (found on the system PATH) and return its output.

    Raises HostError naming the command and what it printed when it is missing or fails.
    """
    program = shutil.which(argv[0], path=_ENV["PATH"])
    if program is None:
        raise HostError(
            f"{argv[0]} is not installed on this host: install it (Debian: apt-get install "
            f"{_PACKAGES.get(argv[0], argv[0])}) and run the command again"
        )
    done = subprocess.run([program, *argv[1:]], capture_output=True, text=True, env=_ENV, check=False)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        raise HostError(f"{' '.join(argv)} failed: {said}")
    return done.stdout


_PACKAGES = {
    "sshd": "openssh-server",
    "mount": "mount",
    "useradd": "passwd",
    "usermod": "passwd",
    "groupadd": "passwd",
    "systemctl": "systemd",
}


def user(name: str) -> pwd.struct_passwd | None:
    """The account called `name`, or None."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def user_name(uid: int) -> str:
    """The name of the account `uid` (its number if it has none)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group(name: str) -> grp.struct_group | None:
    """The group called `name`, or None."""
    try:
        return grp.getgrnam(name)
    except KeyError:
        return None


def groups_of(account: pwd.struct_passwd) -> set[int]:
    """Every group `account` is in: its primary group and each group that lists it."""
    return set(os.getgrouplist(account.pw_name, account.pw_gid))


@dataclass(frozen=True, slots=True)
class Lock:
    """What /etc/shadow says of an account: no password can log in (`locked`), the account has expired."""

    locked: bool
    expired: bool


def lock_state(name: str) -> Lock:
    """The password lock and expiry of the account `name` (root reads /etc/shadow)."""
    today = (datetime.now(UTC) - datetime(1970, 1, 1, tzinfo=UTC)).days
    for line in SHADOW.read_text(encoding="utf-8").splitlines():
        fields = line.split(":")
        if len(fields) >= 8 and fields[0] == name:
            expire = fields[7]
            return Lock(fields[1].startswith(("!", "*")) or not fields[1], expire.isdigit() and int(expire) <= today)
    return Lock(True, False)


def add_group(name: str) -> None:
    """Make the system group `name`."""
    run("groupadd", "--system", name)


def join_group(account: str, name: str) -> None:
    """Add `account` to the group `name`, keeping its other groups."""
    run("usermod", "--append", "--groups", name, account)


def add_account(name: str, primary_group: str, comment: str) -> None:
    """Make a locked system account with no home, no shell and no group but `primary_group`."""
    run(
        "useradd",
        "--system",
        "--no-create-home",
        "--home-dir",
        "/",
        "--shell",
        NOLOGIN,
        "--gid",
        primary_group,
        "--no-user-group",
        "--comment",
        comment,
        name,
    )
    run("usermod", "--lock", name)  # useradd leaves the password locked already; say so whatever its defaults


def fix_account(name: str, primary_group: str) -> None:
    """Give the account `name` back the form `add_account` made: that group only, no shell, no home, unexpired."""
    run(
        "usermod",
        "--gid",
        primary_group,
        "--groups",
        "",
        "--shell",
        NOLOGIN,
        "--home",
        "/",
        "--expiredate",
        "",
        "--lock",
        name,
    )


def lock_account(name: str) -> None:
    """Lock the account `name` and make it expired, so no method of logging in opens it."""
    run("usermod", "--lock", "--expiredate", "1", "--shell", NOLOGIN, name)


@dataclass(frozen=True, slots=True)
class Mount:
    """A mount point as /proc/self/mountinfo lists it: whether it is read-only, its other options."""

    where: str
    read_only: bool
    options: frozenset[str]


def mounts() -> dict[str, Mount]:
    """Every mount point of this process's namespace, by path (the last mount on a path wins)."""
    found: dict[str, Mount] = {}
    for line in MOUNTINFO.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        where = _unescape(fields[4])
        options = frozenset(fields[5].split(","))
        found[where] = Mount(where, "ro" in options, options)
    return found


def _unescape(field: str) -> str:
    """mountinfo's octal escapes (\\040 for a space) decoded."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


BIND_OPTIONS = "nosuid,nodev,noexec"


def bind(what: Path, where: Path, *, read_only: bool) -> None:
    """Mount the folder `what` on `where` (nosuid, nodev, noexec; read-only if asked)."""
    run("mount", "--bind", "-o", BIND_OPTIONS, str(what), str(where))
    # a bind mount takes its flags from a second, remounting call (mount(8): "bind,ro" needs util-linux 2.27+)
    run("mount", "-o", f"remount,bind,{'ro' if read_only else 'rw'},{BIND_OPTIONS}", str(where))


def unmount(where: Path) -> None:
    """Unmount `where`."""
    run("umount", str(where))


def sshd_check(config: Path) -> str | None:
    """What `sshd -t -f config` says is wrong with `config` (None when it is valid)."""
    try:
        run("sshd", "-t", "-f", str(config))
    except HostError as exc:
        return exc.message
    return None


def fails_as(uid: int, *argv: str) -> str | None:
    """Why the user `uid` (with its own groups) cannot run `argv` to success, as sshd would start it; None if
    it can."""
    account = pwd.getpwuid(uid)
    try:
        done = subprocess.run(
            list(argv),
            user=uid,
            group=account.pw_gid,
            extra_groups=os.getgrouplist(account.pw_name, account.pw_gid),
            capture_output=True,
            text=True,
            env=_ENV,
            cwd="/",
            check=False,
            timeout=60,
        )
    except OSError as exc:
        return f"{exc.strerror}: {exc.filename}"
    if done.returncode != 0:
        return (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
    return None


def systemd_running() -> bool:
    """Whether systemd manages this host (its units can be reloaded and started)."""
    return Path("/run/systemd/system").is_dir()


@contextmanager
def as_user(uid: int) -> Iterator[None]:
    """Be the user `uid` (real and effective ids, its groups) inside the block, so what a root process writes into
    the gateway's state, and every program it starts there (gpg, gpg-agent), is the gateway user's; only the saved
    id stays root's, to come back. Nothing changes when `uid` is already this process's."""
    if uid == os.geteuid():
        yield
        return
    account = pwd.getpwuid(uid)
    saved_groups = os.getgroups()
    saved_gid, saved_uid = os.getresgid(), os.getresuid()
    os.setgroups(os.getgrouplist(account.pw_name, account.pw_gid))
    os.setresgid(account.pw_gid, account.pw_gid, saved_gid[2])
    os.setresuid(uid, uid, saved_uid[2])
    try:
        yield
    finally:
        os.setresuid(*saved_uid)
        os.setresgid(*saved_gid)
        os.setgroups(saved_groups)
