"""The access model: what the gateway writes for an agency is readable by that agency's Unix group alone,
an upload is readable by the gateway whatever the uploader's umask, state/keys/quarantine stay private,
the daemon refuses an open state/, and `access check` names each deviation with its fix.

Real groups (test-only names, removed after) and real processes of other users (setpriv): root only.
"""

from __future__ import annotations

import grp
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.adapters.perms import ACL_DEFAULT, default_acl, encode_acl, group_id
from gateway.cli import main
from gateway.core.model import Agency
from gateway.exchange.folders import agency_folders
from gateway.state.root import Root
from tests.integration.daemon_harness import (
    GOOD,
    INVALID,
    Daemon,
    cli_output,
    copy_of,
    home,
    packages,
    run_once_process,
    short_dir,
)
from tests.integration.gpg_helpers import gpg

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: it makes Unix groups and runs processes as other users (CI runs as root)"
)
AGENCIES = ("police", "probation", "council", "housing", "treatment", "yos")
NOBODY = 65534
PREFIX = f"iomt-{secrets.token_hex(3)}"  # this run's test-only group names: PREFIX-police, ...


@pytest.fixture(scope="module")
def groups() -> Iterator[dict[str, int]]:
    """One test-only Unix group per demo agency ({agency: gid}), deleted afterwards."""
    for tool in ("groupadd", "groupdel", "getent", "setpriv"):  # scripts/_setup.sh installs each when missing
        assert shutil.which(tool), f"{tool} is missing: run ./scripts/test, whose setup installs it"
    prefix = PREFIX
    made: dict[str, int] = {}
    try:
        for agency in AGENCIES:
            subprocess.run(["groupadd", f"{prefix}-{agency}"], check=True)
            made[agency] = int(
                subprocess.run(
                    ["getent", "group", f"{prefix}-{agency}"], check=True, capture_output=True, text=True
                ).stdout.split(":")[2]
            )
        yield made
    finally:
        for agency in made:
            subprocess.run(["groupdel", f"{prefix}-{agency}"], check=False)


@pytest.fixture
def shared_root(routed_template: Path, groups: dict[str, int]) -> Iterator[Path]:
    """A copy of the routed demo root whose agencies have the test groups; its exchange folders made afresh
    (as the daemon makes them at start) and its parent passable, as /srv is."""
    with copy_of(routed_template) as root:
        toml = root / "gateway.toml"
        toml.write_text(
            re.sub(
                r"(?m)^\[agencies\.([a-z]+)\]$",
                lambda m: f'{m.group(0)}\ngroup = "{PREFIX}-{m.group(1)}"',
                toml.read_text(),
            )
        )
        for kind in ("outbox", "inbox", "quarantine"):
            shutil.rmtree(root / kind)
        agency_folders(root, Root.open(root).config.agencies, create=True)
        # The template was made in-process under pytest's umask, which left gpg's keyring backups 0644 (in
        # 0700 folders); `init` from the command line runs under umask 077 and leaves none (test_process_hardening).
        for path in (root / "keys").rglob("*"):
            if path.is_file() and not path.is_symlink():
                path.chmod(stat.S_IMODE(path.stat().st_mode) & 0o700)
        os.chmod(root.parent, 0o711)  # noqa: S103 (the deviation under test)
        yield root


