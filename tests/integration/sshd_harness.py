"""Drive the system's own OpenSSH: a private sshd on 127.0.0.1 and a free port, and the real sftp/ssh clients.

Root only (sshd must be root to chroot and to switch to the officer's account). Nothing here touches the
system's /etc/ssh or its running sshd: each test gets its own config folder, host key, pid file and port.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from gateway.adapters.host import mounts

SSHD = Path("/usr/sbin/sshd")  # Debian's openssh-server; scripts/_setup.sh installs it when missing
# ChrootDirectory wants every component root-owned and not group/world writable, which /tmp is not
SRV = Path("/srv")
START_TIMEOUT = 10.0


def _root_dir(path: Path, mode: int = 0o755) -> None:
    # mkdir's mode is masked by the umask, and an existing folder keeps its own: set both explicitly
    path.mkdir(mode=mode, exist_ok=True)
    os.chown(path, 0, 0)
    os.chmod(path, mode)


def privsep_dir() -> None:
    """sshd's privilege-separation chroot, which `sshd -t` wants too; Debian makes it at boot (tmpfiles)
    or when its unit starts, so on a fresh machine where neither ran it is missing."""
    _root_dir(Path("/run/sshd"))


def make_base(tag: str) -> Path:
    """Make a fresh root-owned 0755 folder /srv/iomt-<random hex>-<tag> that can hold chroots (and
    /run/sshd: what is set up here is checked with `sshd -t` before any sshd starts)."""
    privsep_dir()
    if not SRV.exists():
        _root_dir(SRV)
    info = SRV.stat()
    if info.st_uid != 0 or info.st_mode & 0o022:
        raise RuntimeError(f"{SRV} must be owned by root and not group/world writable to hold chroots")
    base = SRV / f"iomt-{secrets.token_hex(4)}-{tag}"
    base.mkdir(mode=0o755)
    _root_dir(base)
    return base


def mounts_below(path: Path) -> list[Path]:
    """List the mount points at or below path, deepest first (the order to unmount them in)."""
    prefix = str(path).rstrip("/") + "/"
    found = [Path(point) for point in mounts() if point == str(path) or point.startswith(prefix)]
    return sorted(found, key=lambda p: (len(p.parts), str(p)), reverse=True)


def remove_base(path: Path) -> None:
    """Lazily unmount everything mounted below path, deepest first, then remove it."""
    for _ in range(5):  # a path mounted over twice shows once per round
        for point in mounts_below(path):
            subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)
    left = mounts_below(path)
    if left:
        # never rmtree through a live bind mount: it would delete the real folder's contents
        raise RuntimeError(f"still mounted below {path}: {', '.join(map(str, left))}")
    shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on just now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_sshd_config(sshd_dir: Path, port: int) -> Path:
    """Make sshd_dir (root 0755) with a host key, sshd_config.d/ and an sshd_config like Debian 12's; return it."""
    _root_dir(sshd_dir)
    _root_dir(sshd_dir / "sshd_config.d")
    key = sshd_dir / "ssh_host_ed25519_key"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = sshd_dir / "sshd_config"
    config.write_text(
        # Debian 12's sshd_config includes the drop-ins first, so that a drop-in's setting wins (sshd keeps
        # the first value it reads for most keywords): the gateway's drop-in is tested the way it will run
        f"Include {sshd_dir}/sshd_config.d/*.conf\n"
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {key}\n"
        f"PidFile {sshd_dir}/sshd.pid\n"
        # Debian's default, and the one that lets the officers' accounts in: they are '!'-locked (useradd's
        # default, `passwd -S` says L) and OpenSSH refuses a locked account only without PAM ("User ... not
        # allowed because account is locked"); with PAM, Debian's pam_unix account stack does not look at the
        # password field, so a locked account still logs in by public key. PAM works in a container too
        # (pam_loginuid does not fail here). test_sshd_harness.py::test_restrict_locked_accounts_and_chroot_
        # logging_without_the_drop_in shows both.
        "UsePAM yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "Subsystem sftp internal-sftp\n"
        "LogLevel VERBOSE\n"
        "StrictModes yes\n"
        "PermitRootLogin no\n"
    )
    os.chown(config, 0, 0)
    os.chmod(config, 0o644)
    return config


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            # sshd sends its version line first: a listening socket that says nothing is not sshd yet
            sock.settimeout(2)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


