"""Partners over SFTP: `access sync` makes the host match the register, and the system's own OpenSSH (a real
sshd on 127.0.0.1, the real sftp and ssh clients with each officer's own key) lets each officer reach their
agency's outbox, rejected reports and inbox, and nothing else, while the real daemon delivers.

Real system accounts and groups with test-only names, real bind mounts, removed afterwards: root only.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.adapters.perms import ACL_DEFAULT
from tests.conftest import REPO
from tests.integration.daemon_harness import (
    GOOD,
    INVALID,
    Daemon,
    cli,
    cli_output,
    copy_of,
    home,
    packages,
    short_dir,
    wait_until,
)
from tests.integration.gpg_helpers import gpg
from tests.integration.sshd_harness import (
    LogSocket,
    Sshd,
    free_port,
    make_base,
    remove_base,
    sftp,
    ssh,
    ssh_key,
    write_sshd_config,
)

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="needs root: it makes system accounts, groups and bind mounts and runs sshd (CI runs as root)",
    ),
    pytest.mark.slow,
]
TAG = f"iomt{secrets.token_hex(3)}"  # this run's test-only prefix for groups and accounts
AGENCIES = ("police", "probation", "council", "housing", "treatment", "yos")
WITH_KEYS = ("police-do", "police-pdo", "probation-do", "housing-do")  # probation-pdo has none: a warning


@dataclass
class Host:
    """The synced gateway host: its root, sshd, officers' SSH keys, and what the first sync printed."""

    root: Path
    base: Path
    sshd: Sshd
    keys: dict[str, Path]
    known_hosts: Path
    log: LogSocket
    first_sync: str
    first_warnings: str

    def account(self, officer: str) -> str:
        return f"{TAG}-{officer}"

    def sftp(self, officer: str, *commands: str) -> subprocess.CompletedProcess[str]:
        return sftp(self.account(officer), self.keys[officer], self.sshd.port, list(commands), self.known_hosts)

    def ssh(self, officer: str, *args: str, command: str | None = None) -> subprocess.CompletedProcess[str]:
        return ssh(self.account(officer), self.keys[officer], self.sshd.port, self.known_hosts, *args, command=command)


def configured(root: Path, base: Path, accounts: str = f"{TAG}-") -> None:
    """The root's agencies get this run's groups; [access] points at the test's own sshd and chroot folders."""
    toml = root / "gateway.toml"
    text = re.sub(
        r"(?m)^\[agencies\.([a-z]+)\]$", lambda m: f'{m.group(0)}\ngroup = "{TAG}-{m.group(1)}"', toml.read_text()
    )
    text += (
        f'\n[access]\naccount_prefix = "{accounts}"\nsshd_dir = "{base}/ssh"\nchroot_dir = "{base}/chroot"\n'
        f'systemd_dir = "{base}/systemd"\nlog_socket = "{base}/log.socket"\n'
    )
    toml.write_text(text)


def private_keyrings(root: Path) -> None:
    for path in (root / "keys").rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(stat.S_IMODE(path.stat().st_mode) & 0o700)


