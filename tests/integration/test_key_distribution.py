"""Key distribution: partners get every gateway key they still need and the officers' keys, from files
`keys export --gateway` and `officers export` write; `status` names who has not shown they hold a new key."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.state.root import Root
from tests.integration.daemon_harness import GOOD, cli, cli_output, drop, home, packages, short_dir
from tests.integration.gpg_helpers import gpg, statuses, stop_agent


@pytest.fixture
def partner() -> Iterator[Path]:
    """A fresh GnuPG home of a partner who has only what the gateway handed out."""
    folder = short_dir()
    path = folder / "gnupg"
    path.mkdir(mode=0o700)
    yield path
    stop_agent(path)
    shutil.rmtree(folder, ignore_errors=True)


def _deliver(root: Path, number: int) -> str:
    """Drop and deliver a new police file; return the id of probation's new package."""
    before = {p.name for p in packages(root, "probation")}
    data = GOOD.read_bytes().replace(b"Attends weekly appointments", f"Attends ({number})".encode(), 1)
    drop(root, "police", data, f"police-{number}-2026-10.csv", "police-do")
    assert cli(root, "run", "--once") == 0
    [new] = [p for p in packages(root, "probation") if p.name not in before]
    return new.name.removesuffix(".csv.gpg")


def _verify(partner: Path, root: Path, package: str) -> str | None:
    """The fingerprint that made the good signature on probation's manifest of `package`, or None."""
    manifest = root / "inbox" / "probation" / f"{package}.manifest.json"
    result = gpg(partner, "--verify", f"{manifest}.sig", str(manifest), check=False)
    valid = [line[1] for line in statuses(result.stderr) if line[0] == "VALIDSIG"]
    return valid[0] if result.returncode == 0 and valid else None


def _imported(partner: Path, armored: Path) -> set[str]:
    gpg(partner, "--import", str(armored))
    listing = gpg(partner, "--with-colons", "--list-keys").stdout.decode().splitlines()
    return {b.split(":")[9] for a, b in itertools.pairwise(listing) if a.startswith("pub:")}


