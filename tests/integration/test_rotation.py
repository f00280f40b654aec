"""Key management: every rotation keeps the exchange working and strands no package a recipient needs."""

from __future__ import annotations

import json
import os
import pty
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.state.root import Root
from tests.integration.daemon_harness import (
    GOOD,
    audit_entries,
    cli,
    drop,
    home,
    journal_rows,
    journal_write,
    packages,
)
from tests.integration.gpg_helpers import gpg, new_officer, stop_agent


@pytest.fixture
def root(routed_root: Path) -> Path:
    return routed_root


def variant(number: int) -> bytes:
    return GOOD.read_bytes().replace(b"Attends weekly appointments", f"Attends ({number})".encode(), 1)


def exchange(root: Path, number: int, capsys: pytest.CaptureFixture[str]) -> str:
    """Submit, run and check delivery of one new file; return its package id."""
    drop(root, "police", variant(number), f"police-{number}-2026-10.csv", "police-do")
    capsys.readouterr()
    assert cli(root, "run", "--once") == 0, capsys.readouterr()
    made = [p for p in packages(root, "probation") if json.loads(_manifest(p).read_text())["rows"] == 7]
    return sorted(made, key=lambda p: p.stat().st_mtime)[-1].name.split(".")[0]


def _manifest(payload: Path) -> Path:
    return payload.with_name(payload.name.split(".")[0] + ".manifest.json")


def pull(root: Path, agency: str, into: Path, *, password: str | None = None, officer: str | None = None) -> int:
    into.mkdir(mode=0o700, parents=True, exist_ok=True)
    if password is not None:
        secret = into.parent / f"{into.name}.password"
        secret.write_text(password)
        secret.chmod(0o600)
        return cli(
            root, "pull", "--agency", agency, "--to", str(into), "--raw", "--again", "--password-file", str(secret)
        )
    return cli(root, "pull", "--agency", agency, "--to", str(into), "--raw", "--again", "--officer", officer or "")


def password_of(root: Path, agency: str) -> tuple[str, str]:
    record, secret = Root.open(root).vault.current(agency)
    return record.id, secret.reveal()


