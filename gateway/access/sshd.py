"""The files `access sync` writes for the host's own OpenSSH and systemd: the sshd drop-in, the command that serves
officers' keys from the register, a config to check the drop-in with before it is installed, and the mount units
that put each agency's folders into its chroot. Text only: nothing here touches the host."""

from __future__ import annotations

import fnmatch
import glob
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path

from gateway.adapters.config import Access
from gateway.core.model import Agency

DROP_IN = Path("sshd_config.d") / "iom-gateway.conf"
KEYS_COMMAND = "iom-gateway-authorized-keys"
INBOX, OUTBOX, DEV = "inbox", "outbox", "dev"
# what an officer may never ask internal-sftp for: a link could lead the gateway, which reads the outbox outside
# the chroot, somewhere else
REFUSED_REQUESTS = "symlink,hardlink"
HEADER = "# Written by `iom-gateway access sync` for the gateway root {root}: do not edit; run it again instead.\n"


def drop_in(root: Path, agencies: Iterable[Agency], access: Access, gateway_user: str) -> str:
    """The sshd_config drop-in: each agency's officers (its group, accounts with the prefix) get SFTP only,
    chrooted into their agency's folders, by public key from the register only, with no forwarding of any kind."""
    keys = access.sshd_dir / KEYS_COMMAND
    blocks = [HEADER.format(root=root)]
    for agency in sorted(agencies, key=lambda a: a.id):
        blocks.append(
            f"""
Match User {access.account_prefix}* Group {agency.unix_group}
    ChrootDirectory {access.chroot_dir / agency.id}
    ForceCommand internal-sftp -l INFO -f AUTHPRIV -u 0007 -P {REFUSED_REQUESTS}
    AuthenticationMethods publickey
    PubkeyAuthentication yes
    PasswordAuthentication no
    KbdInteractiveAuthentication no
    AuthorizedKeysFile none
    AuthorizedKeysCommand {keys} %u %U
    AuthorizedKeysCommandUser {gateway_user}
    AllowTcpForwarding no
    AllowAgentForwarding no
    AllowStreamLocalForwarding no
    X11Forwarding no
    PermitTunnel no
    PermitTTY no
    PermitUserRC no
    PermitListen none
    PermitOpen none
    GatewayPorts no
"""
        )
    return "".join(blocks)


def keys_command(root: Path, python: str) -> str:
    """The script sshd runs (as the gateway user) to ask the register for an account's key: sshd wants a
    root-owned command, which the gateway's own installation (a venv, a checkout) need not be."""
    argv = [python, "-I", "-m", "gateway.access.keys", str(root)]
    return "#!/bin/sh\n" + HEADER.format(root=root) + f'exec {" ".join(shlex.quote(a) for a in argv)} "$1" "$2"\n'


def check_config(main: Path, installed: Path, candidate: Path) -> str | None:
    """The text of sshd's main config `main` with `candidate` read where the drop-in `installed` would be, for
    `sshd -t`; None if no Include of `main` reads `installed` (the drop-in would have no effect)."""
    lines, found = [], False
    for line in main.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words and words[0].lower() == "include":
            kept: list[str] = []
            for pattern in words[1:]:
                absolute = pattern if pattern.startswith("/") else str(main.parent / pattern)
                if fnmatch.fnmatch(str(installed), absolute):
                    found = True
                    others = sorted(p for p in glob.glob(absolute) if p != str(installed))
                    kept.extend([*others, str(candidate)])
                else:
                    kept.append(absolute)
            lines.append("Include " + " ".join(kept) if kept else "")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n" if found else None


def unit_name(where: Path) -> str:
    """systemd's name for the mount unit of `where` (as `systemd-escape --path --suffix=mount` prints it)."""
    path = "/".join(part for part in where.parts[1:] if part)
    out = []
    for index, byte in enumerate(path.encode("utf-8")):
        char = chr(byte)
        if char == "/":
            out.append("-")
        elif byte < 0x80 and (char.isalnum() or char in ":_.") and not (index == 0 and char == "."):
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return ("".join(out) or "-") + ".mount"


def mount_unit(root: Path, what: Path, where: Path, *, read_only: bool, agency: Agency) -> str:
    """A systemd mount unit binding `what` (an agency's folder) on `where` (in its chroot) at every boot."""
    role = "inbox (read-only)" if read_only else ("outbox" if where.name == OUTBOX else "syslog socket")
    options = ("ro," if read_only else "") + "bind,nosuid,nodev,noexec"
    after = "After=systemd-journald-dev-log.socket\n" if role == "syslog socket" else ""  # it makes the socket
    return (
        HEADER.format(root=root)
        + f"""[Unit]
Description=iom-gateway: the {role} of {agency.id} in its SFTP chroot
Before=ssh.service
{after}RequiresMountsFor={what}

[Mount]
What={what}
Where={where}
Type=none
Options={options}

[Install]
WantedBy=local-fs.target
"""
    )


def chroot_mounts(
    root: Path, agencies: Mapping[str, Agency], access: Access, log_socket: Path | None
) -> list[tuple[Agency, Path, Path, bool]]:
    """(agency, what, where, read_only) for everything bound into each agency's chroot: its outbox and inbox, and
    `log_socket` (the host's syslog socket, resolved) as dev/log, which a chrooted internal-sftp logs to."""
    mounts = []
    for agency in sorted(agencies.values(), key=lambda a: a.id):
        chroot = access.chroot_dir / agency.id
        mounts += [(agency, root / folder / agency.id, chroot / folder, folder == INBOX) for folder in (OUTBOX, INBOX)]
        if log_socket is not None:
            mounts.append((agency, log_socket, chroot / DEV / "log", False))
    return mounts
