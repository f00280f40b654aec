"""Officers' SSH public keys in the register, through the real CLI: `officers add --ssh-key`,
`officers ssh-key`, what show/list print, the audit events, and refusals that change nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import main
from tests.integration.daemon_harness import journal_rows
from tests.integration.gpg_helpers import gpg, new_officer, stop_agent
from tests.unit.test_sshkey import keygen, keygen_fingerprint


def cli(root: Path, *args: str) -> int:
    return main(["--root", str(root), *args])


def ssh_events(root: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert cli(root, "audit", "show", "--event", "officer.ssh_key", "--json") == 0
    events: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return events


def register_row(root: Path, officer: str) -> tuple[object, ...]:
    return journal_rows(root, "SELECT * FROM officers WHERE id = ?", (officer,))[0]


def show(root: Path, officer: str, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert cli(root, "officers", "show", officer, "--json") == 0
    shown: dict[str, object] = json.loads(capsys.readouterr().out)
    return shown


@pytest.fixture
def pgp_key(routed_root: Path) -> Iterator[Path]:
    """A new officer's OpenPGP public key file (made by plain gpg in a home of their own)."""
    home = routed_root / "other"
    fingerprint = new_officer(home, "Karen Doyle", "k.doyle@police.example")
    path = routed_root / "doyle.asc"
    path.write_bytes(gpg(home, "--armor", "--export", fingerprint).stdout)
    yield path
    stop_agent(home)


def add_doyle(root: Path, pgp_key: Path, *extra: str) -> int:
    return cli(
        root,
        "officers",
        "add",
        "--agency",
        "police",
        "--role",
        "DO",
        "--name",
        "Karen Doyle",
        "--email",
        "k.doyle@police.example",
        "--key",
        str(pgp_key),
        *extra,
    )


