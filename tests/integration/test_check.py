"""`iom-gateway check`: config, schemas, ownership, register, keys and folders together; it changes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.cli import main
from tests.integration.daemon_harness import cli, short_lived_officer

pytestmark = pytest.mark.slow


def _check(root: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--root", str(root), "check", *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out


def _listing(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under `root` with its mode and its content's hash (a link: its target)."""
    found = {}
    for top, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(top) / name
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(info.st_mode):
                what = "-> " + os.readlink(path)
            else:
                what = "folder" if stat.S_ISDIR(info.st_mode) else "other"
            found[str(path.relative_to(root))] = (info.st_mode, what)
    return found


def _agent_answers(home: Path) -> bool:
    listed = subprocess.run(
        ["gpgconf", "--homedir", str(home), "--list-dirs", "agent-socket"], capture_output=True, text=True, check=True
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(listed.stdout.strip().replace("%3a", ":"))
        except OSError:
            return False
    return True


def test_a_clean_root_prints_every_route_and_exits_0(routed_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _check(routed_root, capsys)
    assert code == 0, out
    lines = out.splitlines()
    police = next(line for line in lines if line.startswith("police "))
    assert police.split() == ["police", "police", "gpg", "2", "active", "officer(s)", "probation,", "housing"]
    housing = next(line for line in lines if line.startswith("housing "))
    assert "aes-zip" in housing and "password pw-housing-" in housing
    assert "police, probation, council, treatment, yos" in housing  # no route: every other partner
    assert "folders:       18 present, 0 missing" in out and "orphaned:      none" in out
    assert lines[-1] == "OK: no problems"

    code, out = _check(routed_root, capsys, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["ok"] is True and result["problems"] == [] and result["missing"] == []
    routes = {r["agency"]: r for r in result["routes"]}
    assert routes["police"]["recipients"] == ["probation", "housing"] and routes["police"]["active_officers"] == 2
    assert routes["treatment"]["delivery"] == "aes-zip" and routes["treatment"]["password"].startswith("pw-treatment-")


def test_check_changes_nothing_and_leaves_no_agent(routed_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _listing(routed_root)
    assert _check(routed_root, capsys)[0] == 0
    assert _check(routed_root, capsys, "--json")[0] == 0
    (routed_root / "inbox" / "council").rmdir()  # a problem, so check's longer path runs too
    before.pop("inbox/council")
    assert _check(routed_root, capsys)[0] == 1
    assert _listing(routed_root) == before  # no lock, no journal or audit write, no folder made
    assert not _agent_answers(routed_root / "keys" / "gnupg")


def _remove_folder(root: Path) -> str:
    (root / "inbox" / "council").rmdir()
    return "inbox/council is missing: start the daemon or send it SIGHUP"


def _orphan_with_file(root: Path) -> str:
    (root / "outbox" / "fire").mkdir(mode=0o700)
    (root / "outbox" / "fire" / "fire-2026-10.csv").write_bytes(b"forename\r\n")
    return "outbox/fire holds 1 file(s) but agency 'fire' is not in gateway.toml"


def _no_active_officer(root: Path) -> str:
    for officer in ("probation-do", "probation-pdo"):
        assert cli(root, "officers", "revoke", officer, "--yes") == 0
    return "probation has no active officer to encrypt to, so nothing can be delivered to it: register one"


def _outbox_replaced_by_a_link(root: Path) -> str:
    shutil.rmtree(root / "outbox" / "council")  # its receipts/ too
    (root / "outbox" / "council").symlink_to(root.parent)
    return f"{str(root / 'outbox' / 'council')!r} is a symbolic link or not a folder"


def _no_vault(root: Path) -> str:
    (root / "keys" / "vault.json").unlink()
    return "there is no password vault (keys/vault.json) for the AES-ZIP agencies housing, treatment"


def _broken_ownership_file(root: Path) -> str:
    path = root / "schemas" / "ownership.json"
    matrix = json.loads(path.read_text())
    matrix["columns"]["no_such_column"] = ["police"]
    path.write_text(json.dumps(matrix))
    return "ownership.json"


def _ownership_that_strands_an_agency(root: Path) -> str:
    with (root / "gateway.toml").open("a") as toml:
        toml.write('\n[ownership]\nforename = ["police", "probation"]\n')
    return "agency 'council' (kind council) can never send a valid file: the required column forename"


def _broken_schema(root: Path) -> str:
    (root / "schemas" / "table1.schema.json").write_text("{ not json")
    return "cannot be read as JSON"


def _config_error(root: Path) -> str:
    toml = root / "gateway.toml"
    toml.write_text(toml.read_text().replace("max_rows = 1000000", "max_rows = 0"))
    return "limits.max_rows must be a whole number above 0"


def _smtp_intake(root: Path, *, key_mode: int) -> None:
    (root / "keys" / "smtp.key").write_text("not a key")
    (root / "keys" / "smtp.key").chmod(key_mode)
    with (root / "gateway.toml").open("a") as toml:
        toml.write(
            '\n[smtp.intake]\nlisten = "127.0.0.1:2587"\naddress = "iom@gateway.test"\n'
            'tls_cert = "keys/smtp.crt"\ntls_key = "keys/smtp.key"\n'
        )


def _smtp_certificate_missing(root: Path) -> str:
    _smtp_intake(root, key_mode=0o600)
    return f"[smtp.intake] names {str(root / 'keys' / 'smtp.crt')!r}, which is not a file"


def _smtp_key_readable(root: Path) -> str:
    _smtp_intake(root, key_mode=0o644)
    (root / "keys" / "smtp.crt").write_text("not a certificate")
    return f"{str(root / 'keys' / 'smtp.key')!r} is readable by others"


def _smtp_files_that_do_not_load(root: Path) -> str:
    _smtp_intake(root, key_mode=0o600)
    (root / "keys" / "smtp.crt").write_text("not a certificate")
    return "the [smtp.intake] certificate and key do not load"


def _relay(root: Path, extra: str = "") -> None:
    with (root / "gateway.toml").open("a") as toml:
        toml.write(f'\n[smtp.relay]\nhost = "localhost"\nsender = "iom@gateway.test"\n{extra}')


def _relay_ca_missing(root: Path) -> str:
    _relay(root, 'ca_file = "keys/relay-ca.pem"\n')
    return f"[smtp.relay] ca_file {str(root / 'keys' / 'relay-ca.pem')!r} is not a file"


def _relay_without_password(root: Path) -> str:
    _relay(root, 'user = "iom-gateway"\n')
    return "[smtp.relay] user 'iom-gateway' has no password in the vault"


def _email_without_relay(root: Path) -> str:
    toml = root / "gateway.toml"
    toml.write_text(toml.read_text().replace("[agencies.probation]\n", "[agencies.probation]\nemail = true\n", 1))
    return "probation has email = true but gateway.toml has no [smtp.relay]"


@pytest.mark.parametrize(
    ("spoil", "fix"),
    [
        (_relay_ca_missing, "give the PEM file of the relay's CA"),
        (_relay_without_password, "iom-gateway keys relay-password --password-file F"),
        (_email_without_relay, "add [smtp.relay] (host, sender), or remove email = true"),
        (_remove_folder, "or run `iom-gateway init`"),
        (_orphan_with_file, "add the agency back, or move the files out and remove the folder"),
        (_no_active_officer, "iom-gateway officers add --agency probation"),
        (_outbox_replaced_by_a_link, "replace it with a real folder"),
        (_no_vault, "run `iom-gateway init` to make it and their passwords"),
        (_broken_ownership_file, "restore the shipped schema or fix it"),
        (_ownership_that_strands_an_agency, "add 'council' to ownership.forename in gateway.toml"),
        (_broken_schema, "restore it from the release"),
        (_config_error, "line "),
        (_smtp_certificate_missing, "give the PEM file's path"),
        (_smtp_key_readable, "chmod 600 it"),
        (_smtp_files_that_do_not_load, "give a PEM certificate chain and its key"),
    ],
    ids=lambda value: getattr(value, "__name__", "fix").strip("_"),
)
def test_each_problem_exits_1_naming_its_fix(
    routed_root: Path, capsys: pytest.CaptureFixture[str], spoil: Callable[[Path], str], fix: str
) -> None:
    problem = spoil(routed_root)
    code, out = _check(routed_root, capsys)
    assert code == 1, out
    assert problem in out and out.rindex("PROBLEM: ", 0, out.index(problem)) >= 0, out
    assert fix in out
    assert "fix them and run `iom-gateway check` again" in out.splitlines()[-1]
    result = json.loads(_check(routed_root, capsys, "--json")[1])
    assert result["ok"] is False and any(problem in p for p in result["problems"])


def test_an_empty_orphan_is_a_warning_and_passwords_without_the_passphrase_are_not_checked(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (routed_root / "inbox" / "fire").mkdir(mode=0o700)
    toml = routed_root / "gateway.toml"
    toml.write_text(toml.read_text().replace('"keys/vault-passphrase"', '"/nonexistent/vault-passphrase"'))
    code, out = _check(routed_root, capsys)
    assert code == 0, out
    assert "warning: inbox/fire is empty and belongs to no agency in gateway.toml: remove it (rmdir)" in out
    assert "not checked:   AES-ZIP passwords of housing, treatment: no vault passphrase here" in out
    assert "password not checked" in next(line for line in out.splitlines() if line.startswith("housing "))
    assert out.splitlines()[-1] == "OK: no problems (1 warning(s))"


def test_a_relay_with_no_admins_is_a_warning_and_one_with_its_password_passes(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _relay(routed_root, 'user = "iom-gateway"\n')
    secret = routed_root.parent / "relay.pw"
    secret.write_text("a-relay-password-of-some-length\n")
    secret.chmod(0o600)
    assert cli(routed_root, "keys", "relay-password", "--password-file", str(secret)) == 0
    code, out = _check(routed_root, capsys)
    assert code == 0, out
    assert "warning: [smtp.notices] has no admins" in out


def test_an_officer_key_near_expiry_is_a_warning_naming_the_rekey(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with short_lived_officer(routed_root) as fingerprint:
        code, out = _check(routed_root, capsys)
    assert code == 0, out
    warning = next(line for line in out.splitlines() if fingerprint in line)
    assert warning.startswith("warning: officer council-short (council) key ") and "expires in 9 day(s)" in warning
    assert "`iom-gateway officers rekey council-short --key NEW.asc`" in warning
    assert "keys:          1 expired, revoked, missing or expiring within 30 days" in out


def test_check_outside_a_root_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = _check(tmp_path / "nowhere", capsys)
    assert code == 2
    assert main(["--root", str(tmp_path), "check"]) == 2
    assert "no gateway.toml in" in capsys.readouterr().err
