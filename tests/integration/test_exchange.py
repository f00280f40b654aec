"""The exchange end to end, with the real peers: officers' own GnuPG homes, plain gpg, 7-Zip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.admin.keys import export_password
from gateway.cli import main
from gateway.state.registry import Officer, Role
from gateway.state.root import Root
from tests.conftest import REPO
from tests.integration.gpg_helpers import gpg, new_officer, revocation_certificate, statuses, stop_agent

SAMPLES = REPO / "samples"
GOOD = SAMPLES / "police-good-2026-10.csv"
SURNAMES = [b"Ashcroft", b"O'Connell", b"Smith-Jones", b"Chaudhry", b"Adeyemi", b"Whitfield", b"Mistry", b"Byrne"]


@pytest.fixture
def root(demo_root: Path) -> Iterator[Path]:
    yield demo_root
    stop_agent(demo_root / "other")  # a GnuPG home some tests make inside the root


def _cli(root: Path, *args: str) -> int:
    return main(["--root", str(root), *args])


def _drop(
    root: Path, agency: str, source: Path, *, signer_home: Path | None, name: str | None = None, armor: bool = False
) -> Path:
    """Put `source` and a plain `gpg --detach-sign` signature into an outbox, as an agency's own tools would."""
    target = root / "outbox" / agency / (name or source.name)
    shutil.copyfile(source, target)
    if signer_home is not None:
        suffix = ".asc" if armor else ".sig"
        flags = ["--armor"] if armor else []
        gpg(signer_home, "--batch", "--yes", *flags, "--output", str(target) + suffix, "--detach-sign", str(target))
    return target


def _home(root: Path, officer: str) -> Path:
    return root / "keys" / "demo-officers" / officer


def _packages(root: Path) -> list[Path]:
    return sorted(p for p in (root / "inbox").rglob("*") if p.name.endswith((".csv.gpg", ".zip")))


def test_a_plain_gpg_signature_is_accepted_and_delivered_to_every_partner(root: Path) -> None:
    _drop(root, "police", GOOD, signer_home=_home(root, "police-do"), armor=True)
    assert _cli(root, "run", "--once") == 0
    assert {p.parent.name for p in _packages(root)} == {"probation", "council", "housing", "treatment", "yos"}
    assert not any((root / "outbox" / "police").glob("*.csv*"))
    for package in _packages(root):
        assert package.name.startswith("PROTECT-PERSONAL__police__2026-10__")
        manifest = json.loads(package.with_name(package.name.split(".")[0] + ".manifest.json").read_text())
        assert manifest["marking"] == "PROTECT - PERSONAL" and manifest["rows"] == 7
        assert manifest["sender"]["officer"] == "police-do"
        assert manifest["columns"][:3] == ["title", "forename", "surname"] and len(manifest["columns"]) == 18
        assert "BEGIN PGP SIGNATURE" in manifest["sender_signature"]


def test_recipient_decrypts_with_plain_gpg_and_only_their_own_home(root: Path, tmp_path: Path) -> None:
    _drop(root, "police", GOOD, signer_home=_home(root, "police-do"))
    assert _cli(root, "run", "--once") == 0
    package = next((root / "inbox" / "yos").glob("*.csv.gpg"))
    result = gpg(_home(root, "yos-pdo"), "--batch", "--status-fd", "2", "--decrypt", str(package))
    assert result.returncode == 0 and result.stdout == GOOD.read_bytes()
    assert b"GOODSIG" in result.stderr
    listing = gpg(_home(root, "yos-pdo"), "--list-packets", str(package))
    info = next(line for line in statuses(listing.stderr) if line[0] == "DECRYPTION_INFO")
    assert info[2] == "9"  # symmetric algorithm 9 = AES-256
    assert f'name="{package.name.removesuffix(".gpg")}"' in listing.stdout.decode()  # the marking travels inside
    # the sender's own signature travels in the manifest: plain gpg verifies it end to end
    manifest = json.loads(package.with_name(package.name.removesuffix(".csv.gpg") + ".manifest.json").read_text())
    (tmp_path / "sender.asc").write_text(manifest["sender_signature"])
    (tmp_path / "data.csv").write_bytes(result.stdout)
    officer_key = gpg(_home(root, "police-do"), "--armor", "--export").stdout
    gpg(_home(root, "yos-pdo"), "--batch", "--import", stdin=officer_key)
    verified = gpg(
        _home(root, "yos-pdo"), "--batch", "--verify", str(tmp_path / "sender.asc"), str(tmp_path / "data.csv")
    )
    assert verified.returncode == 0