def test_add_with_an_ssh_key_registers_it_and_records_it(
    routed_root: Path, pgp_key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pub = keygen(tmp_path, "ed25519").with_suffix(".pub")
    fingerprint = keygen_fingerprint(pub)
    capsys.readouterr()
    assert add_doyle(routed_root, pgp_key, "--ssh-key", str(pub)) == 0
    assert f"SSH key {fingerprint}" in capsys.readouterr().out
    shown = show(routed_root, "police-karen-doyle", capsys)
    assert (shown["ssh_key_type"], shown["ssh_fingerprint"]) == ("ssh-ed25519", fingerprint)
    # the register holds the bare key line, without the comment
    assert " ".join(pub.read_text().split()[:2]) in register_row(routed_root, "police-karen-doyle")
    assert "officer@laptop" not in repr(register_row(routed_root, "police-karen-doyle"))
    [event] = ssh_events(routed_root, capsys)
    assert event["officer"] == "police-karen-doyle" and event["agency"] == "police"
    assert (event["ssh_fingerprint"], event["key_type"], event["bits"], event["old"]) == (
        fingerprint,
        "ssh-ed25519",
        256,
        None,
    )


def test_a_refused_ssh_key_at_add_registers_nothing(
    routed_root: Path, pgp_key: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weak = keygen(tmp_path, "rsa", 2048).with_suffix(".pub")
    capsys.readouterr()
    assert add_doyle(routed_root, pgp_key, "--ssh-key", str(weak)) == 1
    assert "RSA key of 2048 bits: RSA keys need at least 3072 bits" in capsys.readouterr().err
    assert cli(routed_root, "officers", "show", "police-karen-doyle") == 2  # not registered
    # nor was her OpenPGP key imported into the gateway's keyring; the same add with a good SSH key works
    fingerprint = gpg(pgp_key.parent / "other", "--with-colons", "--list-keys").stdout.split(b"fpr:::::::::")[1][:40]
    keyring = routed_root / "keys" / "gnupg"
    assert gpg(keyring, "--list-keys", fingerprint.decode(), check=False).returncode != 0
    good = keygen(tmp_path, "ed25519", name="good").with_suffix(".pub")
    assert add_doyle(routed_root, pgp_key, "--ssh-key", str(good)) == 0
    assert add_doyle(routed_root, pgp_key, "--ssh-key", str(tmp_path / "missing.pub"), "--id", "police-kd2") == 2


def test_ssh_key_sets_replaces_and_shows_the_fingerprint(
    routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = keygen(tmp_path, "ecdsa", 384, name="first").with_suffix(".pub")
    second = keygen(tmp_path, "rsa", 3072, name="second").with_suffix(".pub")
    capsys.readouterr()
    assert cli(routed_root, "officers", "show", "police-do") == 0
    assert "ssh_fingerprint none" in capsys.readouterr().out
    assert cli(routed_root, "officers", "ssh-key", "police-do", str(first)) == 0
    assert capsys.readouterr().out == f"police-do now connects with SSH key {keygen_fingerprint(first)}\n"
    assert cli(routed_root, "officers", "ssh-key", "police-do", str(second), "--json") == 0
    replaced = json.loads(capsys.readouterr().out)
    assert (replaced["ssh_fingerprint"], replaced["ssh_key_type"], replaced["changed"]) == (
        keygen_fingerprint(second),
        "ssh-rsa",
        True,
    )
    # the same key again changes nothing and records nothing
    assert cli(routed_root, "officers", "ssh-key", "police-do", str(second)) == 0
    assert "nothing changed" in capsys.readouterr().out
    events = ssh_events(routed_root, capsys)
    assert [(e["ssh_fingerprint"], e["old"], e["bits"]) for e in events] == [
        (keygen_fingerprint(first), None, 384),
        (keygen_fingerprint(second), keygen_fingerprint(first), 3072),
    ]
    # show and list print the fingerprint, never the key
    assert cli(routed_root, "officers", "show", "police-do") == 0
    out = capsys.readouterr().out
    assert f"ssh_fingerprint {keygen_fingerprint(second)}" in out and "ssh_key_type    ssh-rsa" in out
    assert cli(routed_root, "officers", "list", "--agency", "police") == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert listed["police-do"].endswith(f"ssh {keygen_fingerprint(second)}")
    assert all(line.endswith("ssh none") for name, line in listed.items() if name != "police-do")
    assert cli(routed_root, "officers", "list", "--json") == 0
    by_id = {o["id"]: o for o in json.loads(capsys.readouterr().out)}
    assert by_id["police-do"]["ssh_fingerprint"] == keygen_fingerprint(second)
    assert by_id["probation-do"]["ssh_fingerprint"] is None


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda d: keygen(d, "rsa", 2048).with_suffix(".pub"), "RSA key of 2048 bits"),
        (lambda d: keygen(d, "ed25519"), "is a private key: give the .pub"),
        (
            lambda d: _write(d / "o.pub", b"no-pty " + keygen(d, "ed25519").with_suffix(".pub").read_bytes()),
            "starts with options",
        ),
        (lambda d: _write(d / "dss.pub", b"ssh-dss AAAAB3NzaC1kc3MAAAAB\n"), "DSA keys are refused"),
        (lambda d: _write(d / "junk.pub", b"not a key\n"), "is not an SSH public key line"),
        (lambda d: _write(d / "big.pub", b"#" * 100_000), "100,000 bytes"),
    ],
)
def test_a_refused_key_changes_nothing(
    routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, says: str
) -> None:
    good = keygen(tmp_path, "ed25519", name="good").with_suffix(".pub")
    assert cli(routed_root, "officers", "ssh-key", "police-do", str(good)) == 0
    before = register_row(routed_root, "police-do")
    bad = make(tmp_path)  # type: ignore[operator]
    capsys.readouterr()
    assert cli(routed_root, "officers", "ssh-key", "police-do", str(bad)) == 1
    err = capsys.readouterr().err
    assert err.startswith("iom-gateway: ") and says in err and str(bad) in err and "Traceback" not in err
    assert register_row(routed_root, "police-do") == before
    assert len(ssh_events(routed_root, capsys)) == 1


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_misuse_and_state_refusals(routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pub = keygen(tmp_path, "ed25519").with_suffix(".pub")
    assert cli(routed_root, "officers", "ssh-key", "police-do", str(tmp_path / "missing.pub")) == 2
    assert cli(routed_root, "officers", "ssh-key", "nobody", str(pub)) == 2
    assert "no officer 'nobody' in the register" in capsys.readouterr().err
    # one key, one officer: a second active officer cannot share it
    assert cli(routed_root, "officers", "ssh-key", "police-do", str(pub)) == 0
    capsys.readouterr()
    assert cli(routed_root, "officers", "ssh-key", "probation-do", str(pub)) == 1
    assert "is already officer 'police-do''s: each officer needs their own SSH key" in capsys.readouterr().err
    assert show(routed_root, "probation-do", capsys)["ssh_fingerprint"] is None
    # a revoked officer gets no key
    assert cli(routed_root, "officers", "revoke", "probation-do", "--yes") == 0
    other = keygen(tmp_path, "ed25519", name="other").with_suffix(".pub")
    capsys.readouterr()
    assert cli(routed_root, "officers", "ssh-key", "probation-do", str(other)) == 1
    assert "officer 'probation-do' is revoked: a revoked officer gets no SSH key" in capsys.readouterr().err
    assert show(routed_root, "probation-do", capsys)["ssh_fingerprint"] is None
    assert len(ssh_events(routed_root, capsys)) == 1
