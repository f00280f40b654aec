"""The real OpenSSH peers the access sync relies on: a private sshd and the real sftp/ssh clients, against a
chroot made here by hand (not by the gateway), so that what OpenSSH 9.2 itself guarantees is pinned down.

An officer-like account (locked, shell-less, test-only) in a test-only group reaches a chroot holding exactly
inbox/ (a read-only bind mount) and outbox/ (a writable one); its key is served by an AuthorizedKeysCommand
with `restrict`, and a drop-in like the gateway's forces internal-sftp. Real accounts, mounts, sshd: root only.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.sshd_harness import (
    LogSocket,
    Sshd,
    free_port,
    is_root_only_dir,
    make_base,
    mounts_below,
    remove_base,
    sftp,
    ssh,
    ssh_key,
    write_sshd_config,
)

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="needs root: it makes system accounts and bind mounts and runs sshd (CI runs as root)",
    ),
    pytest.mark.slow,
]
TAG = secrets.token_hex(3)
GROUP = f"iomt-{TAG}-g"
USER = f"iomt-{TAG}-o"
SECRET = "id,period\n1,2026-10\n"  # the inbox file's content: test data, never personal data


@dataclass(frozen=True)
class Peer:
    """One running sshd, the chroot it serves and the officer-like account that reaches it."""

    base: Path
    real_inbox: Path
    real_outbox: Path
    keys_command: Path
    key: Path
    pub: Path
    known_hosts: Path
    sshd: Sshd
    gid: int


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


def keys_command_text(pub: Path) -> str:
    # sshd runs it as AuthorizedKeysCommandUser with the user name as $1: the key for USER alone
    return f'#!/bin/sh\n[ "$1" = "{USER}" ] || exit 0\necho \'restrict {pub.read_text().strip()}\'\n'


def drop_in(chroot: Path, keys_command: Path) -> str:
    """The settings the gateway's drop-in will write for an agency's officers."""
    return (
        f"Match User {USER} Group {GROUP}\n"
        f"    ChrootDirectory {chroot}\n"
        # the request names are sftp-server -Q requests' (OpenSSH 9.2): "symlink" is SSH2_FXP_SYMLINK and
        # "hardlink" the hardlink@openssh.com extension behind sftp's `ln`
        "    ForceCommand internal-sftp -l INFO -u 0007 -P symlink,hardlink\n"
        "    AuthenticationMethods publickey\n"
        "    AuthorizedKeysFile none\n"
        f"    AuthorizedKeysCommand {keys_command} %u\n"
        "    AuthorizedKeysCommandUser root\n"
        "    AllowTcpForwarding no\n"
        "    AllowAgentForwarding no\n"
        "    AllowStreamLocalForwarding no\n"
        "    X11Forwarding no\n"
        "    PermitTunnel no\n"
        "    PermitTTY no\n"
        "    PermitUserRC no\n"
    )


def bind(source: Path, target: Path, options: str) -> None:
    # a bind mount takes the source's flags; ro/nosuid/... only hold after a remount of the bind itself
    run("mount", "--bind", str(source), str(target))
    run("mount", "-o", f"remount,bind,{options}", str(target))


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    """A test-only group and account, a bind-mounted chroot, and an sshd serving it; all removed afterwards."""
    for tool in ("useradd", "userdel", "groupadd", "groupdel", "mount", "umount", "sftp", "ssh", "ssh-keygen"):
        assert shutil.which(tool), f"{tool} is missing: run ./scripts/test, whose setup installs it"
    assert Path("/usr/sbin/sshd").exists(), "sshd is missing: run ./scripts/test, whose setup installs openssh-server"
    tmp = tmp_path_factory.mktemp("peer")
    base: Path | None = None
    made_group = made_user = False
    try:
        run("groupadd", "--system", GROUP)
        made_group = True
        gid = int(
            subprocess.run(["getent", "group", GROUP], check=True, capture_output=True, text=True).stdout.split(":")[2]
        )
        run(
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/",
            "--shell",
            "/usr/sbin/nologin",
            "-g",
            GROUP,
            USER,
        )
        made_user = True
        # the gateway root's exchange folders, as the access model leaves them
        real_inbox, real_outbox = tmp / "inbox", tmp / "outbox"
        for folder, mode in ((real_inbox, 0o2750), (real_outbox, 0o2770)):
            folder.mkdir()
            os.chown(folder, 0, gid)
            os.chmod(folder, mode)
        package = real_inbox / "package.csv"
        package.write_text(SECRET)
        os.chown(package, 0, gid)
        os.chmod(package, 0o640)
        base = make_base("sshd")
        chroot = base / "chroot" / "agency"
        (base / "chroot").mkdir(mode=0o755)
        chroot.mkdir()
        os.chown(chroot, 0, gid)
        os.chmod(chroot, 0o750)  # noqa: S103 (the agency's group passes into its chroot)
        for name in ("inbox", "outbox"):
            (chroot / name).mkdir(mode=0o755)
        bind(real_inbox, chroot / "inbox", "ro,nosuid,nodev,noexec")
        bind(real_outbox, chroot / "outbox", "nosuid,nodev,noexec")
        key = tmp / "officer"
        pub = ssh_key(key)
        keys_command = base / "keys-command"
        keys_command.write_text(keys_command_text(pub))
        os.chmod(keys_command, 0o755)  # noqa: S103 (root-owned, as sshd demands)
        port = free_port()
        config = write_sshd_config(base / "sshd", port)
        (base / "sshd" / "sshd_config.d" / "test.conf").write_text(drop_in(chroot, keys_command))
        with Sshd(config, port) as sshd:
            yield Peer(base, real_inbox, real_outbox, keys_command, key, pub, tmp / "known_hosts", sshd, gid)
    finally:
        if base is not None:
            remove_base(base)
        if made_user:
            subprocess.run(["userdel", USER], check=False)
        if made_group:
            subprocess.run(["groupdel", GROUP], check=False)


def account() -> str:
    # in a failure message: whether the test account still exists (another suite on the host may add or
    # remove accounts meanwhile)
    found = subprocess.run(["getent", "passwd", USER], capture_output=True, text=True, check=False)
    return f"--- getent passwd {USER}: {found.stdout.strip() or 'no such account'}"


def sftp_ok(peer: Peer, *commands: str) -> str:
    done = sftp(USER, peer.key, peer.sshd.port, list(commands), peer.known_hosts)
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\n--- sshd log:\n{peer.sshd.log()}\n{account()}"
    return done.stdout


def sftp_fails(peer: Peer, command: str, message: str) -> None:
    done = sftp(USER, peer.key, peer.sshd.port, [command], peer.known_hosts)
    assert done.returncode == 1, f"{command!r} should fail: {done.stdout}{done.stderr}"
    assert message in done.stderr, done.stderr


def test_harness_makes_a_chroot_sshd_accepts(peer: Peer) -> None:
    assert is_root_only_dir(peer.base) and peer.base.parent == Path("/srv")
    chroot = peer.base / "chroot" / "agency"
    assert set(mounts_below(peer.base)) == {chroot / "inbox", chroot / "outbox"}
    done = subprocess.run(
        ["/usr/sbin/sshd", "-T", "-f", str(peer.sshd.config), "-C", f"user={USER},host=h,addr=127.0.0.1"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # the drop-in, included first, is what sshd applies to the account
    assert f"chrootdirectory {chroot}" in done
    assert "forcecommand internal-sftp -l INFO -u 0007 -P symlink,hardlink" in done
    assert "usepam yes" in done and "passwordauthentication no" in done
    status = subprocess.run(["passwd", "-S", USER], check=True, capture_output=True, text=True).stdout.split()
    assert status[1] == "L", f"useradd leaves the account locked: {status}"


def test_officer_puts_into_outbox_and_gets_from_inbox(peer: Peer, tmp_path: Path) -> None:
    upload = tmp_path / "police-2026-10.csv"
    upload.write_text("id\n1\n")
    # the widest mode a client may ask for: the forced umask 0007 cuts it
    os.chmod(upload, 0o666)  # noqa: S103
    fetched = tmp_path / "fetched.csv"
    started = time.monotonic()
    out = sftp_ok(peer, "ls -1 /", f"put {upload} /outbox/", f"get /inbox/package.csv {fetched}")
    elapsed = time.monotonic() - started
    assert re.findall(r"(?m)^(?!sftp>)(\S+)$", out) == ["/inbox", "/outbox"], out
    landed = peer.real_outbox / upload.name
    info = landed.stat()
    assert stat.S_IMODE(info.st_mode) & ~0o660 == 0, oct(info.st_mode)
    assert (info.st_uid, info.st_gid) == (int(subprocess.check_output(["id", "-u", USER])), peer.gid)
    assert landed.read_text() == "id\n1\n"
    assert fetched.read_text() == SECRET
    assert elapsed < 20, f"one sftp session took {elapsed:.2f} s"


def test_officer_cannot_change_inbox_nor_make_links(peer: Peer, tmp_path: Path) -> None:
    upload = tmp_path / "forged.csv"
    upload.write_text("x\n")
    sftp_fails(peer, f"put {upload} /inbox/", "Failure")
    sftp_fails(peer, "rm /inbox/package.csv", "Failure")
    sftp_fails(peer, "rename /inbox/package.csv /inbox/gone.csv", "Failure")
    # links are refused by internal-sftp itself (-P), even in the writable outbox
    sftp_fails(peer, "symlink /inbox /outbox/leak", "Permission denied")
    sftp_ok(peer, f"put {upload} /outbox/mine.csv")
    # a denied extension is not even offered: the client refuses before asking
    sftp_fails(peer, "ln /outbox/mine.csv /outbox/hard.csv", "Server does not support hardlink@openssh.com extension")
    assert (peer.real_inbox / "package.csv").read_text() == SECRET
    assert sorted(p.name for p in peer.real_inbox.iterdir()) == ["package.csv"]
    assert sorted(p.name for p in peer.real_outbox.iterdir() if p.name.startswith(("mine", "hard", "leak"))) == [
        "mine.csv"
    ]


def test_officer_gets_no_shell_command_tty_or_forward(peer: Peer) -> None:
    port = peer.sshd.port
    command = ssh(USER, peer.key, port, peer.known_hosts, command="id; echo ran-a-command")
    assert "uid=" not in command.stdout and "ran-a-command" not in command.stdout, command.stdout
    assert "forced-command (config) 'internal-sftp" in peer.sshd.log()
    tty = ssh(USER, peer.key, port, peer.known_hosts, "-tt", no_tty=False, command="id")
    assert "uid=" not in tty.stdout and "PTY allocation request failed" in tty.stderr, tty.stderr
    forward = ssh(USER, peer.key, port, peer.known_hosts, "-W", f"127.0.0.1:{port}")
    assert forward.returncode == 255 and "administratively prohibited" in forward.stderr, forward.stderr
    assert f"refused local port forward: originator 127.0.0.1 port 65535, target 127.0.0.1 port {port}" in (
        peer.sshd.log()
    )
    remote = ssh(
        USER,
        peer.key,
        port,
        peer.known_hosts,
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        f"127.0.0.1:{free_port()}:127.0.0.1:{port}",
    )
    assert remote.returncode == 255 and "remote port forwarding failed" in remote.stderr, remote.stderr


def test_withdrawn_key_refuses_next_connection(peer: Peer) -> None:
    sftp_ok(peer, "pwd")
    try:
        peer.keys_command.write_text("#!/bin/sh\nexit 0\n")
        done = sftp(USER, peer.key, peer.sshd.port, ["pwd"], peer.known_hosts)
        assert done.returncode == 255 and "Permission denied (publickey)" in done.stderr, done.stderr
    finally:
        # other tests may run after this one in the same worker
        peer.keys_command.write_text(keys_command_text(peer.pub))
    sftp_ok(peer, "pwd")


def test_restrict_locked_accounts_and_chroot_logging_without_the_drop_in(peer: Peer, tmp_path: Path) -> None:
    """What OpenSSH does on its own: a second sshd whose drop-in only serves the key and forces internal-sftp."""
    base = make_base("plain")
    try:
        # internal-sftp logs through syslog(3), which connects to /dev/log only after the chroot: a chroot
        # needs its own dev/log (on a host: a bind mount of the journal's socket) or the session is not logged
        chroot = base / "chroot"
        (chroot / "dev").mkdir(parents=True, mode=0o755)
        port = free_port()
        config = write_sshd_config(base / "sshd", port)
        (base / "sshd" / "sshd_config.d" / "test.conf").write_text(
            f"Match User {USER}\n    ChrootDirectory {chroot}\n    ForceCommand internal-sftp -l INFO\n"
            f"    AuthorizedKeysFile none\n    AuthorizedKeysCommand {peer.keys_command} %u\n"
            "    AuthorizedKeysCommandUser root\n"
        )
        known_hosts = tmp_path / "known_hosts"
        with Sshd(config, port) as sshd, LogSocket(chroot / "dev" / "log") as log:
            sftp_done = sftp(USER, peer.key, port, ["ls /"], known_hosts)
            assert sftp_done.returncode == 0, f"{sftp_done.stderr}\n{sshd.log()}\n{account()}"
            assert "/dev" in sftp_done.stdout  # the price of logging: the officer sees dev/ (log is a socket)
            log.wait_for(f"session opened for local user {USER} from [127.0.0.1]")
            log.wait_for('opendir "/"')
            # `restrict` in the keys command's output alone refuses forwarding and a tty
            forward = ssh(USER, peer.key, port, known_hosts, "-W", f"127.0.0.1:{port}")
            assert forward.returncode == 255 and "administratively prohibited" in forward.stderr, forward.stderr
            tty = ssh(USER, peer.key, port, known_hosts, "-tt", no_tty=False, command="id")
            assert "PTY allocation request failed" in tty.stderr, tty.stderr
            # useradd's '!'-locked account logs in by key with UsePAM yes (above), but not with UsePAM no
            config.write_text(config.read_text().replace("UsePAM yes", "UsePAM no"))
            sshd.reload()
            refused = sftp(USER, peer.key, port, ["ls /"], known_hosts)
            assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr, refused.stderr
            assert f"User {USER} not allowed because account is locked" in sshd.log()
    finally:
        remove_base(base)