def sync(root: Path, *args: str, python: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`iom-gateway access sync` as a real process, as an admin runs it (with `python`'s installation)."""
    return subprocess.run(
        [str(python or sys.executable), "-m", "gateway", "--root", str(root), "access", "sync", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def remove_accounts_and_groups() -> None:
    """Every account and group of this run's prefix, gone (accounts first: a group cannot go while primary)."""
    for line in Path("/etc/passwd").read_text().splitlines():
        if line.startswith(TAG):
            subprocess.run(["userdel", line.split(":")[0]], check=False, capture_output=True)
    for line in Path("/etc/group").read_text().splitlines():
        if line.startswith(TAG):
            subprocess.run(["groupdel", line.split(":")[0]], check=False, capture_output=True)


@pytest.fixture(scope="module", autouse=True)
def _this_runs_accounts_and_groups_removed() -> Iterator[None]:
    yield
    remove_accounts_and_groups()


@pytest.fixture(scope="module")
def host(routed_template: Path) -> Iterator[Host]:
    base = make_base("sftp")
    daemon: Daemon | None = None
    try:
        with copy_of(routed_template) as root:
            configured(root, base)
            # made in-process under pytest's umask, the template's gpg keyring backups are 0644 (in 0700 folders);
            # `init` from the command line runs under umask 077 and leaves none (test_process_hardening)
            private_keyrings(root)
            keys: dict[str, Path] = {}
            for officer in WITH_KEYS:
                public = ssh_key(base / f"key-{officer}")
                keys[officer] = public.with_suffix("")
                assert cli(root, "officers", "ssh-key", officer, str(public)) == 0
            port = free_port()
            config = write_sshd_config(base / "ssh", port)
            with LogSocket(base / "log.socket") as log:  # the host's /dev/log (journald's, on Debian)
                first = sync(root, "--yes")
                assert first.returncode == 0, first.stdout + first.stderr
                with Sshd(config, port) as sshd:
                    daemon = Daemon(root).ready()
                    yield Host(root, base, sshd, keys, base / "known_hosts", log, first.stdout, first.stderr)
                    assert daemon.stop() == 0, daemon.text()
    finally:
        if daemon is not None and daemon.process.poll() is None:
            daemon.process.kill()
        remove_base(base)


def ours(base: Path) -> list[str]:
    """This run's accounts and groups and the mounts under `base` (other suites change the host's meanwhile)."""
    files = ("/etc/passwd", "/etc/group", "/etc/shadow", "/proc/self/mountinfo")
    return [line for name in files for line in Path(name).read_text().splitlines() if TAG in line or str(base) in line]


def shadow(account: str) -> list[str]:
    return next(
        line.split(":") for line in Path("/etc/shadow").read_text().splitlines() if line.startswith(account + ":")
    )


def test_sync_makes_one_locked_shell_less_account_per_officer_with_a_key_in_its_agency_group_only(host: Host) -> None:
    for officer in WITH_KEYS:
        account = pwd.getpwnam(host.account(officer))
        agency = officer.split("-")[0]
        group = grp.getgrnam(f"{TAG}-{agency}")
        assert (account.pw_gid, account.pw_shell, account.pw_dir) == (group.gr_gid, "/usr/sbin/nologin", "/")
        assert os.getgrouplist(account.pw_name, account.pw_gid) == [group.gr_gid], "in another group too"
        assert shadow(account.pw_name)[1].startswith("!"), "a password could log in"
        assert f"make the account {account.pw_name} for {officer!r}" in host.first_sync
    with pytest.raises(KeyError):
        pwd.getpwnam(host.account("probation-pdo"))
    assert (
        "WARNING: officer 'probation-pdo' (probation) has no SSH key, so no account: add one with "
        "`iom-gateway officers ssh-key probation-pdo FILE`" in host.first_warnings
    )
    events = [json.loads(line)["event"] for line in (host.root / "state" / "audit.jsonl").read_text().splitlines()]
    assert events.count("access.account.made") == len(WITH_KEYS) and events.count("access.mount.made") == 3 * len(
        AGENCIES
    )  # outbox, inbox, dev/log
    assert "access.sshd.installed" in events and events.count("access.group.made") == len(AGENCIES)
    drop_in = (host.base / "ssh" / "sshd_config.d" / "iom-gateway.conf").read_text()
    assert drop_in.count("ForceCommand internal-sftp") == len(AGENCIES) and "AllowTcpForwarding no" in drop_in


def test_a_second_sync_and_a_dry_run_change_nothing(host: Host) -> None:
    before = ours(host.base)
    audit = (host.root / "state" / "audit.jsonl").read_text()
    again = sync(host.root, "--yes")
    assert again.returncode == 0 and "0 change(s)" in again.stdout and "matches the register" in again.stdout, again
    assert (host.root / "state" / "audit.jsonl").read_text() == audit
    # a new officer's key: the dry run shows the account it would make, and makes none
    public = ssh_key(host.base / "key-council-do")
    assert cli(host.root, "officers", "ssh-key", "council-do", str(public)) == 0
    dry = sync(host.root, "--dry-run")
    assert dry.returncode == 0 and "1 change(s) (dry run)" in dry.stdout and "nothing changed" in dry.stdout, dry
    assert f"make the account {TAG}-council-do" in dry.stdout
    after = ours(host.base)
    assert after == before


@pytest.fixture(scope="module")
def delivered(host: Host) -> Path:
    """A police officer `put`s a CSV and its signature over SFTP with default modes; the running daemon delivers.
    The probation package's path."""
    local = short_dir()
    try:
        signature = local / (GOOD.name + ".sig")
        gpg(home(host.root, "police-do"), "--output", str(signature), "--detach-sign", str(GOOD))
        put = host.sftp("police-do", f"put {signature} /outbox/", f"put {GOOD} /outbox/")
        assert put.returncode == 0, put.stderr
        # internal-sftp logged the upload through the chroot's dev/log: who, which file (never its content)
        logged = host.log.wait_for(f'close "/outbox/{GOOD.name}"')
        assert any(f"session opened for local user {host.account('police-do')}" in line for line in logged), logged
        wait_until(lambda: bool(packages(host.root, "probation") and packages(host.root, "housing")), 60, "delivery")
    finally:
        shutil.rmtree(local)
    return packages(host.root, "probation")[0]


def test_police_uploads_the_daemon_delivers_probation_and_housing_fetch_and_open_their_packages(
    host: Host, delivered: Path
) -> None:
    local = short_dir()
    try:
        package = packages(host.root, "probation")[0].name
        manifest = next(p.name for p in (host.root / "inbox" / "probation").iterdir() if p.name.endswith(".json"))
        got = host.sftp("probation-do", "lcd " + str(local), f"get /inbox/{package}", f"get /inbox/{manifest}*")
        assert got.returncode == 0, got.stderr
        checked = subprocess.run(  # the manifest's signature, checked with the gateway's public key alone
            [
                "gpg",
                "--homedir",
                str(home(host.root, "probation-do")),
                "--batch",
                "--verify",
                str(local / (manifest + ".sig")),
                str(local / manifest),
            ],
            capture_output=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr
        plain = subprocess.run(
            ["gpg", "--homedir", str(home(host.root, "probation-do")), "--batch", "-d", str(local / package)],
            capture_output=True,
            check=False,
        )
        assert plain.returncode == 0, plain.stderr
        header = GOOD.read_bytes().splitlines()[0]
        assert header in plain.stdout.splitlines()
        assert package in (local / manifest).read_text()

        zipped = packages(host.root, "housing")[0].name
        assert host.sftp("housing-do", "lcd " + str(local), f"get /inbox/{zipped}").returncode == 0
        password = local / "housing-password"
        assert cli(host.root, "keys", "export", "--agency", "housing", "--password", "--to", str(password)) == 0
        opened = subprocess.run(
            ["7z", "x", f"-p{password.read_text().strip()}", f"-o{local / 'zip'}", "-y", str(local / zipped)],
            capture_output=True,
            check=False,
        )
        assert opened.returncode == 0, opened.stdout
        extracted = next((local / "zip").iterdir()).read_bytes()
        assert header in extracted.splitlines()
    finally:
        shutil.rmtree(local)


def test_police_reads_the_rejection_report_of_a_bad_file(host: Host) -> None:
    local = short_dir()
    try:
        bad = local / "police-bad-2026-10.csv"
        bad.write_bytes(INVALID.read_bytes())
        gpg(home(host.root, "police-do"), "--output", str(bad) + ".sig", "--detach-sign", str(bad))
        assert host.sftp("police-do", f"put {bad}.sig /outbox/", f"put {bad} /outbox/").returncode == 0
        rejected = host.root / "outbox" / "police" / "rejected"
        wait_until(lambda: any(p.name.endswith(".report.txt") for p in rejected.iterdir()), 60, "the report")
        report = next(p.name for p in rejected.iterdir() if p.name.endswith(".report.txt"))
        got = host.sftp("police-do", f"lcd {local}", "ls /outbox/rejected", f"get /outbox/rejected/{report}")
        assert got.returncode == 0 and report in got.stdout, got.stderr
        assert (local / report).read_text() == (rejected / report).read_text()
        assert "police-bad-2026-10.csv" in (local / report).read_text()
        # probation cannot see it, even knowing its name: its chroot has no police folders at all
        assert host.sftp("probation-do", f"lcd {local}", f"get /outbox/rejected/{report} x").returncode != 0
    finally:
        shutil.rmtree(local)


def test_probation_reaches_only_its_own_folders_and_cannot_change_a_package(host: Host, delivered: Path) -> None:
    package = delivered
    before = package.read_bytes()
    listing = host.sftp("probation-do", "ls -a /")
    assert listing.returncode == 0, listing.stderr
    assert sorted(listing.stdout.splitlines()[1].split()) == ["/.", "/..", "/dev", "/inbox", "/outbox"], listing.stdout
    assert host.sftp("probation-do", "ls /dev").returncode != 0, "dev/ (its log socket only) was listed"
    root = host.root
    for path in (
        f"{root}/gateway.toml",
        f"{root}/state/gateway.db",
        f"{root}/keys/gnupg/pubring.kbx",
        "/../outbox/police",
        "/../police/inbox",
        "/etc/passwd",
    ):
        got = host.sftp("probation-do", f"get {path} /dev/null")
        assert got.returncode != 0 and "not found" in got.stderr, (path, got.stderr)
    for command in (f"ls {root}", f"ls {root}/quarantine", "ls /../police", "ls /../../"):
        got = host.sftp("probation-do", command)
        seen = {name.rsplit("/", 1)[-1] for line in got.stdout.splitlines()[1:] for name in line.split()}
        assert got.returncode != 0 or seen <= {".", "..", "dev", "inbox", "outbox"}, (command, got.stdout)

    attempts = host.sftp(
        "probation-do",
        f"-put {GOOD} /inbox/planted.csv",
        f"-rm /inbox/{package.name}",
        f"-rename /inbox/{package.name} /inbox/moved",
        f"-rename /inbox/{package.name} /outbox/moved",
        f"-symlink /inbox/{package.name} /outbox/link",
        "-symlink /../../.. /outbox/up",
        f"-ln /inbox/{package.name} /outbox/hard",
        f"-chmod 666 /inbox/{package.name}",
        "-mkdir /inbox/x",
    )
    assert attempts.returncode == 0, attempts.stderr  # each '-' command may fail; the session itself went on
    refusals = attempts.stderr.strip().splitlines()
    assert len(refusals) == 9, refusals  # one refusal for each attempt
    assert sum("symlink" in line and "Permission denied" in line for line in refusals) == 2, refusals
    assert "Server does not support hardlink@openssh.com extension" in refusals, refusals
    assert package.read_bytes() == before and stat.S_IMODE(package.stat().st_mode) == 0o640
    inbox = sorted(p.name for p in package.parent.iterdir())
    assert "planted.csv" not in inbox and "moved" not in inbox and "x" not in inbox
    assert not [p for p in (root / "outbox" / "probation").iterdir() if p.name in ("moved", "link", "up", "hard")]


def test_no_shell_no_command_no_port_forwarding(host: Host) -> None:
    shell = host.ssh("probation-do", "-tt")
    assert shell.returncode != 0 and "PTY allocation request failed" in shell.stderr, shell
    command = host.ssh("probation-do", command="id; cat /etc/passwd")
    assert "uid=" not in command.stdout and "root:" not in command.stdout, command.stdout
    forward = host.ssh("probation-do", "-W", f"127.0.0.1:{host.sshd.port}")
    assert forward.returncode != 0 and "SSH-" not in forward.stdout, forward
    assert "prohibited" in forward.stderr or "open failed" in forward.stderr, forward.stderr
    remote = host.ssh(
        "probation-do", "-o", "ExitOnForwardFailure=yes", "-N", "-R", f"127.0.0.1:{free_port()}:127.0.0.1:22"
    )
    assert remote.returncode != 0 and "forwarding failed" in remote.stderr, remote.stderr


def test_a_revoked_officers_next_connection_is_refused_and_sync_locks_the_account(host: Host) -> None:
    assert host.sftp("police-pdo", "ls /").returncode == 0
    assert cli(host.root, "officers", "revoke", "police-pdo", "--yes") == 0
    refused = host.sftp("police-pdo", "ls /")
    assert refused.returncode != 0 and "Permission denied (publickey)" in refused.stderr, refused.stderr
    locked = sync(host.root, "--yes")
    assert locked.returncode == 0 and f"lock the account {TAG}-police-pdo" in locked.stdout, locked.stdout
    fields = shadow(f"{TAG}-police-pdo")
    assert fields[1].startswith("!") and fields[7] == "1", fields  # locked and expired since 2 January 1970
    assert host.sftp("police-do", "ls /").returncode == 0, "another officer of the agency lost access"


def test_access_check_passes_on_the_synced_root_and_names_five_breakages(
    host: Host, delivered: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = host.root
    code, out = cli_output(root, capsys, "access", "check")
    assert code == 0, out
    package = delivered
    breakages = [
        (package, lambda: os.chmod(package, 0o644), "mode 0644, not 0640"),
        (root / "state", lambda: os.chmod(root / "state", 0o750), "state: mode 0750, not 0700"),  # noqa: S103
        (root / "inbox" / "housing", lambda: os.chown(root / "inbox" / "housing", -1, 0), "group root, not"),
        (
            root / "outbox" / "police",
            lambda: os.removexattr(root / "outbox" / "police", ACL_DEFAULT),
            "outbox/police: no default ACL",
        ),
        (root / "inbox", lambda: os.chmod(root / "inbox", 0o755), "inbox: mode 0755, not 0711"),  # noqa: S103
    ]
    saved = {
        path: (os.stat(path), os.getxattr(path, ACL_DEFAULT) if path.name == "police" else None)
        for path, _, _ in breakages
    }
    try:
        for _, breaks, _ in breakages:
            breaks()
        code, out = cli_output(root, capsys, "access", "check")
        assert code == 1
        for _, _, named in breakages:
            assert named in out, (named, out)
        assert out.count("DEVIATION: ") == len(breakages), out
    finally:
        for path, (info, acl) in saved.items():
            os.chown(path, info.st_uid, info.st_gid)
            os.chmod(path, stat.S_IMODE(info.st_mode))
            if acl is not None:
                os.setxattr(path, ACL_DEFAULT, acl)
    assert cli_output(root, capsys, "access", "check")[0] == 0


def test_sync_refuses_an_account_it_did_not_make_and_a_drop_in_sshd_rejects_changing_nothing(host: Host) -> None:
    foreign = f"{TAG}-housing-pdo"
    subprocess.run(["useradd", "--system", "--no-create-home", foreign], check=True)
    public = ssh_key(host.base / "key-housing-pdo")
    assert cli(host.root, "officers", "ssh-key", "housing-pdo", str(public)) == 0
    audit = (host.root / "state" / "audit.jsonl").read_text()
    passwd = ours(host.base)
    refused = sync(host.root, "--yes")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused
    assert f"the system account {foreign!r}" in refused.stderr and "iom-gateway did not make it" in refused.stderr
    assert "access sync changed nothing" in refused.stderr
    assert (host.root / "state" / "audit.jsonl").read_text() == audit and ours(host.base) == passwd
    subprocess.run(["userdel", foreign], check=True)

    # an sshd_config that sshd itself refuses: the drop-in is checked against it and not installed
    toml = host.root / "gateway.toml"
    original = toml.read_text()
    broken = host.base / "ssh-broken"
    write_sshd_config(broken, free_port())
    (broken / "sshd_config").write_text((broken / "sshd_config").read_text() + "NoSuchKeyword yes\n")
    toml.write_text(original.replace(f'sshd_dir = "{host.base}/ssh"', f'sshd_dir = "{broken}"'))
    try:
        refused = sync(host.root, "--yes")
        assert refused.returncode == 1 and "sshd -t refuses the drop-in" in refused.stderr, refused
        assert "NoSuchKeyword" in refused.stderr and "nothing was installed" in refused.stderr
        assert not (broken / "sshd_config.d" / "iom-gateway.conf").exists()
        assert not (broken / "iom-gateway-authorized-keys").exists()
        assert (host.root / "state" / "audit.jsonl").read_text() == audit
    finally:
        toml.write_text(original)


def test_sync_as_an_ordinary_user_is_refused_before_anything_is_read(host: Host) -> None:
    done = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "gateway",
            "--root",
            str(host.root),
            "access",
            "sync",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    assert done.returncode == 1 and "run it as root" in done.stderr and "Traceback" not in done.stderr, done


def venv_for_others(folder: Path) -> Path:
    """A venv of the system's own Python (this interpreter's version) that sees this checkout and its packages:
    this suite's interpreter may live where only root can run it (pyenv under /root), as a gateway user could not."""
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not system.exists():
        pytest.fail(
            f"{system} is missing: the test needs the system's Python {sys.version_info.major}."
            f"{sys.version_info.minor} (Debian: apt-get install python3) to run the gateway as another user"
        )
    subprocess.run([str(system), "-m", "venv", "--without-pip", str(folder)], check=True)
    site = next((folder / "lib").glob("python*/site-packages"))
    ours = next(Path(sys.prefix, "lib").glob("python*/site-packages"))
    (site / "iom-gateway-checkout.pth").write_text(f"{ours}\n{REPO}\n")
    return folder / "bin" / "python"


@dataclass
class Ordinary:
    """A root owned by an ordinary gateway user, synced, with the system's sshd for it running."""

    root: Path
    base: Path
    account: pwd.struct_passwd
    python: Path
    sync_output: str
    sshd: Sshd

    def gateway(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`iom-gateway ARGS` as the gateway user (setpriv, its groups as they are now)."""
        who = ["setpriv", f"--reuid={self.account.pw_uid}", f"--regid={self.account.pw_gid}", "--init-groups"]
        command = [*who, str(self.python), "-m", "gateway", "--root", str(self.root), *args]
        return subprocess.run(command, capture_output=True, text=True, check=False, cwd="/")

    def sftp(self, *commands: str) -> subprocess.CompletedProcess[str]:
        account = f"{TAG}g-police-do"
        return sftp(account, self.base / "key-police-do", self.sshd.port, list(commands), self.base / "known_hosts")


@pytest.fixture(scope="module")
def ordinary(routed_template: Path) -> Iterator[Ordinary]:
    gateway = f"{TAG}-gw"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", gateway], check=True)
    account = pwd.getpwnam(gateway)
    base = make_base("gw")
    try:
        with copy_of(routed_template) as root:
            configured(root, base, accounts=f"{TAG}g-")
            private_keyrings(root)
            os.chmod(root.parent, 0o711)  # noqa: S103 (as /var/lib is: the gateway user passes through)
            for path in [root, *root.rglob("*")]:
                os.lchown(path, account.pw_uid, account.pw_gid)
            (base / "private").mkdir(mode=0o700)
            hidden = venv_for_others(base / "private" / "venv")  # where the gateway user cannot reach
            python = venv_for_others(base / "venv")
            public = ssh_key(base / "key-police-do")
            port = free_port()
            config = write_sshd_config(base / "ssh", port)
            before = Ordinary(root, base, account, python, "", None)  # type: ignore[arg-type]
            added = before.gateway("officers", "ssh-key", "police-do", str(public))
            assert added.returncode == 0, added.stderr

            passwd = ours(base)
            refused = sync(root, "--yes", python=hidden)
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert f"sshd would run {base}/ssh/iom-gateway-authorized-keys as {gateway}, who cannot run {hidden}" in (
                refused.stderr
            )
            assert ours(base) == passwd and not list((base / "ssh" / "sshd_config.d").glob("*.conf"))

            done = sync(root, "--yes", python=python)
            assert done.returncode == 0, done.stdout + done.stderr
            with Sshd(config, port) as sshd:
                yield Ordinary(root, base, account, python, done.stdout, sshd)
    finally:
        remove_base(base)
        subprocess.run(["userdel", gateway], check=False)


def test_a_root_owned_by_an_ordinary_gateway_user_stays_its_own_and_sshd_asks_for_keys_as_that_user(
    ordinary: Ordinary,
) -> None:
    gateway = ordinary.account.pw_name
    assert f"add the gateway user {gateway} to {TAG}-police" in ordinary.sync_output
    assert "restart the gateway's daemon (systemctl restart iom-gateway)" in ordinary.sync_output
    assert gateway in grp.getgrnam(f"{TAG}-police").gr_mem
    drop_in = (ordinary.base / "ssh" / "sshd_config.d" / "iom-gateway.conf").read_text()
    assert f"AuthorizedKeysCommandUser {gateway}\n" in drop_in
    login = ordinary.sftp("ls /")
    assert login.returncode == 0, login.stderr + ordinary.sshd.log()
    root = ordinary.root
    foreign = [p for p in [root, *root.rglob("*")] if p.lstat().st_uid != ordinary.account.pw_uid]
    assert foreign == [], f"access sync left files the gateway user does not own: {foreign}"
    checked = ordinary.gateway("access", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_upload_the_gateway_may_not_read_gets_one_report_saying_how_to_send_it_again(ordinary: Ordinary) -> None:
    local = short_dir()
    try:
        name = "police-private-2026-10.csv"
        (local / name).write_bytes(GOOD.read_bytes())
        gpg(
            home(ordinary.root, "police-do"), "--output", str(local / f"{name}.sig"), "--detach-sign", str(local / name)
        )
        os.chmod(local / name, 0o600)  # sftp `put` copies this mode, which masks the outbox's ACL entry too
        assert ordinary.sftp(f"put {local / name}.sig /outbox/", f"put {local / name} /outbox/").returncode == 0
        outbox = ordinary.root / "outbox" / "police"
        assert stat.S_IMODE((outbox / name).stat().st_mode) == 0o600
        first = ordinary.gateway("run", "--once")
        assert (
            "Traceback" not in first.stderr and f"waiting   police/{name}: the gateway may not read it" in first.stdout
        )
        report = outbox / "rejected" / "police-private-2026-10.report.txt"
        text = report.read_text()
        assert "NOT TAKEN" in text and "chmod 640 FILE before put" in text and f"rm /outbox/{name}" in text
        assert (stat.S_IMODE(report.stat().st_mode), report.stat().st_gid) == (
            0o640,
            grp.getgrnam(f"{TAG}-police").gr_gid,
        )
        stamp = report.stat().st_mtime_ns
        again = ordinary.gateway("run", "--once")  # the next pass tells nobody twice
        assert again.returncode == first.returncode and report.stat().st_mtime_ns == stamp
        events = [
            json.loads(line)["event"] for line in (ordinary.root / "state" / "audit.jsonl").read_text().splitlines()
        ]
        assert events.count("submission.unreadable") == 1
        assert (outbox / name).exists(), "the upload the gateway could not read was removed"
        got = ordinary.sftp(f"lcd {local}", "get /outbox/rejected/police-private-2026-10.report.txt")
        assert got.returncode == 0 and (local / report.name).read_text() == text

        os.chmod(local / name, 0o640)  # the officer follows the report
        fixed = ordinary.sftp(f"rm /outbox/{name}", f"put {local / name}.sig /outbox/", f"put {local / name} /outbox/")
        assert fixed.returncode == 0, fixed.stderr
        runs: list[subprocess.CompletedProcess[str]] = []
        # a file another user wrote: no read lease tells the gateway its writer is done, so it waits to settle
        wait_until(
            lambda: runs.append(ordinary.gateway("run", "--once")) or f"delivered police/{name}" in runs[-1].stdout,
            30,
            "the upload made again to be delivered",
        )
        assert runs[-1].returncode == 0, runs[-1]
        package = packages(ordinary.root, "probation")[0]
        info = package.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o640, ordinary.account.pw_uid)
        assert info.st_gid == grp.getgrnam(f"{TAG}-probation").gr_gid, "the gateway could not give it the group"
    finally:
        shutil.rmtree(local)