def keys_json(root: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert cli(root, "keys", "list", "--json") == 0
    listed: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return listed


def audit_ok(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cli(root, "audit", "verify") == 0, capsys.readouterr().out


# ----------------------------------------------------------------------------------------- keys list


def test_keys_list_shows_every_key_and_password_with_its_dependants_and_never_a_value(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exchange(root, 1, capsys)
    listed = keys_json(root, capsys)
    kinds = [str(e["kind"]) for e in listed]
    assert kinds.count("gateway") == 1 and kinds.count("officer") == 12 and kinds.count("vault") == 1
    assert {e["owner"] for e in listed if e["kind"] == "password"} == {"housing", "treatment"}
    housing_id, housing_password = password_of(root, "housing")
    entry = next(e for e in listed if e["id"] == housing_id)
    assert entry["status"] == "current" and entry["live_packages"] == 1
    gateway = next(e for e in listed if e["kind"] == "gateway")
    assert gateway["status"] == "current" and gateway["live_packages"] == 2 and gateway["expires"]
    probation_do = next(e for e in listed if str(e["owner"]).startswith("probation-do "))
    assert probation_do["live_packages"] == 1 and probation_do["expires"]
    assert cli(root, "keys", "list") == 0
    text = capsys.readouterr().out
    assert housing_password not in text and housing_id in text


# ----------------------------------------------------------------------------------------- gateway key


def test_rotating_the_gateway_key_keeps_old_packages_verifiable_and_signs_new_ones_with_the_new_key(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = exchange(root, 2, capsys)
    old = Root.open(root).gateway_key()
    assert cli(root, "keys", "rotate", "--gateway", "--yes") == 0
    new = Root.open(root).gateway_key()
    assert new != old
    after = exchange(root, 3, capsys)
    manifests = {
        p: json.loads((root / "inbox" / "probation" / f"{p}.manifest.json").read_text()) for p in (before, after)
    }
    assert manifests[before]["gateway_key"] == str(old) and manifests[after]["gateway_key"] == str(new)
    # the recipient verifies and opens both, old and new, with plain gpg and with pull
    officer = home(root, "probation-do")
    for package in (before, after):
        result = gpg(officer, "--status-fd", "2", "--decrypt", str(root / "inbox" / "probation" / f"{package}.csv.gpg"))
        assert b"GOODSIG" in result.stderr
    assert pull(root, "probation", tmp_path / "p", officer="probation-do") == 0
    assert len(list((tmp_path / "p").glob("*.csv"))) == 2
    capsys.readouterr()
    assert cli(root, "keys", "export", "--gateway") == 0
    partner = root.parent / "partner"  # a partner fetching the new public key
    partner.mkdir(mode=0o700)
    gpg(partner, "--import", stdin=capsys.readouterr().out.encode())
    assert gpg(partner, "--list-keys", str(new)).returncode == 0
    stop_agent(partner)
    listed = {e["id"]: e for e in keys_json(root, capsys) if e["kind"] == "gateway"}
    assert listed[str(old)]["status"] == "retired" and int(str(listed[str(old)]["live_packages"])) >= 2
    assert listed[str(new)]["status"] == "current"
    events = [e["event"] for e in audit_entries(root)]
    assert "gateway.key.rotated" in events and events.count("audit.checkpoint") >= 1
    audit_ok(root, capsys)  # checkpoints by the old and by the new key both verify


def test_an_expired_gateway_key_never_signs_the_file_waits_and_status_says_why(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # let the key's recorded expiry pass
    journal_write(root, "UPDATE gateway_keys SET expires = ?", ((datetime.now(UTC) - timedelta(days=1)).isoformat(),))
    drop(root, "police", variant(4), "police-4-2026-10.csv", "police-do")
    capsys.readouterr()
    assert cli(root, "run", "--once") == 0
    out = capsys.readouterr().out
    assert "deferred" in out and "keys rotate --gateway" in out
    assert packages(root, "probation") == [] and (root / "outbox" / "police" / "police-4-2026-10.csv").exists()
    assert cli(root, "keys", "rotate", "--gateway", "--yes") == 0
    assert cli(root, "run", "--once") == 0
    assert len(packages(root, "probation")) == 1


# ----------------------------------------------------------------------------------------- agency passwords


def test_rotating_a_password_keeps_old_packages_open_with_the_old_one(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exchange(root, 5, capsys)
    old_id, old_password = password_of(root, "housing")
    assert cli(root, "keys", "rotate", "--agency", "housing", "--yes") == 0
    new_id, new_password = password_of(root, "housing")
    assert new_id != old_id and len(new_password) >= 24 and new_password != old_password
    exchange(root, 6, capsys)
    by_key = {json.loads(_manifest(p).read_text())["encryption"]["key_id"]: p for p in packages(root, "housing")}
    assert set(by_key) == {old_id, new_id}
    assert _7z(by_key[old_id], old_password) == 0 and _7z(by_key[new_id], new_password) == 0
    assert _7z(by_key[old_id], new_password) != 0
    listed = {e["id"]: e for e in keys_json(root, capsys) if e["kind"] == "password"}
    assert listed[old_id]["status"] == "retired" and listed[old_id]["live_packages"] == 1
    assert any(e["event"] == "password.rotated" and e["old"] == old_id for e in audit_entries(root))


def test_reencrypt_repacks_unpulled_packages_so_the_old_password_opens_nothing(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exchange(root, 7, capsys)
    exchange(root, 8, capsys)
    old_id, old_password = password_of(root, "housing")
    witnesses = {p.name: json.loads(_manifest(p).read_text())["audit"] for p in packages(root, "housing")}
    assert cli(root, "keys", "rotate", "--agency", "housing", "--reencrypt", "--yes") == 0
    new_id, new_password = password_of(root, "housing")
    for payload in packages(root, "housing"):
        manifest = json.loads(_manifest(payload).read_text())
        assert manifest["encryption"]["key_id"] == new_id
        assert manifest["audit"] == witnesses[payload.name]  # re-signed, still witnessing the original sealing
        assert _7z(payload, old_password) != 0 and _7z(payload, new_password) == 0
    assert pull(root, "housing", tmp_path / "old", password=old_password) == 1
    assert pull(root, "housing", tmp_path / "new", password=new_password) == 0
    assert sorted(p.read_bytes() for p in (tmp_path / "new").glob("*.csv")) == sorted([variant(7), variant(8)])
    assert old_id not in {r.id for r in Root.open(root).vault.records()}
    assert not list((root / "inbox" / "housing").glob(".*"))  # nothing staged left behind
    exchange(root, 9, capsys)  # and the exchange goes on
    audit_ok(root, capsys)


def _7z(archive: Path, password: str) -> int:
    """7-Zip's own test of the archive with `password` (0: it opens and every CRC matches)."""
    return subprocess.run(
        ["7z", "t", f"-p{password}", str(archive)], capture_output=True, check=False, timeout=60
    ).returncode


# ----------------------------------------------------------------------------------------- officers


def test_rekey_with_grace_accepts_the_old_key_until_then_and_old_packages_still_open_with_it(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = exchange(root, 10, capsys)  # encrypted to probation-do's first key
    new_home = root.parent / "k"  # gpg-agent's socket path must stay short
    fingerprint = new_officer(new_home, "Police DO", "police-do@demo.invalid")
    exported = gpg(new_home, "--armor", "--export", fingerprint).stdout
    (tmp_path / "new.asc").write_bytes(exported)
    assert (
        cli(root, "officers", "rekey", "police-do", "--key", str(tmp_path / "new.asc"), "--grace-days", "2", "--yes")
        == 0
    )
    exchange(root, 11, capsys)  # still signed with the old key: accepted within the grace period
    journal_write(  # the grace period ends
        root,
        "UPDATE officer_keys SET accepted_until = ? WHERE retired IS NOT NULL",
        ((datetime.now(UTC) - timedelta(minutes=1)).isoformat(timespec="seconds"),),
    )
    drop(root, "police", variant(12), "police-12-2026-10.csv", "police-do")
    capsys.readouterr()
    assert cli(root, "run", "--once") == 1
    assert "belongs to no registered officer" in capsys.readouterr().out
    # the package made before is untouched: its recipient still opens it
    result = gpg(home(root, "probation-do"), "--decrypt", str(root / "inbox" / "probation" / f"{package}.csv.gpg"))
    assert result.stdout == variant(10)
    # and a file signed with the new key goes through, end to end
    outbox = root / "outbox" / "police"
    (outbox / "police-12-2026-10.csv.sig").unlink(missing_ok=True)
    staged = root.parent / "police-13-2026-10.csv"
    staged.write_bytes(variant(13))
    gpg(new_home, "--yes", "--output", f"{outbox / staged.name}.sig", "--detach-sign", str(staged))
    os.replace(staged, outbox / staged.name)
    assert cli(root, "run", "--once") == 0
    assert pull(root, "probation", tmp_path / "p", officer="probation-do") == 0
    assert variant(13) in [p.read_bytes() for p in (tmp_path / "p").glob("*.csv")]
    stop_agent(new_home)


def test_revoke_with_reencrypt_takes_the_officer_off_unpulled_packages_and_refuses_their_signature(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = exchange(root, 13, capsys)
    payload = root / "inbox" / "probation" / f"{package}.csv.gpg"
    assert gpg(home(root, "probation-do"), "--decrypt", str(payload)).stdout == variant(13)
    assert cli(root, "officers", "revoke", "probation-do", "--reencrypt", "--yes") == 0
    assert gpg(home(root, "probation-do"), "--decrypt", str(payload), check=False).returncode != 0
    assert gpg(home(root, "probation-pdo"), "--decrypt", str(payload)).stdout == variant(13)
    manifest = json.loads(_manifest(payload).read_text())
    assert Root.open(root).registry.get("probation-do").fingerprint not in manifest["encryption"]["key_id"]
    assert pull(root, "probation", tmp_path / "p", officer="probation-pdo") == 0
    drop(root, "probation", variant(14), "probation-14-2026-10.csv", "probation-do")
    capsys.readouterr()
    assert cli(root, "run", "--once") == 1
    assert "revoked" in capsys.readouterr().out
    audit_ok(root, capsys)


# ----------------------------------------------------------------------------------------- vault


def test_rotating_the_vault_passphrase_reencrypts_it_and_the_exchange_goes_on(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exchange(root, 15, capsys)
    before = password_of(root, "housing")
    vault_before = (root / "keys" / "vault.json").read_bytes()
    new = tmp_path / "new-passphrase"
    new.write_text("a-brand-new-vault-passphrase-2026\n")
    new.chmod(0o600)
    assert cli(root, "keys", "rotate", "--vault", "--new-passphrase-file", str(new), "--yes") == 0
    assert (root / "keys" / "vault.json").read_bytes() != vault_before
    assert (root / "keys" / "vault-passphrase").read_text().strip() == "a-brand-new-vault-passphrase-2026"
    assert password_of(root, "housing") == before
    exchange(root, 16, capsys)
    assert pull(root, "housing", tmp_path / "h", password=before[1]) == 0


def test_a_crash_between_reencrypting_the_vault_and_replacing_its_passphrase_file_is_finished(
    root: Path, tmp_path: Path
) -> None:
    before = password_of(root, "housing")
    new = tmp_path / "new-passphrase"
    new.write_text("another-new-vault-passphrase-99\n")
    new.chmod(0o600)
    crashed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from gateway.core import faults; from gateway.cli import main; faults.arm('vault.rekeyed');"
            " sys.exit(main(sys.argv[1:]))",
            "--root",
            str(root),
            "keys",
            "rotate",
            "--vault",
            "--new-passphrase-file",
            str(new),
            "--yes",
        ],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert crashed.returncode == -9
    assert (root / "keys" / "vault-passphrase.next").exists()  # the vault is new, the passphrase file old
    assert password_of(root, "housing") == before  # the next open finishes the rotation
    assert (root / "keys" / "vault-passphrase").read_text().strip() == "another-new-vault-passphrase-99"
    assert not (root / "keys" / "vault-passphrase.next").exists()


# ----------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["keys", "rotate", "--agency", "nowhere", "--yes"], "no agency 'nowhere'"),
        (["keys", "rotate", "--agency", "probation", "--yes"], "takes OpenPGP delivery"),
        (["officers", "revoke", "nobody", "--yes"], "no officer 'nobody'"),
    ],
)
def test_bad_rotations_are_usage_errors_and_nothing_changes(
    root: Path, args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _snapshot(root)
    capsys.readouterr()
    assert cli(root, *args) == 2  # a name that is not there, or a password for an OpenPGP agency: misuse
    assert says in capsys.readouterr().err
    assert _snapshot(root) == state


def test_rekeying_or_revoking_a_revoked_officer_is_refused(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(root, "officers", "revoke", "yos-do", "--yes") == 0
    state = _snapshot(root)
    new_home = root.parent / "k"
    fingerprint = new_officer(new_home, "Yos DO", "yos-do2@demo.invalid")
    (tmp_path / "new.asc").write_bytes(gpg(new_home, "--armor", "--export", fingerprint).stdout)
    stop_agent(new_home)
    capsys.readouterr()
    assert cli(root, "officers", "revoke", "yos-do", "--yes") == 1
    assert cli(root, "officers", "rekey", "yos-do", "--key", str(tmp_path / "new.asc"), "--yes") == 1
    assert "revoked" in capsys.readouterr().err
    assert _snapshot(root) == state


def test_a_wrong_vault_passphrase_refuses_the_rotation_and_changes_nothing(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _snapshot(root)
    monkeypatch.setenv("IOM_GATEWAY_VAULT_PASSPHRASE", "not-the-vault-passphrase")
    new = tmp_path / "new-passphrase"
    new.write_text("a-brand-new-vault-passphrase-2026\n")
    new.chmod(0o600)
    capsys.readouterr()
    assert cli(root, "keys", "rotate", "--vault", "--new-passphrase-file", str(new), "--yes") == 1
    assert "passphrase is wrong" in capsys.readouterr().err
    assert cli(root, "keys", "rotate", "--agency", "housing", "--yes") == 1
    assert _snapshot(root) == state


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file that a rotation could change: state, vault, inbox, keyring."""
    folders = ["state", "inbox", "keys/vault.json", "keys/vault-passphrase", "keys/gnupg/pubring.kbx"]
    files: dict[str, bytes] = {}
    for name in folders:
        path = root / name
        for item in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            if item.name.endswith(("-wal", "-shm", ".lock")) or item.name == "gateway.db":
                continue
            files[str(item.relative_to(root))] = item.read_bytes()
    for table in ("officers", "officer_keys", "gateway_keys", "deliveries"):
        rows = journal_rows(root, f"SELECT * FROM {table}")  # noqa: S608 (the test's own)
        files[table] = repr(sorted(rows, key=repr)).encode()
    return files


# ----------------------------------------------------------------------------------------- secrets


def test_no_secret_in_logs_audit_listings_or_readable_files_after_every_rotation(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exchange(root, 20, capsys)
    assert cli(root, "-v", "keys", "rotate", "--agency", "housing", "--reencrypt", "--yes") == 0
    assert cli(root, "-v", "keys", "rotate", "--gateway", "--yes") == 0
    new = tmp_path / "new-passphrase"
    new.write_text("the-third-vault-passphrase-xyz\n")
    new.chmod(0o600)
    assert cli(root, "-v", "keys", "rotate", "--vault", "--new-passphrase-file", str(new), "--yes") == 0
    assert cli(root, "-v", "keys", "list") == 0
    exchange(root, 21, capsys)
    output = capsys.readouterr()
    vault = Root.open(root).vault
    secrets = [vault.password(r.id).reveal() for r in vault.records()] + ["the-third-vault-passphrase-xyz"]
    for secret in secrets:
        assert secret not in output.out + output.err
        assert secret not in (root / "state" / "audit.jsonl").read_text()
    for path in root.rglob("*"):
        if not path.is_file() or path.is_relative_to(root / "keys"):
            continue
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            data = path.read_bytes()
            assert not any(s.encode() in data for s in secrets), f"{path} is readable by others and holds a secret"


# ----------------------------------------------------------------------------------------- terminals


def _on_a_terminal(root: Path, *args: str, answer: bytes = b"") -> tuple[int, str]:
    """Run the real CLI with stdin and stdout on a pseudo-terminal, as an admin at a console would."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--root", str(root), *args],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    if answer:
        os.write(controller, answer)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed when the process exited
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    return process.wait(timeout=60), output.decode(errors="replace")


def test_on_a_terminal_a_rotation_asks_first_and_no_means_nothing_changes(root: Path) -> None:
    state = _snapshot(root)
    status, output = _on_a_terminal(root, "keys", "rotate", "--gateway", answer=b"n\n")
    assert status == 2 and "make a new gateway key current? [y/N]" in output and "nothing changed" in output
    assert _snapshot(root) == state
    status, output = _on_a_terminal(root, "keys", "rotate", "--gateway", answer=b"y\n")
    assert status == 0 and "the gateway now signs with" in output


def test_a_password_is_shown_only_on_a_terminal_and_the_showing_is_audited(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert cli(root, "keys", "export", "--agency", "housing", "--password") == 2  # stdout is not a terminal here
    assert "only to a terminal or to a new 0600 file" in capsys.readouterr().err
    record_id, password = password_of(root, "housing")
    status, output = _on_a_terminal(root, "keys", "export", "--agency", "housing", "--password")
    assert status == 0 and password in output and record_id in output
    shown = [e for e in audit_entries(root) if e["event"] == "password.shown"]
    assert [e["password_id"] for e in shown] == [record_id]
    assert password not in (root / "state" / "audit.jsonl").read_text()


def test_purge_deletes_a_retired_gateway_keys_secret_once_nothing_live_needs_it_and_the_log_still_verifies(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exchange(root, 30, capsys)  # signed by the first key
    old = Root.open(root).gateway_key()
    assert cli(root, "keys", "rotate", "--gateway", "--yes") == 0
    assert cli(root, "purge") == 0
    assert Root.open(root).keyring.key(old).has_secret  # its packages still live: kept
    # they expire
    journal_write(root, "UPDATE deliveries SET expires = ?", ((datetime.now(UTC) - timedelta(days=1)).isoformat(),))
    capsys.readouterr()
    assert cli(root, "purge", "--dry-run", "--json") == 0
    assert json.loads(capsys.readouterr().out)["keys"] == [str(old)]
    assert Root.open(root).keyring.key(old).has_secret  # a dry run deletes nothing
    assert cli(root, "purge") == 0
    opened = Root.open(root)
    assert not opened.keyring.key(old).has_secret and opened.keyring.key(opened.gateway_key()).has_secret
    purged = [e for e in audit_entries(root) if e["event"] == "retention.purged"][-1]
    assert purged["gateway_keys"] == [str(old)]
    audit_ok(root, capsys)  # the old key's checkpoints still verify with its public half