@pytest.mark.slow
def test_the_exported_gateway_keys_verify_manifests_signed_before_and_after_a_rotation(
    routed_root: Path, partner: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = str(Root.open(routed_root).gateway_key())
    before = _deliver(routed_root, 1)
    assert cli(routed_root, "keys", "rotate", "--gateway", "--yes") == 0
    new = str(Root.open(routed_root).gateway_key())
    after = _deliver(routed_root, 2)
    exported = routed_root.parent / "gateway-keys.asc"
    code, out = cli_output(routed_root, capsys, "keys", "export", "--gateway", "--to", str(exported))
    assert code == 0 and str(exported) in out and new in out and old in out
    assert exported.stat().st_mode & 0o777 == 0o600
    text = exported.read_text(encoding="ascii")
    assert text.count("-----BEGIN PGP PUBLIC KEY BLOCK-----") == 1  # one armored block, both keys in it
    assert _imported(partner, exported) == {old, new}
    assert _verify(partner, routed_root, before) == old
    assert _verify(partner, routed_root, after) == new
    # without --to it goes to stdout, the same keys
    code, out = cli_output(routed_root, capsys, "keys", "export", "--gateway")
    assert code == 0 and out.count("-----BEGIN PGP PUBLIC KEY BLOCK-----") == 1 and out.strip() == text.strip()


@pytest.mark.slow
def test_a_retired_gateway_key_that_signed_nothing_live_is_not_handed_out(
    routed_root: Path, partner: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = str(Root.open(routed_root).gateway_key())
    assert cli(routed_root, "keys", "rotate", "--gateway", "--yes") == 0  # before anything was delivered
    new = str(Root.open(routed_root).gateway_key())
    exported = routed_root.parent / "gateway-keys.asc"
    code, out = cli_output(routed_root, capsys, "keys", "export", "--gateway", "--to", str(exported))
    assert code == 0 and new in out and old not in out
    assert _imported(partner, exported) == {new}


@pytest.mark.parametrize("command", [["keys", "export", "--gateway"], ["officers", "export"]])
def test_export_to_refuses_a_file_that_exists(
    routed_template: Path, tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "keys.asc"
    target.write_text("keep me\n")
    capsys.readouterr()
    assert cli(routed_template, *command, "--to", str(target)) == 2
    err = capsys.readouterr().err
    assert f"{str(target)!r}" in err and "already exists" in err and "Traceback" not in err
    assert target.read_text() == "keep me\n"


@pytest.mark.slow
def test_officers_export_lets_a_partner_verify_an_officers_own_signature(
    routed_root: Path, partner: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = Root.open(routed_root)
    police = {o.id: o.fingerprint for o in gateway.registry.all("police")}
    assert cli(routed_root, "officers", "revoke", "police-pdo", "--yes") == 0
    exported = routed_root.parent / "police-officers.asc"
    code, out = cli_output(routed_root, capsys, "officers", "export", "--agency", "police", "--to", str(exported))
    assert code == 0 and "police-do" in out and "police-pdo" not in out
    assert exported.stat().st_mode & 0o777 == 0o600
    # the active police officers only: not a revoked one, not another agency's
    active = {fingerprint for officer, fingerprint in police.items() if officer != "police-pdo"}
    assert _imported(partner, exported) == active
    signed = tmp_path / "signed.csv"
    signed.write_bytes(GOOD.read_bytes())
    gpg(home(routed_root, "police-do"), "--yes", "--output", f"{signed}.sig", "--detach-sign", str(signed))
    result = gpg(partner, "--verify", f"{signed}.sig", str(signed), check=False)
    assert result.returncode == 0
    assert [line[1] for line in statuses(result.stderr) if line[0] == "VALIDSIG"] == [police["police-do"]]
    # every agency's by default, to stdout
    code, out = cli_output(routed_root, capsys, "officers", "export")
    assert code == 0 and out.count("-----BEGIN PGP PUBLIC KEY BLOCK-----") == 1


def test_officers_export_of_an_unknown_agency_is_a_usage_error(
    routed_template: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert cli(routed_template, "officers", "export", "--agency", "nowhere") == 2
    err = capsys.readouterr().err
    assert "'nowhere'" in err and "Traceback" not in err


def _new_key(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, object] | None, str]:
    _, out = cli_output(root, capsys, "status", "--json")
    health = json.loads(out)
    _, text = cli_output(root, capsys, "status")
    return health["new_gateway_key"], text


@pytest.mark.slow
def test_status_lists_agencies_that_have_not_pulled_anything_signed_by_the_new_gateway_key(
    routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _deliver(routed_root, 1)
    assert _new_key(routed_root, capsys)[0] is None  # never rotated
    assert cli(routed_root, "keys", "rotate", "--gateway", "--yes") == 0
    new = str(Root.open(routed_root).gateway_key())
    pull = ["pull", "--agency", "probation", "--officer", "probation-do", "--again"]
    # probation pulls the package the old key signed: that says nothing about the new key
    (tmp_path / "old").mkdir()
    assert cli(routed_root, *pull, "--to", str(tmp_path / "old")) == 0
    found, text = _new_key(routed_root, capsys)
    # every agency something is routed to (in the demo: all of them) until one of its officers does
    everyone = sorted(Root.open(routed_root).config.agencies)
    assert found is not None and found["fingerprint"] == new and found["not_pulled_by"] == everyone
    assert f"no officer of {', '.join(everyone)} has yet pulled a package signed by the new gateway key {new}" in text
    _deliver(routed_root, 2)
    (tmp_path / "new").mkdir()
    assert cli(routed_root, *pull, "--to", str(tmp_path / "new")) == 0
    found, text = _new_key(routed_root, capsys)
    rest = [agency for agency in everyone if agency != "probation"]
    assert found is not None and found["not_pulled_by"] == rest
    assert f"no officer of {', '.join(rest)} has yet pulled a package signed by the new gateway key {new}" in text
