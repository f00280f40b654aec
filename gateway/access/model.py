"""What every folder and file under a root should be: owner, group, mode and ACL (the access model).

The gateway user (the root's owner) owns everything and alone reads state/, keys/, quarantine/ and
gateway.toml. An agency's officers are its Unix group (`[agencies.X] group`): they pass through the root,
inbox/ and outbox/ (0711: nobody can list them), read their own inbox/<agency>/ and outbox/<agency>/rejected/
(setgid 2750, files 0640) and write their own outbox/<agency>/, its receipts/ and requests/ (setgid 2770, with a default
ACL that gives the gateway user read whatever the uploader's umask). A group missing on the host keeps its
folders private.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.adapters.perms import DROP_DIR, PASSAGE_DIR, PRIVATE_DIR, PRIVATE_FILE, READ_DIR, SHARED_FILE
from gateway.core.model import Agency

INBOX, OUTBOX, REJECTED, RECEIPTS, REQUESTS = "inbox", "outbox", "rejected", "receipts", "requests"
PRIVATE_TOP = ("state", "keys", "quarantine")  # never readable by any group, whatever else changes
# copies of the shipped schemas and samples (no personal data): their files may stay 0644 inside a 0700 folder
PUBLIC_COPIES = ("schemas", "samples")


@dataclass(frozen=True, slots=True)
class Expected:
    """What one entry should be. `group` None: any (the mode gives the group nothing); `owned` False: an
    officer's upload, owned by whoever put it; `upload`: group-owned, nothing for others, the gateway reads it;
    `drop_acl`: the outbox default ACL for the gateway user."""

    mode: int
    group: str | None = None
    owned: bool = True
    upload: bool = False
    drop_acl: bool = False


def expected(parts: tuple[str, ...], is_dir: bool, agencies: Mapping[str, Agency], present: frozenset[str]) -> Expected:
    """The model for the entry at `parts` below the root (() is the root); `present` names the groups the host has."""
    private = Expected(PRIVATE_DIR if is_dir else PRIVATE_FILE)
    if not parts or (len(parts) == 1 and parts[0] in (INBOX, OUTBOX)):
        return Expected(PASSAGE_DIR) if is_dir else private
    if parts[0] not in (INBOX, OUTBOX) or parts[1] not in agencies:
        return private  # state/, keys/, quarantine/, gateway.toml, a folder for no agency: the gateway's alone
    group = agencies[parts[1]].unix_group
    if group not in present:
        return private  # fail closed: `access check` names `groupadd`
    below = parts[2:]
    if parts[0] == INBOX:
        return Expected(READ_DIR if is_dir else SHARED_FILE, group)
    if not below:
        return Expected(DROP_DIR, group, drop_acl=True) if is_dir else private
    if below in ((RECEIPTS,), (REQUESTS,)) and is_dir:  # the gateway's, like the outbox: officers drop into it
        return Expected(DROP_DIR, group, drop_acl=True)
    if below[0] == REJECTED:
        if len(below) == 1:
            return Expected(READ_DIR, group) if is_dir else Expected(PRIVATE_FILE, owned=False, upload=True)
        return Expected(READ_DIR if is_dir else SHARED_FILE, group)
    return Expected(DROP_DIR if is_dir else 0o660, group, owned=False, upload=True)  # what an officer dropped