def as_user(uid: int, gid: int, *command: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run `command` as `uid` with `gid` as its only group (no supplementary groups), umask 077."""
    return subprocess.run(
        [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "sh",
            "-c",
            'umask 077; exec "$@"',
            "sh",
            *command,
        ],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=30,
    )


def upload(root: Path, agency: str, gid: int, source: Path, officer: str) -> None:
    """An officer of `agency` (a process of `nobody` in the agency's group, umask 077) puts a CSV and its signature."""
    staging = short_dir()
    gpg(home(root, officer), "--yes", "--output", str(staging / "x.sig"), "--detach-sign", str(source))
    for name, data in ((source.name + ".sig", (staging / "x.sig").read_bytes()), (source.name, source.read_bytes())):
        done = as_user(NOBODY, gid, "sh", "-c", 'cat > "$0"', str(root / "outbox" / agency / name), stdin=data)
        assert done.returncode == 0, done.stderr
    shutil.rmtree(staging)


def readable_by(path: Path, gid: int) -> bool:
    return as_user(NOBODY, gid, "cat", str(path)).returncode == 0


@pytest.mark.slow
def test_an_upload_with_umask_077_is_delivered_and_each_file_is_readable_by_its_agencys_group_alone(
    shared_root: Path, groups: dict[str, int]
) -> None:
    upload(shared_root, "police", groups["police"], GOOD, "police-do")
    dropped = shared_root / "outbox" / "police" / GOOD.name
    assert stat.S_IMODE(dropped.stat().st_mode) & 0o077 == 0o060 or dropped.stat().st_uid == NOBODY
    assert not readable_by(dropped, groups["probation"]), "another agency read police's upload"

    done = run_once_process(shared_root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert packages(shared_root, "probation") and packages(shared_root, "housing")
    for agency, other in (("probation", "police"), ("housing", "probation")):
        files = [p for p in (shared_root / "inbox" / agency).iterdir() if p.is_file()]
        kinds = {p.name.rsplit(".", 1)[-1] for p in files}
        assert {"json", "sig"} <= kinds and ({"gpg"} <= kinds or {"zip"} <= kinds), files
        for path in files:
            info = path.stat()
            assert (stat.S_IMODE(info.st_mode), info.st_gid, info.st_uid) == (0o640, groups[agency], 0), path
            assert readable_by(path, groups[agency]), f"{path} unreadable by its own agency's group"
            assert not readable_by(path, groups[other]), f"{path} readable by {other}'s group"
        listing = as_user(NOBODY, groups[other], "ls", str(shared_root / "inbox" / agency))
        assert listing.returncode != 0, f"{other} listed {agency}'s inbox"
        assert as_user(NOBODY, groups[agency], "ls", str(shared_root / "inbox")).returncode != 0, "inbox/ listed"


@pytest.mark.slow
def test_a_rejection_report_is_readable_by_the_senders_group_and_state_keys_quarantine_by_none(
    shared_root: Path, groups: dict[str, int]
) -> None:
    upload(shared_root, "probation", groups["probation"], INVALID, "probation-do")
    assert run_once_process(shared_root).returncode == 1
    rejected = shared_root / "outbox" / "probation" / "rejected"
    reports = sorted(rejected.iterdir())
    assert [p.name.split(".report.")[1] for p in reports] == ["json", "txt"]
    for report in reports:
        info = report.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o640, groups["probation"])
        assert readable_by(report, groups["probation"])
        assert not readable_by(report, groups["police"])
    assert as_user(NOBODY, groups["probation"], "ls", str(rejected)).returncode == 0
    assert (shared_root / "quarantine" / "probation").is_dir()
    for top in ("state", "keys", "quarantine"):
        for path in [shared_root / top, *(shared_root / top).rglob("*")]:
            if path.is_symlink() or path.is_socket():
                continue
            assert stat.S_IMODE(path.lstat().st_mode) & 0o077 == 0, path
        for agency in ("police", "probation"):
            assert as_user(NOBODY, groups[agency], "ls", str(shared_root / top)).returncode != 0


def test_the_outbox_acl_lets_a_non_root_gateway_user_read_an_upload_made_with_umask_077(
    groups: dict[str, int],
) -> None:
    """The gateway as an ordinary user (not in the agency's group): only the default ACL lets it read the upload."""
    gateway_uid = 61000 + secrets.randbelow(999)
    root = short_dir() / "root"
    try:
        root.mkdir(mode=0o700)
        os.chown(root, gateway_uid, gateway_uid)
        os.chmod(root.parent, 0o711)  # noqa: S103 (the deviation under test)
        police = Agency("police", "Police", "police", group=f"{PREFIX}-police")
        states = agency_folders(root, {"police": police}, create=True)
        assert {s.state for s in states} == {"made"}, states
        for top, dirs, _ in os.walk(root):  # as if the gateway user had made them (root made them here)
            for name in dirs:
                os.chown(Path(top) / name, gateway_uid, -1)
        outbox = root / "outbox" / "police"
        assert stat.S_IMODE(outbox.stat().st_mode) == 0o2770 and outbox.stat().st_gid == groups["police"]
        assert os.getxattr(outbox, ACL_DEFAULT)
        assert as_user(NOBODY, groups["police"], "sh", "-c", 'echo a,b > "$0"', str(outbox / "x.csv")).returncode == 0
        assert (outbox / "x.csv").stat().st_uid == NOBODY
        assert as_user(gateway_uid, gateway_uid, "cat", str(outbox / "x.csv")).stdout == b"a,b\n"
        assert as_user(gateway_uid + 1, gateway_uid + 1, "cat", str(outbox / "x.csv")).returncode != 0
        assert not readable_by(outbox / "x.csv", groups["probation"])
    finally:
        shutil.rmtree(root.parent)


def test_the_daemon_refuses_to_start_when_state_is_open_and_names_the_fix(shared_root: Path) -> None:
    os.chmod(shared_root / "state", 0o755)  # noqa: S103 (the deviation under test)
    daemon = Daemon(shared_root)
    assert daemon.exited(timeout=30) == 1, daemon.text()
    err = daemon.text()
    assert "the daemon will not start" in err and "Traceback" not in err, err
    assert f"{shared_root / 'state'}: mode 0755" in err and f"run chmod 700 {shared_root / 'state'}" in err, err
    os.chmod(shared_root / "state", 0o700)
    os.chmod(shared_root / "keys", 0o770)  # noqa: S103 (the deviation under test)
    daemon = Daemon(shared_root)
    assert daemon.exited(timeout=30) == 1
    assert f"run chmod 700 {shared_root / 'keys'}" in daemon.text() and "state" not in daemon.text().split("alone")[1]


@pytest.mark.slow
def test_access_check_passes_on_a_shared_root_and_names_each_deviation_with_its_fix(
    shared_root: Path, groups: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    upload(shared_root, "police", groups["police"], GOOD, "police-do")
    assert run_once_process(shared_root).returncode == 0
    code, out = cli_output(shared_root, capsys, "access", "check")
    assert (code, out.splitlines()[-1]) == (0, "OK: the root matches the access model"), out

    package = packages(shared_root, "probation")[0]
    key_file = next(p for p in (shared_root / "keys").rglob("*") if p.is_file() and not p.is_socket())
    os.chmod(shared_root / "state", 0o755)  # noqa: S103 (1: state/ open)
    os.chmod(package, 0o644)  # 2: a package readable by everyone
    os.chown(shared_root / "inbox" / "housing", -1, groups["police"])  # 3: another agency's group
    os.removexattr(shared_root / "outbox" / "police", ACL_DEFAULT)  # 4: no default ACL for the gateway
    os.chown(key_file, NOBODY, -1)  # 5: a key owned by someone else
    os.chmod(shared_root, 0o755)  # noqa: S103 (6: the root listable)
    os.symlink("/etc", shared_root / "inbox" / "probation" / "link")  # 7: a link
    code, out = cli_output(shared_root, capsys, "access", "check")
    assert code == 1
    wanted = {
        f"state: mode 0755, not 0700\n  fix: chmod 700 {shared_root / 'state'}",
        f"inbox/probation/{package.name}: mode 0644, not 0640\n  fix: chmod 640 {package}",
        f"inbox/housing: group {PREFIX}-police, not {PREFIX}-housing\n"
        f"  fix: chgrp {PREFIX}-housing {shared_root / 'inbox' / 'housing'}",
        f"outbox/police: no default ACL letting the gateway user read what officers drop\n"
        f"  fix: setfacl -d -m u::rwx,u:root:rwx,g::rwx,m::rwx,o::- {shared_root / 'outbox' / 'police'}",
        f"{key_file.relative_to(shared_root)}: owned by nobody, not the gateway user root\n"
        f"  fix: chown root {key_file}",
        f".: mode 0755, not 0711\n  fix: chmod 711 {shared_root}",
        f"inbox/probation/link: a symbolic link: the gateway never follows links\n"
        f"  fix: rm {shared_root / 'inbox' / 'probation' / 'link'}",
    }
    for line in wanted:
        assert f"DEVIATION: {line}" in out, out
    assert out.count("DEVIATION: ") == len(wanted), out
    code, out = cli_output(shared_root, capsys, "access", "check", "--json")
    document = json.loads(out)
    assert code == 1 and document["ok"] is False and len(document["deviations"]) == len(wanted)

    for deviation in document["deviations"]:  # the printed fixes work (setfacl's: the acl package; set directly)
        if not deviation["fix"].startswith("setfacl"):
            subprocess.run(deviation["fix"], shell=True, check=True)  # noqa: S602 (the command under test)
    os.setxattr(shared_root / "outbox" / "police", ACL_DEFAULT, encode_acl(default_acl(0)))
    code, out = cli_output(shared_root, capsys, "access", "check")
    assert code == 0, out


def test_a_group_missing_on_the_host_keeps_the_folders_private_and_check_names_groupadd(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"iomt-{secrets.token_hex(3)}-none"
    toml = routed_root / "gateway.toml"
    toml.write_text(toml.read_text().replace("[agencies.police]", f'[agencies.police]\ngroup = "{name}"'))
    shutil.rmtree(routed_root / "outbox" / "police")
    agency_folders(routed_root, Root.open(routed_root).config.agencies, create=True)
    assert stat.S_IMODE((routed_root / "outbox" / "police").stat().st_mode) == 0o700
    code, out = cli_output(routed_root, capsys, "access", "check")
    assert code == 1
    assert f"DEVIATION: agencies.police: the Unix group {name!r} does not exist" in out
    assert f"fix: groupadd {name} && usermod -aG {name} root" in out


def test_a_group_that_is_not_a_unix_group_name_is_a_config_mistake(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = routed_root / "gateway.toml"
    toml.write_text(toml.read_text().replace("[agencies.police]", '[agencies.police]\ngroup = "Police Staff"'))
    capsys.readouterr()
    assert main(["--root", str(routed_root), "access", "check"]) == 1
    err = capsys.readouterr().err
    assert "gateway.toml' has 1 mistake(s)" in err and "Traceback" not in err
    assert re.search(r"line [0-9]+: agency 'police' group must be a Unix group name", err), err


def test_a_group_looked_up_once_is_remembered_only_while_etc_group_is_unchanged() -> None:
    # every package's files ask for their agency's gid: it is remembered, but a group removed or
    # added on the host (groupdel, groupadd) is seen at the next look-up
    name = f"iomt-{secrets.token_hex(3)}-memo"
    assert group_id(name) is None
    assert group_id(name) is None  # remembered as missing, too
    subprocess.run(["groupadd", name], check=True)
    try:
        made = group_id(name)
        assert made is not None and made == grp.getgrnam(name).gr_gid
        assert group_id(name) == made
    finally:
        subprocess.run(["groupdel", name], check=True)
    assert group_id(name) is None
