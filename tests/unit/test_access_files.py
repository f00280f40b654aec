"""The files `access sync` writes for OpenSSH and systemd, checked by those programs themselves (`sshd -t`,
`systemd-escape`, `systemd-analyze verify`), and the [access] settings of gateway.toml."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.access.keys import main as keys_main
from gateway.access.sshd import check_config, drop_in, keys_command, mount_unit, unit_name
from gateway.adapters.config import Access, Config
from gateway.core.errors import ConfigError
from gateway.core.model import Agency
from gateway.validate.schema import load_standard
from tests.conftest import REPO, make_root

AGENCIES = [Agency("police", "Police", "police"), Agency("probation", "Probation", "probation", group="iom-nps")]
ACCESS = Access(account_prefix="iom-", sshd_dir=Path("/etc/ssh"), chroot_dir=Path("/srv/iom-gateway"))


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.fail(f"{name} is missing: run ./scripts/test, which installs it (openssh-server, systemd)")
    return path


@pytest.mark.parametrize(
    "where", ["/srv/iom-gateway/police/inbox", "/srv/iom_gw/.hidden/outbox", "/srv/a b/x-y.z/inbox", "/srv/Ünï/inbox"]
)
def test_a_mount_units_name_is_the_one_systemd_escape_gives_its_path(where: str) -> None:
    done = subprocess.run(
        [tool("systemd-escape"), "--path", "--suffix=mount", where], capture_output=True, text=True, check=True
    )
    assert unit_name(Path(where)) == done.stdout.strip()


@pytest.mark.parametrize("read_only", [True, False])
def test_systemd_accepts_the_mount_units(tmp_path: Path, read_only: bool) -> None:
    folder = "inbox" if read_only else "outbox"
    where = Path(f"/srv/iom-gateway/police/{folder}")
    text = mount_unit(
        Path("/var/lib/iom-gateway"),
        Path(f"/var/lib/iom-gateway/{folder}/police"),
        where,
        read_only=read_only,
        agency=AGENCIES[0],
    )
    name = unit_name(where)
    (tmp_path / name).write_text(text)
    done = subprocess.run(
        [tool("systemd-analyze"), "verify", f"./{name}"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and name not in done.stderr, done.stderr  # verify warns, and exits 0, on a bad key
    options = re.search(r"(?m)^Options=(.*)$", text)
    assert options is not None and set(options.group(1).split(",")) == (
        {"bind", "nosuid", "nodev", "noexec"} | ({"ro"} if read_only else set())
    )


def test_the_drop_in_gives_each_agencys_officers_sftp_only_in_their_own_chroot() -> None:
    text = drop_in(Path("/var/lib/iom-gateway"), AGENCIES, ACCESS, "iomgw")
    blocks = text.split("\nMatch ")[1:]
    assert [b.splitlines()[0] for b in blocks] == ["User iom-* Group iom-police", "User iom-* Group iom-nps"]
    for block, agency in zip(blocks, ("police", "probation"), strict=True):
        settings = dict(line.split(None, 1) for line in block.splitlines()[1:] if line.strip())
        assert settings["ChrootDirectory"] == f"/srv/iom-gateway/{agency}"
        assert (
            settings["ForceCommand"].startswith("internal-sftp ") and "-P symlink,hardlink" in settings["ForceCommand"]
        )
        assert settings["AuthorizedKeysCommand"] == "/etc/ssh/iom-gateway-authorized-keys %u %U"
        assert settings["AuthorizedKeysCommandUser"] == "iomgw" and settings["AuthorizedKeysFile"] == "none"
        assert settings["AuthenticationMethods"] == "publickey" and settings["PasswordAuthentication"] == "no"
        for forwarding in (
            "AllowTcpForwarding",
            "AllowAgentForwarding",
            "AllowStreamLocalForwarding",
            "X11Forwarding",
            "PermitTunnel",
            "PermitTTY",
            "PermitUserRC",
        ):
            assert settings[forwarding] == "no", forwarding


def test_sshd_accepts_the_drop_in_in_a_config_like_debians(tmp_path: Path) -> None:
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (tmp_path / "sshd_config.d").mkdir()
    installed = tmp_path / "sshd_config.d" / "iom-gateway.conf"
    (tmp_path / "sshd_config.d" / "other.conf").write_text("ClientAliveInterval 30\n")
    main = tmp_path / "sshd_config"
    main.write_text(f"Include {tmp_path}/sshd_config.d/*.conf\nHostKey {key}\nUsePAM yes\n")
    candidate = tmp_path / "candidate.conf"
    candidate.write_text(drop_in(Path("/var/lib/iom-gateway"), AGENCIES, ACCESS, "root"))
    checked = check_config(main, installed, candidate)
    assert checked is not None
    assert checked.splitlines()[0] == f"Include {tmp_path}/sshd_config.d/other.conf {candidate}"
    (tmp_path / "check").write_text(checked)
    # `sshd -t` wants its privilege-separation folder, which Debian makes at boot or when its unit
    # starts; on a fresh machine (CI) no sshd has run yet, unless another test's harness made it
    privsep = Path("/run/sshd")
    privsep.mkdir(mode=0o755, exist_ok=True)
    done = subprocess.run(
        [tool("sshd"), "-t", "-f", str(tmp_path / "check")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    broken = tmp_path / "broken.conf"
    broken.write_text(candidate.read_text().replace("PermitTTY no", "PermitTTY maybe"))
    (tmp_path / "check").write_text(check_config(main, installed, broken) or "")
    done = subprocess.run(
        [tool("sshd"), "-t", "-f", str(tmp_path / "check")], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0 and "maybe" in done.stderr


def test_a_main_config_that_never_reads_the_drop_in_is_named(tmp_path: Path) -> None:
    main = tmp_path / "sshd_config"
    main.write_text("Include /etc/ssh/other/*.conf\nPort 22\n")
    assert check_config(main, tmp_path / "sshd_config.d" / "iom-gateway.conf", tmp_path / "c.conf") is None
    main.write_text("Include sshd_config.d/*.conf\n")  # relative: to sshd's folder
    relative = check_config(main, tmp_path / "sshd_config.d" / "iom-gateway.conf", tmp_path / "c.conf")
    assert relative is not None and relative.startswith(f"Include {tmp_path / 'c.conf'}")


def test_the_key_command_runs_the_gateway_with_its_root_and_sshds_two_arguments_quoted() -> None:
    script = keys_command(Path("/var/lib/iom gateway"), "/opt/iom-gateway/bin/python")
    assert script.startswith("#!/bin/sh\n")
    assert script.splitlines()[-1] == (
        'exec /opt/iom-gateway/bin/python -I -m gateway.access.keys \'/var/lib/iom gateway\' "$1" "$2"'
    )


def test_the_key_command_without_a_register_prints_no_key_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert keys_main([str(tmp_path), "iom-police-do", "1001"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and f"no register at {str(tmp_path / 'state' / 'gateway.db')!r}" in captured.err
    assert keys_main([]) == 2 and "usage: python -m gateway.access.keys ROOT ACCOUNT [UID]" in capsys.readouterr().err


def test_access_settings_are_checked_with_their_line_and_fix(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    toml = root / "gateway.toml"
    toml.write_text(
        toml.read_text()
        + '\n[access]\naccount_prefix = "IOM "\nchroot_dir = "srv/relative"\nsshd_dir = "/etc/ssh\\nMatch all"\n'
        + "colour = 1\n"
    )
    standard = load_standard(REPO)
    with pytest.raises(ConfigError) as caught:
        Config.load(root, columns=frozenset(standard.columns), kinds=standard.kinds)
    message = caught.value.message
    assert "access.account_prefix must start a Unix user name" in message
    assert "access.chroot_dir must be an absolute path" in message and "access.sshd_dir must be an absolute" in message
    assert "unknown setting 'colour' in [access]" in message
    assert re.search(r"line \d+: access.account_prefix", message), message


def test_the_access_defaults_are_debians_places() -> None:
    standard = load_standard(REPO)
    config = Config.load(REPO, columns=frozenset(standard.columns), kinds=standard.kinds)
    assert config.access == Access("iom-", Path("/etc/ssh"), Path("/srv/iom-gateway"), Path("/etc/systemd/system"))
