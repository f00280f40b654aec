"""Audit a root against the access model: every folder and file's owner, group, mode and ACL, each
deviation with the command that fixes it. Nothing is changed."""

from __future__ import annotations

import grp
import os
import shlex
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.access.model import PUBLIC_COPIES, Expected, expected
from gateway.adapters.fsio import shown
from gateway.adapters.host import user_name
from gateway.adapters.perms import ACL_ACCESS, ACL_DEFAULT, default_acl, group_id, read_acl, user_can_read
from gateway.core.errors import GatewayError
from gateway.core.model import Agency


@dataclass(frozen=True, slots=True)
class Deviation:
    """One way the root differs from the model: where (relative to the root, printable), what, and the fix."""

    path: str
    problem: str
    fix: str


def audit(root: Path, agencies: Mapping[str, Agency]) -> list[Deviation]:
    """Every deviation of `root` from the access model (links are reported, never followed)."""
    gateway_uid = os.stat(root).st_uid
    present = frozenset(a.unix_group for a in agencies.values() if group_id(a.unix_group) is not None)
    found = [
        Deviation(
            f"agencies.{a.id}",
            f"the Unix group {a.unix_group!r} does not exist: the folders of agency {a.id!r} stay private",
            f"groupadd {shlex.quote(a.unix_group)} && usermod -aG {shlex.quote(a.unix_group)} {user_name(gateway_uid)}",
        )
        for a in agencies.values()
        if a.unix_group not in present
    ]
    for parts, path, info in _walk(root):
        found.extend(
            _compare(parts, path, info, expected(parts, stat.S_ISDIR(info.st_mode), agencies, present), gateway_uid)
        )
    return found


def private_state(root: Path) -> list[Deviation]:
    """keys/ and state/ (the folders) where another user owns them or their mode or an ACL gives others access."""
    gateway_uid = os.geteuid()
    found = []
    for name in ("keys", "state"):
        path = root / name
        try:
            info = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if info.st_uid != gateway_uid:
            found.append(
                Deviation(
                    str(path),
                    f"owned by {user_name(info.st_uid)}, not the gateway user",
                    f"chown -R {user_name(gateway_uid)} {shlex.quote(str(path))}",
                )
            )
        if stat.S_IMODE(info.st_mode) & 0o077 or read_acl(str(path), ACL_ACCESS):
            found.append(
                Deviation(
                    str(path),
                    f"mode {_mode(info.st_mode)}: readable or writable beyond the gateway user",
                    f"chmod 700 {shlex.quote(str(path))}",
                )
            )
    return found


def _walk(root: Path) -> Iterator[tuple[tuple[str, ...], Path, os.stat_result]]:
    """Every entry under `root` (the root first), by lstat; a folder that is a link is not entered."""
    yield (), root, os.stat(root)
    for top, dirs, files in os.walk(root):
        base = Path(top)
        for name in sorted(dirs + files):
            path = base / name
            try:
                info = os.lstat(path)
            except OSError:
                continue
            yield path.relative_to(root).parts, path, info


def _compare(
    parts: tuple[str, ...], path: Path, info: os.stat_result, want: Expected, gateway_uid: int
) -> list[Deviation]:
    where = "/".join(shown(p) for p in parts) or "."
    quoted = shlex.quote(str(path))
    if stat.S_ISLNK(info.st_mode):
        return [Deviation(where, "a symbolic link: the gateway never follows links", f"rm {quoted}")]
    if stat.S_ISSOCK(info.st_mode) and want.group is None and not want.upload:  # a gpg-agent's, in keys/
        if stat.S_IMODE(info.st_mode) & 0o077:
            return [
                Deviation(
                    where, f"socket mode {_mode(info.st_mode)}: open beyond the gateway user", f"chmod go= {quoted}"
                )
            ]
        return []
    if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        return [Deviation(where, "not a regular file or folder", f"rm {quoted}")]
    found = []
    mode = stat.S_IMODE(info.st_mode)
    if want.owned and info.st_uid != gateway_uid:
        found.append(
            Deviation(
                where,
                f"owned by {user_name(info.st_uid)}, not the gateway user {user_name(gateway_uid)}",
                f"chown {user_name(gateway_uid)} {quoted}",
            )
        )
    if want.group is not None and group_id(want.group) != info.st_gid:
        found.append(
            Deviation(
                where, f"group {_group(info.st_gid)}, not {want.group}", f"chgrp {shlex.quote(want.group)} {quoted}"
            )
        )
    if want.upload:
        if mode & 0o007:
            found.append(Deviation(where, f"mode {_mode(mode)}: open to other agencies", f"chmod o= {quoted}"))
        if info.st_uid != gateway_uid and not user_can_read(read_acl(str(path), ACL_ACCESS), gateway_uid):
            found.append(
                Deviation(
                    where,
                    "the gateway user cannot read it (no ACL entry for it)",
                    f"setfacl -m u:{user_name(gateway_uid)}:rw {quoted}",
                )
            )
    elif stat.S_ISREG(info.st_mode) and parts[0] in PUBLIC_COPIES:
        if mode & 0o022:  # shipped schemas and samples hold no personal data; nobody else may change them
            found.append(
                Deviation(where, f"mode {_mode(mode)}: writable beyond the gateway user", f"chmod go-w {quoted}")
            )
    elif stat.S_ISREG(info.st_mode) and want.group is None:
        if mode & 0o077:  # a private file may be narrower than 0600, never wider
            found.append(
                Deviation(
                    where, f"mode {_mode(mode)}: readable or writable beyond the gateway user", f"chmod go= {quoted}"
                )
            )
    elif mode != want.mode:
        found.append(Deviation(where, f"mode {_mode(mode)}, not {_mode(want.mode)}", f"chmod {want.mode:o} {quoted}"))
    if stat.S_ISDIR(info.st_mode):
        has_default = read_acl(str(path), ACL_DEFAULT)
        if want.drop_acl and sorted(has_default) != sorted(default_acl(gateway_uid)):
            found.append(
                Deviation(
                    where,
                    "no default ACL letting the gateway user read what officers drop",
                    f"setfacl -d -m u::rwx,u:{user_name(gateway_uid)}:rwx,g::rwx,m::rwx,o::- {quoted}",
                )
            )
        elif not want.drop_acl and not want.upload and has_default:
            found.append(Deviation(where, "a default ACL the model does not give it", f"setfacl -k {quoted}"))
    if not want.upload and want.group is None and read_acl(str(path), ACL_ACCESS):
        found.append(Deviation(where, "an ACL giving others access", f"setfacl -b {quoted}"))
    return found


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _mode(mode: int) -> str:
    return f"{stat.S_IMODE(mode):04o}"


class UnsafeStateError(GatewayError):
    """keys/ or state/ is open beyond the gateway user: the daemon will not start."""


def refuse_open_state(root: Path) -> None:
    """Raise UnsafeStateError naming each of keys/ and state/ that is open beyond the gateway user, and its fix."""
    found = private_state(root)
    if found:
        lines = "\n".join(f"  {d.path}: {d.problem}: run {d.fix}" for d in found)
        raise UnsafeStateError(
            f"the daemon will not start: keys/ and state/ must be the gateway user's alone:\n{lines}"
        )