class Sshd:
    """A real `sshd -D -e` on 127.0.0.1: started on enter, stopped on exit; its stderr kept in a log file."""

    def __init__(self, config: Path, port: int) -> None:
        """Prepare an sshd reading config and listening on port (the config's own Port)."""
        self.config = config
        self.port = port
        self.log_path = config.parent / "sshd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Sshd:
        """Start sshd and wait until it accepts a connection."""
        privsep_dir()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        try:
            self._wait_accepting()
        except BaseException:
            self.stop()  # __exit__ does not run when __enter__ raises
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        """Stop sshd: SIGTERM, then SIGKILL if it does not end within 5 s."""
        self.stop()

    def stop(self) -> None:
        """Stop sshd if it runs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def reload(self) -> None:
        """Make sshd re-read its config (SIGHUP: it re-executes itself) and wait until it accepts again."""
        assert self.process is not None
        # -t first: a config sshd cannot read would make the re-executed sshd exit rather than keep serving
        check = subprocess.run([str(SSHD), "-t", "-f", str(self.config)], check=False, capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd -t refuses {self.config}:\n{check.stderr}")
        self.process.send_signal(signal.SIGHUP)
        # the listener closes while sshd re-executes; give it that moment before polling again
        time.sleep(0.2)
        self._wait_accepting()

    def log(self) -> str:
        """Return everything sshd has logged so far."""
        return self.log_path.read_text(errors="replace")

    def _wait_accepting(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.process.returncode}:\n{self.log()}")
            if _accepts(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"sshd does not accept on 127.0.0.1:{self.port} after {START_TIMEOUT} s:\n{self.log()}")


class LogSocket:
    """A stand-in for /dev/log at path (a Unix datagram socket anyone may write) that keeps what it receives.

    internal-sftp logs through syslog(3), which connects to /dev/log only after sshd has chrooted: put one at
    <chroot>/dev/log to see a chrooted session's log (a host bind-mounts the journal's socket there instead).
    A thread reads it all the time: a datagram socket queues only a few unread messages (net.unix.max_dgram_qlen,
    10 here) before a writer's syslog() blocks, and with it the officer's session.
    """

    def __init__(self, path: Path) -> None:
        """Prepare a socket at path (its folder must exist)."""
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.messages: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> LogSocket:
        """Bind the socket, let every user write to it, and start reading."""
        self.sock.bind(str(self.path))
        os.chmod(self.path, 0o666)  # noqa: S103 (as /dev/log: the chrooted session runs as the officer)
        self.reader.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        """Close the socket (which ends the reader) and remove its file."""
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.reader.join(timeout=5)
        self.path.unlink(missing_ok=True)

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.messages.append(data.decode(errors="replace"))

    def wait_for(self, text: str, timeout: float = 5) -> list[str]:
        """Wait until a message received so far contains text; return them all (raise with them after timeout s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = list(self.messages)
            if any(text in message for message in seen):
                return seen
            time.sleep(0.02)
        raise AssertionError(f"no log message contains {text!r} after {timeout} s; got: {self.messages}")


def ssh_key(path: Path, kind: str = "ed25519") -> Path:
    """Make an unencrypted SSH key pair at path; return the public key's path."""
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "test", "-f", str(path)], check=True)
    return path.with_name(path.name + ".pub")


def _client_options(key: Path, known_hosts: Path) -> list[str]:
    # -F /dev/null: neither the system's nor root's ssh_config may change what the test shows
    return [
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-F",
        "/dev/null",
    ]


def sftp(
    user: str, key: Path, port: int, commands: list[str], known_hosts: Path, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run the real OpenSSH sftp client in batch mode as user with key; a failing command ends the batch.

    Prefix a command with '-' to go on when it fails (sftp's own batch syntax).
    """
    with tempfile.NamedTemporaryFile("w", prefix="iomt-sftp-", suffix=".batch") as batch:
        batch.write("".join(f"{command}\n" for command in commands))
        batch.flush()
        return subprocess.run(
            ["sftp", "-b", batch.name, "-P", str(port), *_client_options(key, known_hosts), f"{user}@127.0.0.1"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def ssh(
    user: str,
    key: Path,
    port: int,
    known_hosts: Path,
    *extra_args: str,
    command: str | None = None,
    timeout: float = 30,
    no_tty: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run the real OpenSSH ssh client as user with key (with -T unless no_tty is False); extra_args go first."""
    args = ["ssh", "-p", str(port), *_client_options(key, known_hosts), *(["-T"] if no_tty else []), *extra_args]
    args.append(f"{user}@127.0.0.1")
    if command is not None:
        args.append(command)
    return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False)


def is_root_only_dir(path: Path) -> bool:
    """Say whether path is a root-owned folder that only root may write (what ChrootDirectory demands)."""
    info = path.lstat()
    return stat.S_ISDIR(info.st_mode) and info.st_uid == 0 and not info.st_mode & 0o022