def test_aes_zip_extracts_with_7zip_and_the_exported_password(root: Path, tmp_path: Path) -> None:
    _drop(root, "police", GOOD, signer_home=_home(root, "police-pdo"))
    assert _cli(root, "run", "--once") == 0
    package = next((root / "inbox" / "treatment").glob("*.zip"))
    password_file = tmp_path / "pw.txt"
    export_password(Root.open(root), "treatment", password_file)
    assert password_file.stat().st_mode & 0o777 == 0o600
    out = tmp_path / "x"
    result = subprocess.run(
        ["7z", "x", f"-p{password_file.read_text().strip()}", f"-o{out}", "-y", str(package)],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0
    assert next(out.iterdir()).read_bytes() == GOOD.read_bytes()
    wrong = subprocess.run(
        ["7z", "t", "-pWrong-Password-1", str(package)], capture_output=True, check=False, timeout=60
    )
    assert wrong.returncode != 0


def test_pull_writes_plain_utf8_csv_with_its_marking_beside_it_or_raw_bytes(root: Path, tmp_path: Path) -> None:
    _drop(root, "housing", SAMPLES / "housing-good-windows-1252-2026-10.csv", signer_home=_home(root, "housing-do"))
    assert _cli(root, "run", "--once") == 0
    text_dir, raw_dir = tmp_path / "text", tmp_path / "raw"
    text_dir.mkdir()
    raw_dir.mkdir()
    assert _cli(root, "pull", "--agency", "probation", "--officer", "probation-pdo", "--to", str(text_dir)) == 0
    assert _cli(root, "pull", "--agency", "probation", "--officer", "probation-do", "--to", str(raw_dir), "--raw") == 0
    written = next(text_dir.glob("*.csv"))
    lines = written.read_text(encoding="utf-8").splitlines()
    # no banner by default ([marking] banner = false): the header is the first line, the marking beside it
    assert lines[0].startswith("forename,surname,") and "Siobhán" in written.read_text(encoding="utf-8")
    assert "PROTECT - PERSONAL" not in lines and written.name.startswith("PROTECT-PERSONAL__")
    assert written.stat().st_mode & 0o777 == 0o600
    sidecar = written.with_name(written.name.removesuffix(".csv") + ".marking.txt")
    assert sidecar.read_text(encoding="utf-8") == "PROTECT - PERSONAL\n" and sidecar.stat().st_mode & 0o777 == 0o600
    raw = next(raw_dir.glob("*.csv"))
    assert raw.read_bytes() == (SAMPLES / "housing-good-windows-1252-2026-10.csv").read_bytes()
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(p.name for p in text_dir.iterdir())
    again = tmp_path / "again"
    again.mkdir()
    assert _cli(root, "pull", "--agency", "probation", "--officer", "probation-pdo", "--to", str(again)) == 0
    assert not any(again.iterdir())  # already pulled by that officer: skipped


@pytest.mark.parametrize("target", ["payload", "manifest"])
def test_a_tampered_package_is_refused_and_leaves_no_plaintext(
    root: Path, tmp_path: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _drop(root, "police", GOOD, signer_home=_home(root, "police-do"))
    assert _cli(root, "run", "--once") == 0
    payload = next((root / "inbox" / "probation").glob("*.csv.gpg"))
    victim = (
        payload if target == "payload" else payload.with_name(payload.name.removesuffix(".csv.gpg") + ".manifest.json")
    )
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    assert _cli(root, "pull", "--agency", "probation", "--officer", "probation-do", "--to", str(out)) == 1
    assert list(out.iterdir()) == []
    assert "Traceback" not in capsys.readouterr().err


def _register_other_key(root: Path, officer_id: str, agency: str, **key: str) -> Path:
    home = root / "other"
    fingerprint = new_officer(home, officer_id, f"{officer_id}@demo.invalid", **key)
    gateway = Root.open(root)
    gateway.keyring.import_public(gpg(home, "--armor", "--export", fingerprint).stdout)
    gateway.registry.add(
        Officer(officer_id, agency, Role.DO, officer_id, f"{officer_id}@demo.invalid", fingerprint, "active")
    )
    return home


def _bad_case(root: Path, case: str) -> tuple[Path, str]:
    """Set up one bad submission in police's outbox; return it and the words its report must contain."""
    if case == "no signature":
        return _drop(root, "police", GOOD, signer_home=None), "no signature arrived"
    if case == "unknown key":
        home = root / "other"
        new_officer(home, "Mallory", "mallory@demo.invalid")
        return _drop(root, "police", GOOD, signer_home=home), "no public key"
    if case == "revoked officer":
        Root.open(root).registry.revoke("police-do")
        return _drop(root, "police", GOOD, signer_home=_home(root, "police-do")), "revoked"
    if case == "officer of another agency":
        return _drop(root, "police", GOOD, signer_home=_home(root, "probation-do")), "an officer of probation"
    if case == "other bytes":
        target = _drop(root, "police", GOOD, signer_home=_home(root, "police-do"))
        target.write_bytes(GOOD.read_bytes().replace(b"Ashcroft", b"Ashcraft"))
        return target, "changed after it was signed"
    if case == "revoked key":
        home = _register_other_key(root, "police-rk", "police")
        fingerprint = Root.open(root).registry.get("police-rk").fingerprint
        certificate = revocation_certificate(home, fingerprint, root / "revoke.asc")
        Root.open(root).keyring.import_public(certificate.read_bytes())
        return _drop(root, "police", GOOD, signer_home=home), "revoked"
    if case == "expired key":
        home = _register_other_key(root, "police-old", "police", faked_time="20200101T000000", expire="1d")
        target = root / "outbox" / "police" / GOOD.name
        shutil.copyfile(GOOD, target)
        gpg(
            home,
            "--batch",
            "--faked-system-time",
            "20200101T060000",
            "--output",
            f"{target}.sig",
            "--detach-sign",
            str(target),
        )
        return target, "expired"
    if case == "unowned column":
        return (
            _drop(
                root, "council", SAMPLES / "council-unowned-column-2026-10.csv", signer_home=_home(root, "council-do")
            ),
            "not-held",
        )
    return (
        _drop(
            root, "probation", SAMPLES / "probation-invalid-rows-2026-10.csv", signer_home=_home(root, "probation-do")
        ),
        "postcode-format",
    )


BAD = [
    "no signature",
    "unknown key",
    "revoked officer",
    "officer of another agency",
    "other bytes",
    "revoked key",
    "expired key",
    "unowned column",
    "invalid rows",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_submissions_are_quarantined_with_a_report_and_nothing_is_delivered(
    root: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target, words = _bad_case(root, case)
    assert _cli(root, "run", "--once") == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert _packages(root) == []
    report = target.parent / "rejected" / target.name.replace(".csv", ".report.txt")
    assert words in report.read_text(encoding="utf-8"), report.read_text(encoding="utf-8")
    assert json.loads(report.with_suffix(".json").read_text())["file"] == target.name
    assert not target.exists() and not Path(f"{target}.sig").exists()
    quarantined = list((root / "quarantine" / target.parent.name).glob(f"{target.name}.*.gpg"))
    assert len(quarantined) == 1 and b"Ashcroft" not in quarantined[0].read_bytes()


def test_links_fifos_and_folders_in_an_outbox_are_ignored_not_followed(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = root / "outbox" / "police"
    secret = root / "elsewhere.csv"
    shutil.copyfile(GOOD, secret)
    (outbox / "link.csv").symlink_to(secret)
    os.mkfifo(outbox / "pipe.csv")
    (outbox / "folder.csv").mkdir()
    assert _cli(root, "run", "--once") == 0
    assert secret.exists() and (outbox / "link.csv").is_symlink() and _packages(root) == []
    for name in ("link.csv", "pipe.csv", "folder.csv"):
        assert name in caplog.text


def test_a_byte_identical_resubmission_is_not_delivered_twice(root: Path) -> None:
    _drop(root, "police", GOOD, signer_home=_home(root, "police-do"))
    assert _cli(root, "run", "--once") == 0
    first = _packages(root)
    _drop(root, "police", GOOD, signer_home=_home(root, "police-pdo"), name="again-2026-10.csv")
    assert _cli(root, "run", "--once") == 0
    assert _packages(root) == first
    assert "already delivered" in (root / "outbox" / "police" / "rejected" / "again-2026-10.report.txt").read_text()


def test_no_plaintext_row_lands_in_inbox_quarantine_or_state(root: Path, tmp_path: Path) -> None:
    _drop(root, "police", GOOD, signer_home=_home(root, "police-do"))
    _drop(root, "housing", SAMPLES / "housing-good-windows-1252-2026-10.csv", signer_home=_home(root, "housing-do"))
    _drop(root, "probation", SAMPLES / "probation-invalid-rows-2026-10.csv", signer_home=_home(root, "probation-do"))
    _drop(root, "council", SAMPLES / "council-unowned-column-2026-10.csv", signer_home=None)
    _cli(root, "run", "--once")
    for folder in ("inbox", "quarantine", "state"):
        for path in (root / folder).rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for surname in [*SURNAMES, b"Hughes", b"Bethany"]:
                    assert surname not in data, (path, surname)


def test_submit_signs_and_drops_atomically_and_refuses_an_invalid_file(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        _cli(root, "submit", str(GOOD), "--agency", "police", "--officer", "police-do", "--marking", "RESTRICTED") == 0
    )
    outbox = root / "outbox" / "police"
    assert (outbox / f"RESTRICTED__{GOOD.name}").read_bytes() == GOOD.read_bytes()
    assert (outbox / f"RESTRICTED__{GOOD.name}.sig").exists()
    bad = SAMPLES / "probation-invalid-rows-2026-10.csv"
    assert _cli(root, "submit", str(bad), "--agency", "probation", "--officer", "probation-do") == 1
    assert "postcode-format" in capsys.readouterr().out
    assert not (root / "outbox" / "probation" / bad.name).exists()
    assert _cli(root, "run", "--once") == 0
    assert all(p.name.startswith("RESTRICTED-PERSONAL__") for p in _packages(root))
    assert datetime.now(UTC).year >= 2026


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("Short1!", "at least 8 characters"),
        ("lowercase-only-1", "an upper-case letter"),
        ("NoDigitsHere!", "a digit"),
        ("NoSpecial123", "a special character"),
    ],
)
def test_a_hand_set_password_that_breaks_the_policy_is_refused(
    root: Path, password: str, rule: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = root / "pw.txt"
    source.write_text(password)
    source.chmod(0o600)
    before = Root.open(root).vault.records()
    assert _cli(root, "keys", "import", "--agency", "housing", "--password-file", str(source)) == 1
    err = capsys.readouterr().err
    assert rule in err and password not in err
    assert Root.open(root).vault.records() == before


def test_a_hand_set_password_that_meets_the_policy_becomes_current(root: Path) -> None:
    source = root / "pw.txt"
    source.write_text("Str0ng&Memorable-Passphrase")
    source.chmod(0o644)
    assert (
        _cli(root, "keys", "import", "--agency", "housing", "--password-file", str(source)) == 1
    )  # readable by others
    source.chmod(0o600)
    assert _cli(root, "keys", "import", "--agency", "housing", "--password-file", str(source)) == 0
    record, secret = Root.open(root).vault.current("housing")
    assert secret.reveal() == "Str0ng&Memorable-Passphrase" and record.status == "current"


def _add_police_do(root: Path, name: str, email: str, key: Path) -> int:
    return _cli(
        root,
        "officers",
        "add",
        "--agency",
        "police",
        "--role",
        "DO",
        "--name",
        name,
        "--email",
        email,
        "--key",
        str(key),
    )


def test_officers_register_from_the_command_line(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = root / "other"
    fingerprint = new_officer(home, "Karen Doyle", "k.doyle@police.example")
    key = root / "doyle.asc"
    key.write_bytes(gpg(home, "--armor", "--export", fingerprint).stdout)
    assert _add_police_do(root, "Karen Doyle", "k.doyle@police.example", key) == 0
    capsys.readouterr()
    assert _cli(root, "officers", "list", "--agency", "police", "--json") == 0
    listed = {o["id"]: o for o in json.loads(capsys.readouterr().out)}
    assert listed["police-karen-doyle"] == {
        "id": "police-karen-doyle",
        "agency": "police",
        "role": "DO",
        "name": "Karen Doyle",
        "email": "k.doyle@police.example",
        "fingerprint": fingerprint,
        "status": "active",
        "ssh_key_type": None,
        "ssh_fingerprint": None,
    }
    # her signature is accepted; after revocation it is refused
    _drop(root, "police", GOOD, signer_home=home)
    assert _cli(root, "run", "--once") == 0
    assert _cli(root, "officers", "revoke", "police-karen-doyle") == 0
    _drop(root, "police", SAMPLES / "police-good-2026-10.csv", signer_home=home, name="second-2026-10.csv")
    assert _cli(root, "run", "--once") == 1
    secret_key = root / "secret.asc"
    secret_key.write_bytes(gpg(home, "--armor", "--export-secret-keys", fingerprint).stdout)
    assert _add_police_do(root, "Leaky", "leaky@police.example", secret_key) == 1
    assert "public key" in capsys.readouterr().err
    events = [json.loads(line)["event"] for line in (root / "state" / "audit.jsonl").read_text().splitlines()]
    assert "officer.added" in events and "officer.revoked" in events


def test_pull_with_the_recipients_own_gnupg_home(root: Path) -> None:
    _drop(root, "police", GOOD, signer_home=_home(root, "police-do"))
    assert _cli(root, "run", "--once") == 0
    out = root / "out"
    out.mkdir()
    assert (
        _cli(
            root,
            "pull",
            "--agency",
            "council",
            "--gnupghome",
            str(_home(root, "council-pdo")),
            "--to",
            str(out),
            "--raw",
        )
        == 0
    )
    assert next(out.glob("*.csv")).read_bytes() == GOOD.read_bytes()
