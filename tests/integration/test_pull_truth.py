"""`pull` inside the root tells the truth and goes on (issue 12, item 3), and signs a receipt (item 2)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.state.receipts import Receipts
from gateway.state.root import Root
from tests.integration.daemon_harness import GOOD, audit_entries, cli, drop, home, packages
from tests.integration.gpg_helpers import gpg, primary_fingerprint, stop_agent

pytestmark = pytest.mark.slow


def _variant(number: int) -> bytes:
    return GOOD.read_bytes().replace(b"Attends weekly appointments", f"Attends ({number})".encode(), 1)


def _deliver(root: Path, number: int, capsys: pytest.CaptureFixture[str]) -> None:
    drop(root, "police", _variant(number), f"police-{number}-2026-10.csv", "police-do")
    capsys.readouterr()
    assert cli(root, "run", "--once") == 0, capsys.readouterr()


def _pull(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli(root, "pull", *args)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _bases(root: Path, agency: str) -> list[str]:
    return [p.name.split(".")[0] for p in packages(root, agency)]


def test_a_home_lacking_the_rotated_gateway_key_is_told_which_key_and_the_other_packages_are_pulled(
    routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    _deliver(root, 1, capsys)
    assert cli(root, "keys", "rotate", "--gateway", "--yes") == 0
    new = str(Root.open(root).gateway_key())
    _deliver(root, 2, capsys)
    officer = home(root, "probation-do")
    gpg(officer, "--yes", "--delete-keys", new)  # a recipient who never imported the new key
    out_dir = tmp_path / "p"
    out_dir.mkdir()
    code, out, err = _pull(root, capsys, "--agency", "probation", "--to", str(out_dir), "--officer", "probation-do")
    assert code == 1
    assert out.count("wrote ") == 1  # the package signed by the old key is still pulled
    assert f"is signed by gateway key {new}, which this GnuPG home lacks" in err
    assert "`iom-gateway keys export --gateway`" in err
    assert "damaged or tampered" not in err
    [written] = out_dir.glob("*.csv")  # the old-key package and its marking sidecar; nothing of the other
    assert sorted(p.name for p in out_dir.iterdir()) == [
        written.name,
        written.name.removesuffix(".csv") + ".marking.txt",
    ]


def test_a_home_without_the_recipient_key_is_told_which_keys_the_package_is_encrypted_to(
    routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    _deliver(root, 1, capsys)
    out_dir = tmp_path / "p"
    out_dir.mkdir()
    other = home(root, "police-do")  # a real home with a secret key, but not one the package was sent to
    code, _, err = _pull(root, capsys, "--agency", "probation", "--to", str(out_dir), "--gnupghome", str(other))
    assert code == 1
    listing = gpg(home(root, "probation-do"), "--with-colons", "--list-keys").stdout.decode()
    subkey = next(line.split(":")[4] for line in listing.splitlines() if line.startswith("sub:"))
    assert "is not encrypted to a key in this keyring: it is encrypted to key ID(s) " in err
    assert subkey in err and "whose secret key this GnuPG home lacks" in err
    assert "damaged or tampered" not in err
    assert list(out_dir.iterdir()) == []


def test_what_was_pulled_is_tracked_per_key_not_per_gnupghome_path(
    routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    _deliver(root, 1, capsys)
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    assert _pull(root, capsys, "--agency", "probation", "--to", str(first), "--officer", "probation-do")[0] == 0
    copy = tmp_path / "h"  # the same officer key, reached by another path
    shutil.copytree(home(root, "probation-do"), copy, ignore=shutil.ignore_patterns("S.*"))
    fingerprint = primary_fingerprint(copy, "probation")
    try:
        code, out, _ = _pull(root, capsys, "--agency", "probation", "--to", str(second), "--gnupghome", str(copy))
    finally:
        stop_agent(copy)
    assert code == 0
    (base,) = _bases(root, "probation")
    assert out == f"skipped {base}: already pulled by {fingerprint} (use --again)\n"
    assert list(second.iterdir()) == []


def test_an_aes_zip_pull_is_tracked_per_agency(
    routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    _deliver(root, 1, capsys)
    secret = tmp_path / "pw"
    assert cli(root, "keys", "export", "--agency", "housing", "--password", "--to", str(secret)) == 0
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    assert _pull(root, capsys, "--agency", "housing", "--to", str(first), "--password-file", str(secret))[0] == 0
    code, out, _ = _pull(
        root, capsys, "--agency", "housing", "--to", str(second), "--password-file", str(secret),
        "--officer", "housing-do",
    )  # fmt: skip
    assert code == 0
    (base,) = _bases(root, "housing")
    assert out == f"skipped {base}: already pulled by agency:housing (use --again)\n"


def test_a_mistyped_gnupghome_is_a_usage_error_and_no_folder_is_made(
    routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "p"
    out_dir.mkdir()
    typo = tmp_path / "gnupg-typo"
    code, _, err = _pull(routed_root, capsys, "--agency", "probation", "--to", str(out_dir), "--gnupghome", str(typo))
    assert code == 2
    assert f"--gnupghome {str(typo)!r} is not a folder: give your existing GnuPG home" in err
    assert not typo.exists()


def test_officer_outside_a_demo_root_is_refused_with_the_fix_and_no_home_is_made(
    routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = routed_root / "keys" / "demo-officers"
    for officer in demo.iterdir():
        stop_agent(officer)
    aside = routed_root.parent / "aside"
    demo.rename(aside)  # as in a real root, made without --demo
    out_dir = tmp_path / "p"
    out_dir.mkdir()
    try:
        code, _, err = _pull(
            routed_root, capsys, "--agency", "probation", "--to", str(out_dir), "--officer", "probation-do"
        )
        assert code == 2
        assert "--officer works only in a demo root: pull with --gnupghome DIR, your own GnuPG home" in err
        assert not demo.exists()
    finally:
        aside.rename(demo)


def test_a_pull_in_the_root_records_a_signed_receipt_at_once(
    routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    _deliver(root, 1, capsys)
    out_dir = tmp_path / "p"
    out_dir.mkdir()
    assert _pull(root, capsys, "--agency", "probation", "--to", str(out_dir), "--officer", "probation-do")[0] == 0
    (base,) = _bases(root, "probation")
    fingerprint = primary_fingerprint(home(root, "probation-do"), "probation")
    with Root.open(root) as opened:
        assert [(o, f) for o, f, _ in Receipts(opened.db).of(base, "probation")] == [("probation-do", fingerprint)]
    received = [e for e in audit_entries(root) if e["event"] == "package.received"]
    assert len(received) == 1
    assert received[0]["package"] == base and received[0]["officer"] == "probation-do"
    assert received[0]["fingerprint"] == fingerprint and received[0]["agency"] == "probation"


def test_an_aes_zip_pull_with_only_a_password_makes_no_receipt_and_says_so(
    routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    _deliver(root, 1, capsys)
    secret = tmp_path / "pw"
    assert cli(root, "keys", "export", "--agency", "housing", "--password", "--to", str(secret)) == 0
    out_dir = tmp_path / "p"
    out_dir.mkdir()
    code, _, err = _pull(root, capsys, "--agency", "housing", "--to", str(out_dir), "--password-file", str(secret))
    assert code == 0
    assert "no receipt (an AES-ZIP password signs nothing): pass --gnupghome" in err
    assert not [e for e in audit_entries(root) if e["event"] == "package.received"]
    again = tmp_path / "q"
    again.mkdir()
    code, _, err = _pull(
        root, capsys, "--agency", "housing", "--to", str(again), "--password-file", str(secret),
        "--gnupghome", str(home(root, "housing-do")), "--again",
    )  # fmt: skip
    assert code == 0 and "warning" not in err
    assert [e["officer"] for e in audit_entries(root) if e["event"] == "package.received"] == ["housing-do"]
