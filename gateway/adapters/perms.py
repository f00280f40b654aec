"""Who may read what under the root: the modes, groups and default ACL of the access model, applied by descriptor.

The gateway user owns everything. An agency's officers are its Unix group: they read inbox/<agency>/
and outbox/<agency>/rejected/ (files 0640, folders setgid 2750) and write outbox/<agency>/ (setgid 2770,
with a default ACL so the gateway can read an upload whatever the uploader's umask). Everything else is
the gateway user's alone. A group that does not exist, or that the gateway may not give a file, leaves
the file private (fail closed): `access check` names the fix.
"""

from __future__ import annotations

import grp
import os
import stat
import struct
import time
from contextlib import suppress

SHARED_FILE = 0o640  # a package, manifest, signature or report: the agency's group reads it
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
PASSAGE_DIR = 0o711  # the root, inbox/, outbox/: every officer passes through, none can list
READ_DIR = stat.S_ISGID | 0o750  # inbox/<agency>/, outbox/<agency>/rejected/
DROP_DIR = stat.S_ISGID | 0o770  # outbox/<agency>/: the agency writes, the gateway reads and removes

ACL_DEFAULT = "system.posix_acl_default"
ACL_ACCESS = "system.posix_acl_access"
_ACL_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_UNDEFINED = 0xFFFFFFFF


GROUP_FILE = "/etc/group"
GROUP_MEMO_SECONDS = 60.0
_GROUPS: dict[str, tuple[int | None, float, tuple[int, int, int]]] = {}  # name -> gid, when, /etc/group then


def group_id(name: str) -> int | None:
    """The gid of the Unix group `name`, or None if the host has no such group.

    The answer is remembered for up to a minute while /etc/group is unchanged (each package's files
    ask, and the lookup parses the whole file): groupadd and groupdel are seen at once, a group
    from a directory service (sssd, LDAP) within the minute.
    """
    now, state = time.monotonic(), _group_file_state()
    known = _GROUPS.get(name)
    if known is not None and known[2] == state and now - known[1] < GROUP_MEMO_SECONDS:
        return known[0]
    try:
        gid: int | None = grp.getgrnam(name).gr_gid
    except KeyError:
        gid = None
    _GROUPS[name] = (gid, now, state)
    return gid


def _group_file_state() -> tuple[int, int, int]:
    try:
        info = os.stat(GROUP_FILE)
    except OSError:
        return (0, 0, 0)
    return info.st_ino, info.st_mtime_ns, info.st_size


def share_file(fd: int, gid: int | None) -> bool:
    """Give the open file `fd` the group `gid` and mode 0640; False (left as it is: private) if `gid` is None
    or the gateway may not give it that group (not a member of it)."""
    if gid is None:
        return False
    try:
        os.fchown(fd, -1, gid)
    except PermissionError:
        return False
    os.fchmod(fd, SHARED_FILE)
    return True


def share_dir(fd: int, gid: int | None, mode: int, acl_uid: int | None = None) -> bool:
    """Give the open folder `fd` the group `gid` and `mode` (setgid), and with `acl_uid` a default ACL that lets
    that user read and remove what others create in it; False (left private, 0700) if that is not possible."""
    if gid is None:
        return False
    try:
        os.fchown(fd, -1, gid)
    except PermissionError:
        return False
    for inherited in (ACL_ACCESS, ACL_DEFAULT):  # what a folder made inside an outbox took from its default ACL
        with suppress(OSError):
            os.removexattr(fd, inherited)
    os.fchmod(fd, mode)
    if stat.S_IMODE(os.fstat(fd).st_mode) != stat.S_IMODE(mode):  # setgid silently dropped: not a group member
        os.fchmod(fd, PRIVATE_DIR)
        return False
    if acl_uid is not None:
        os.setxattr(fd, ACL_DEFAULT, encode_acl(default_acl(acl_uid)))
    return True


def default_acl(uid: int) -> list[tuple[int, int, int]]:
    """The default ACL of an outbox: owner, the gateway user and the group rwx, everyone else nothing."""
    return [
        (_USER_OBJ, 7, _UNDEFINED),
        (_USER, 7, uid),
        (_GROUP_OBJ, 7, _UNDEFINED),
        (_MASK, 7, _UNDEFINED),
        (_OTHER, 0, _UNDEFINED),
    ]


def encode_acl(entries: list[tuple[int, int, int]]) -> bytes:
    """The xattr form of a POSIX ACL (as setfacl writes it): version, then (tag, perm, id) entries."""
    return struct.pack("<I", _ACL_VERSION) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


def decode_acl(data: bytes) -> list[tuple[int, int, int]]:
    """The (tag, perm, id) entries of an xattr POSIX ACL (empty for malformed data)."""
    if len(data) < 4 or (len(data) - 4) % 8 or struct.unpack_from("<I", data)[0] != _ACL_VERSION:
        return []
    return [struct.unpack_from("<HHI", data, offset) for offset in range(4, len(data), 8)]


def read_acl(path: str, name: str) -> list[tuple[int, int, int]]:
    """The ACL `name` (ACL_DEFAULT or ACL_ACCESS) of `path` (a link is not followed); empty if it has none."""
    try:
        return decode_acl(os.getxattr(path, name, follow_symlinks=False))
    except OSError:
        return []


def user_can_read(entries: list[tuple[int, int, int]], uid: int) -> bool:
    """Whether an access ACL gives the user `uid` (by a named entry) read, under its mask."""
    named = [perm for tag, perm, who in entries if tag == _USER and who == uid]
    mask = [perm for tag, perm, _ in entries if tag == _MASK]
    return bool(named) and bool(named[0] & 4) and (not mask or bool(mask[0] & 4))
