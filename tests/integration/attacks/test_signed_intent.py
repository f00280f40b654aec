"""Finding 5 and the signature rules of finding 6: what the sender signed decides, not the file name.

The marking and period a sender intends travel as OpenPGP signature notations (`marking@iom-gateway`,
`period@iom-gateway`), covered by the officer's signature; a signature must be binary, by SHA-2,
and an armored one is carried cleanly whatever surrounds its armor.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.daemon_harness import GOOD, cli, home
from tests.integration.gpg_helpers import gpg, primary_fingerprint, stop_agent

pytestmark = pytest.mark.both_journals

PERIOD = "2026-11"
THIS_MONTH = f"{datetime.now(UTC):%Y-%m}"


def _manifests(root: Path, agency: str = "probation") -> list[dict[str, object]]:
    return [json.loads(p.read_bytes()) for p in sorted((root / "inbox" / agency).glob("*.manifest.json"))]


def _reports(root: Path) -> str:
    return "".join(p.read_text() for p in (root / "outbox" / "police" / "rejected").glob("*.report.txt"))


def _outbox(root: Path) -> Path:
    folder = root / "outbox" / "police"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def _sign_into_outbox(root: Path, name: str, *flags: str, data: bytes | None = None, suffix: str = ".sig") -> Path:
    """Sign with plain gpg as police-do (`flags` add notations, digest, text mode...) and drop both."""
    staging = root.parent / name
    staging.write_bytes(data if data is not None else GOOD.read_bytes())
    gpg(home(root, "police-do"), "--yes", *flags, "--output", str(staging) + suffix, "--detach-sign", str(staging))
    outbox = _outbox(root)
    os.replace(str(staging) + suffix, outbox / (name + suffix))
    os.replace(staging, outbox / name)
    return outbox / name


def _submit_restricted_then_rename(root: Path, tmp_path: Path, new_name: str) -> None:
    """`submit --marking RESTRICTED` a file for PERIOD, then rename the pair in the outbox as an attacker would."""
    source = tmp_path / f"sub-{PERIOD}.csv"
    source.write_bytes(GOOD.read_bytes())
    submitted = cli(
        root, "submit", str(source), "--agency", "police", "--officer", "police-do", "--marking", "RESTRICTED"
    )
    assert submitted == 0
    outbox = _outbox(root)
    for suffix in ("", ".sig"):
        os.replace(outbox / f"RESTRICTED__sub-{PERIOD}.csv{suffix}", outbox / f"{new_name}{suffix}")


def test_renaming_a_submitted_file_cannot_lower_its_marking_or_change_its_period(
    routed_root: Path, tmp_path: Path
) -> None:
    _submit_restricted_then_rename(routed_root, tmp_path, "sub-2026-01.csv")
    assert cli(routed_root, "run", "--once") == 1
    assert _manifests(routed_root) == []
    report = _reports(routed_root)
    assert "2026-01" in report and PERIOD in report and "period" in report


def test_the_signed_marking_and_period_survive_a_rename_that_drops_the_prefix(
    routed_root: Path, tmp_path: Path
) -> None:
    _submit_restricted_then_rename(routed_root, tmp_path, "monthly.csv")
    assert cli(routed_root, "run", "--once") == 0
    (manifest,) = _manifests(routed_root)
    assert manifest["marking"] == "RESTRICTED - PERSONAL" and manifest["period"] == PERIOD


def test_plain_gpg_notations_decide_marking_and_period(routed_root: Path) -> None:
    _sign_into_outbox(
        routed_root,
        "export.csv",
        "--sig-notation",
        "marking@iom-gateway=RESTRICTED",
        "--sig-notation",
        f"period@iom-gateway={PERIOD}",
    )
    assert cli(routed_root, "run", "--once") == 0
    (manifest,) = _manifests(routed_root)
    assert manifest["marking"] == "RESTRICTED - PERSONAL" and manifest["period"] == PERIOD


@pytest.mark.parametrize(
    ("name", "signed", "expected"),
    [
        ("RESTRICTED__raise.csv", "PROTECT", "RESTRICTED - PERSONAL"),  # a prefix may raise it
        ("PROTECT__lower.csv", "RESTRICTED", "RESTRICTED - PERSONAL"),  # but never lower it
    ],
)
def test_a_file_name_prefix_can_only_raise_the_signed_marking(
    routed_root: Path, name: str, signed: str, expected: str
) -> None:
    _sign_into_outbox(routed_root, name, "--sig-notation", f"marking@iom-gateway={signed}")
    assert cli(routed_root, "run", "--once") == 0
    (manifest,) = _manifests(routed_root)
    assert manifest["marking"] == expected and manifest["period"] == THIS_MONTH


@pytest.mark.parametrize(
    ("notation", "words"),
    [("marking@iom-gateway=BANANA", "marking"), ("period@iom-gateway=2026-13", "period")],
)
def test_a_notation_the_gateway_cannot_read_is_refused(routed_root: Path, notation: str, words: str) -> None:
    _sign_into_outbox(routed_root, "odd.csv", "--sig-notation", notation)
    assert cli(routed_root, "run", "--once") == 1
    assert _manifests(routed_root) == []
    assert words in _reports(routed_root)


def test_a_text_mode_signature_is_refused(routed_root: Path) -> None:
    _sign_into_outbox(routed_root, "textmode-2026-10.csv", "--textmode")
    assert cli(routed_root, "run", "--once") == 1
    assert _manifests(routed_root) == []
    assert "text mode" in _reports(routed_root)


def test_a_sha1_signature_is_refused(routed_root: Path, tmp_path: Path) -> None:
    """gpg 2.2 still makes and accepts SHA-1 signatures with an RSA key; the gateway does not."""
    officer_home = tmp_path / "rsa-officer"
    officer_home.mkdir(mode=0o700)
    nopass = ("--passphrase", "", "--pinentry-mode", "loopback")
    gpg(officer_home, *nopass, "--quick-gen-key", "Old Tools <old.tools@police.example>", "rsa3072", "sign,cert", "1y")
    fingerprint = primary_fingerprint(officer_home, "old.tools@police.example")
    gpg(officer_home, *nopass, "--quick-add-key", fingerprint, "rsa3072", "encr", "1y")
    key = tmp_path / "rsa.asc"
    key.write_bytes(gpg(officer_home, "--armor", "--export", "old.tools@police.example").stdout)
    assert (
        cli(
            routed_root,
            "officers",
            "add",
            "--agency",
            "police",
            "--role",
            "DO",
            "--name",
            "Old Tools",
            "--email",
            "old.tools@police.example",
            "--key",
            str(key),
            "--id",
            "police-old",
        )
        == 0
    )
    staging = tmp_path / "sha1-2026-10.csv"
    staging.write_bytes(GOOD.read_bytes())
    gpg(
        officer_home, "--yes", "--digest-algo", "SHA1", "--output", str(staging) + ".sig", "--detach-sign", str(staging)
    )
    outbox = _outbox(routed_root)
    os.replace(str(staging) + ".sig", outbox / "sha1-2026-10.csv.sig")
    os.replace(staging, outbox / "sha1-2026-10.csv")
    try:
        assert cli(routed_root, "run", "--once") == 1
    finally:
        stop_agent(officer_home)
    assert _manifests(routed_root) == []
    assert "SHA-1" in _reports(routed_root)


def test_an_asc_with_text_around_its_armor_travels_as_a_clean_signature(routed_root: Path, tmp_path: Path) -> None:
    staging = tmp_path / "wrapped-2026-10.csv"
    staging.write_bytes(GOOD.read_bytes())
    gpg(
        home(routed_root, "police-do"),
        "--yes",
        "--armor",
        "--output",
        str(staging) + ".asc",
        "--detach-sign",
        str(staging),
    )
    armored = Path(str(staging) + ".asc").read_bytes()
    outbox = _outbox(routed_root)
    (outbox / "wrapped-2026-10.csv.asc").write_bytes(
        b"Signed by PC Hussain for the monthly return\r\n\r\n" + armored + b"\xa9 Demo Police\r\n"
    )
    os.replace(staging, outbox / "wrapped-2026-10.csv")
    assert cli(routed_root, "run", "--once") == 0
    (manifest,) = _manifests(routed_root)
    signature = tmp_path / "sender.asc"
    signature.write_text(str(manifest["sender_signature"]))
    assert str(manifest["sender_signature"]).startswith("-----BEGIN PGP SIGNATURE-----")
    (tmp_path / "plain.csv").write_bytes(GOOD.read_bytes())
    police_do = gpg(home(routed_root, "police-do"), "--armor", "--export").stdout
    recipient_home = tmp_path / "recipient"
    recipient_home.mkdir(mode=0o700)
    try:
        gpg(recipient_home, "--import", stdin=police_do)
        result = gpg(recipient_home, "--verify", str(signature), str(tmp_path / "plain.csv"), check=False)
    finally:
        stop_agent(recipient_home)  # the import started one: many left behind exhaust inotify instances
    assert result.returncode == 0, result.stderr.decode(errors="replace")
