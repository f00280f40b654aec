"""`pull --from` on a recipient's own machine: a copy of inbox/<agency>/, the gateway's public keys, no root
(issue 12, items 1 and 2's producing half)."""

from __future__ import annotations

import itertools
import json
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.core.receipt import RECEIPT_SUFFIX, SIGNATURE_SUFFIX, parse_receipt
from gateway.state.root import Root
from tests.integration.daemon_harness import GOOD, cli, drop, home
from tests.integration.gpg_helpers import gpg, new_officer, primary_fingerprint, stop_agent

pytestmark = pytest.mark.slow


def _variant(number: int) -> bytes:
    return GOOD.read_bytes().replace(b"Attends weekly appointments", f"Attends ({number})".encode(), 1)


def _deliver(root: Path, number: int, capsys: pytest.CaptureFixture[str]) -> None:
    drop(root, "police", _variant(number), f"police-{number}-2026-10.csv", "police-do")
    capsys.readouterr()
    assert cli(root, "run", "--once") == 0, capsys.readouterr()


def _export(root: Path, fingerprint: str, to: Path) -> Path:
    to.write_bytes(gpg(root / "keys" / "gnupg", "--armor", "--export", fingerprint).stdout)
    return to


def _away(root: Path, agency: str, where: Path) -> Path:
    """A copy of the agency's inbox, as SFTP would fetch it, in a folder that has nothing to do with the root."""
    copy = where / f"download-{agency}"
    shutil.copytree(root / "inbox" / agency, copy)
    return copy


def _officer_home(root: Path, officer: str, where: Path) -> Path:
    """The officer's own GnuPG home: their key pair, and no gateway key at all."""
    copy = where / "gnupg"
    shutil.copytree(home(root, officer), copy, ignore=shutil.ignore_patterns("S.*"))
    own = primary_fingerprint(copy, officer.split("-", maxsplit=1)[0])
    listing = gpg(copy, "--with-colons", "--list-keys").stdout.decode().splitlines()
    primaries = {line.split(":")[9] for prev, line in itertools.pairwise(listing) if prev.startswith("pub:")}
    for fingerprint in primaries:
        if fingerprint != own and gpg(copy, "--list-secret-keys", fingerprint, check=False).returncode != 0:
            gpg(copy, "--yes", "--delete-keys", fingerprint)
    return copy


def _pull(capsys: pytest.CaptureFixture[str], noroot: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--root", str(noroot), "pull", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert not noroot.exists()  # no root was opened, made or needed
    return code, out, err


def _bases(folder: Path) -> list[str]:
    return sorted(p.name.split(".")[0] for p in folder.iterdir() if p.name.endswith((".csv.gpg", ".zip")))


@pytest.fixture
def setup(routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[dict[str, Path]]:
    for number in (1, 2, 3):
        _deliver(routed_root, number, capsys)
    where = tmp_path / "laptop"
    where.mkdir()
    key = _export(routed_root, str(Root.open(routed_root).gateway_key()), where / "gateway.asc")
    out = where / "out"
    out.mkdir()
    homedir = _officer_home(routed_root, "probation-do", where)
    yield {"root": routed_root, "where": where, "key": key, "out": out, "home": homedir}
    stop_agent(homedir)


def test_openpgp_packages_are_pulled_with_no_root_and_signed_receipts_are_written(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    source = _away(setup["root"], "probation", setup["where"])
    out, officer = setup["out"], setup["home"]
    noroot = setup["where"] / "no-root"
    args = ("--from", str(source), "--to", str(out), "--gateway-key", str(setup["key"]), "--gnupghome", str(officer))
    code, printed, err = _pull(capsys, noroot, *args)
    assert code == 0, err
    bases = _bases(source)
    assert len(bases) == 3 and printed.count("wrote ") == 3 and printed.count("receipt ") == 3
    assert sorted(p.name for p in out.glob("*.csv")) == [f"{b}.csv" for b in bases]
    fingerprint = primary_fingerprint(officer, "probation")
    for base in bases:
        receipt, signature = out / "receipts" / (base + RECEIPT_SUFFIX), out / "receipts" / (base + SIGNATURE_SUFFIX)
        parsed = parse_receipt(receipt.read_bytes())
        manifest = json.loads((source / f"{base}.manifest.json").read_text())
        assert (parsed.package, parsed.agency, parsed.fingerprint) == (base, "probation", fingerprint)
        assert parsed.payload_sha256 == manifest["payload_sha256"]
        assert parsed.plaintext_sha256 == manifest["plaintext_sha256"]
        check = gpg(officer, "--verify", str(signature), str(receipt))  # a binary detached signature by the officer
        assert f"VALIDSIG {fingerprint}".encode() in check.stderr or fingerprint.encode() in check.stderr
    state = out / ".iom-gateway.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert json.loads(state.read_text())["gateway_keys"] == [str(Root.open(setup["root"]).gateway_key())]
    code, printed, _ = _pull(capsys, noroot, *args)
    assert code == 0
    assert printed == "".join(f"skipped {b}: already pulled by {fingerprint} (use --again)\n" for b in bases)
    code, printed, _ = _pull(capsys, noroot, *args, "--again")
    assert code == 0 and printed.count("wrote ") == 3


def test_aes_zip_packages_are_pulled_with_a_password_and_no_receipt_without_a_key(
    setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = setup["root"]
    source = _away(root, "housing", setup["where"])
    secret = tmp_path / "pw"
    assert cli(root, "keys", "export", "--agency", "housing", "--password", "--to", str(secret)) == 0
    args = ("--from", str(source), "--to", str(setup["out"]), "--gateway-key", str(setup["key"]))
    code, printed, err = _pull(capsys, tmp_path / "nr", *args, "--password-file", str(secret))
    assert code == 0, err
    assert printed.count("wrote ") == 3
    assert err.count("no receipt (an AES-ZIP password signs nothing): pass --gnupghome") == 3
    assert not (setup["out"] / "receipts").exists()
    code, printed, _ = _pull(capsys, tmp_path / "nr", *args, "--password-file", str(secret))
    assert printed.count("already pulled by agency:housing") == 3


@pytest.mark.parametrize("damage", ["payload", "manifest", "signature", "swap"])
def test_a_damaged_package_fails_alone_and_the_others_are_pulled(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    source = _away(setup["root"], "probation", setup["where"])
    first, second, third = _bases(source)
    names = {
        "payload": [f"{first}.csv.gpg"],
        "manifest": [f"{first}.manifest.json"],
        "signature": [f"{first}.manifest.json.sig"],
    }
    if damage == "swap":
        a, b = source / f"{first}.manifest.json", source / f"{second}.manifest.json"
        sa, sb = source / f"{first}.manifest.json.sig", source / f"{second}.manifest.json.sig"
        a_bytes, sa_bytes = a.read_bytes(), sa.read_bytes()
        a.write_bytes(b.read_bytes())
        sa.write_bytes(sb.read_bytes())
        b.write_bytes(a_bytes)
        sb.write_bytes(sa_bytes)
        failing = {first, second}
    else:
        target = source / names[damage][0]
        data = bytearray(target.read_bytes())
        # in a signature, the middle may be the unsigned issuer subpacket: flip the signature value itself
        data[-3 if damage == "signature" else len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
        failing = {first}
    out = setup["out"]
    args = (
        "--from",
        str(source),
        "--to",
        str(out),
        "--gateway-key",
        str(setup["key"]),
        "--gnupghome",
        str(setup["home"]),
    )
    code, _printed, err = _pull(capsys, setup["where"] / "nr", *args)
    assert code == 1
    for base in failing:
        assert f"iom-gateway: REFUSED {base}: " in err
    pulled = {first, second, third} - failing
    assert sorted(p.name for p in out.glob("*.csv")) == sorted(f"{b}.csv" for b in pulled)
    kept = {f"{b}{suffix}" for b in pulled for suffix in (".csv", ".marking.txt")}  # each pulled CSV and its marking
    left = {p.name for p in out.iterdir()} - {".iom-gateway.json", "receipts"} - kept
    assert left == set()  # nothing partial of the failed ones
    if damage in ("manifest", "signature"):
        assert "damaged or tampered" in err
    if damage == "swap":
        assert "the manifest names another package" in err


def test_a_manifest_signed_by_another_key_is_refused_naming_both_fingerprints(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    source = _away(setup["root"], "probation", setup["where"])
    first = _bases(source)[0]
    rogue_home = setup["where"] / "rogue"
    rogue = new_officer(rogue_home, "Mallory Rogue", "mallory@rogue.example")
    manifest = source / f"{first}.manifest.json"
    signature = source / f"{first}.manifest.json.sig"
    signature.unlink()
    gpg(
        rogue_home,
        "--sig-notation",
        "purpose@iom-gateway=manifest",
        "--output",
        str(signature),
        "--detach-sign",
        str(manifest),
    )
    rogue_key = setup["where"] / "rogue.asc"
    rogue_key.write_bytes(gpg(rogue_home, "--armor", "--export", rogue).stdout)
    stop_agent(rogue_home)
    gateway = str(Root.open(setup["root"]).gateway_key())
    args = ("--from", str(source), "--to", str(setup["out"]), "--gnupghome", str(setup["home"]))
    keys = ("--gateway-key", str(setup["key"]), "--gateway-key", str(rogue_key), "--gateway-fingerprint", gateway)
    code, printed, err = _pull(capsys, setup["where"] / "nr", *args, *keys)
    assert code == 1
    assert printed.count("wrote ") == 2
    assert (
        f"{first}.manifest.json is signed by {rogue}, not by the gateway key pinned for this folder ({gateway})" in err
    )
    # pinned on first use: the same rogue key offered without --gateway-fingerprint is refused again
    code, _, err = _pull(
        capsys, setup["where"] / "nr", *args, "--gateway-key", str(rogue_key), "--gateway-key", str(setup["key"])
    )
    assert code == 1 and f"is signed by {rogue}, not by the gateway key pinned" in err


def test_packages_from_before_and_after_a_gateway_rotation_need_both_keys_and_a_missing_one_is_named(
    routed_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _deliver(routed_root, 1, capsys)
    old = str(Root.open(routed_root).gateway_key())
    assert cli(routed_root, "keys", "rotate", "--gateway", "--yes") == 0
    new = str(Root.open(routed_root).gateway_key())
    _deliver(routed_root, 2, capsys)
    where = tmp_path / "laptop"
    where.mkdir()
    old_key, new_key = _export(routed_root, old, where / "old.asc"), _export(routed_root, new, where / "new.asc")
    both = where / "both.asc"
    both.write_bytes(old_key.read_bytes() + new_key.read_bytes())  # one file may hold several keys
    source = _away(routed_root, "probation", where)
    officer = _officer_home(routed_root, "probation-do", where)
    try:
        only_old, all_keys = where / "a", where / "b"
        only_old.mkdir()
        all_keys.mkdir()
        base = ("--from", str(source), "--gnupghome", str(officer))
        code, printed, err = _pull(capsys, where / "nr", *base, "--to", str(only_old), "--gateway-key", str(old_key))
        assert code == 1 and printed.count("wrote ") == 1
        assert f"is signed by gateway key {new}, which no --gateway-key file holds" in err
        assert "`iom-gateway keys export --gateway`" in err
        code, printed, err = _pull(capsys, where / "nr", *base, "--to", str(all_keys), "--gateway-key", str(both))
        assert code == 0, err
        assert printed.count("wrote ") == 2
    finally:
        stop_agent(officer)


def test_usage_mistakes_exit_2_and_make_nothing(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    source = _away(setup["root"], "probation", setup["where"])
    out, key = str(setup["out"]), str(setup["key"])
    typo = setup["where"] / "gnupg-typo"
    cases = [
        (["--from", str(source), "--to", out, "--gateway-key", key, "--gnupghome", str(typo)], "is not a folder"),
        (["--from", str(source), "--to", out, "--gnupghome", str(setup["home"])], "pass --gateway-key FILE"),
        (["--from", str(source), "--to", out, "--gateway-key", key, "--agency", "probation"], "takes no --agency"),
        (["--from", str(setup["where"] / "nope"), "--to", out, "--gateway-key", key], "--from"),
        (["--from", str(source), "--to", out, "--gateway-key", key, "--receipts", str(typo / "r")], "--receipts"),
    ]
    for argv, message in cases:
        code, _, err = _pull(capsys, setup["where"] / "nr", *argv)
        assert code == 2, (argv, err)
        assert message in err
    assert not typo.exists()
    assert list(setup["out"].iterdir()) == []


def test_receipts_pull_from_wrote_are_recorded_once_uploaded_and_the_register_names_the_officer(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    source = _away(setup["root"], "probation", setup["where"])
    args = ("--from", str(source), "--to", str(setup["out"]), "--gateway-key", str(setup["key"]))
    code, _, err = _pull(capsys, setup["where"] / "no-root", *args, "--gnupghome", str(setup["home"]))
    assert code == 0, err
    uploads = setup["root"] / "outbox" / "probation" / "receipts"
    for made in sorted((setup["out"] / "receipts").iterdir(), key=lambda p: p.name.endswith(".sig"), reverse=True):
        shutil.copy(made, uploads / made.name)  # signature first, as the README says to upload them
    capsys.readouterr()
    assert main(["--root", str(setup["root"]), "run", "--once"]) == 0
    out = capsys.readouterr().out
    assert out.count("received  probation/") == 3 and "by probation-do" in out, out
    assert list(uploads.iterdir()) == []
    assert main(["--root", str(setup["root"]), "audit", "report", "--month", "2026-10", "--format", "json"]) == 0
    rows = [row for row in json.loads(capsys.readouterr().out) if row["to_agency"] == "probation"]
    assert rows and {row["received_by"] for row in rows} == {"probation-do"}


def test_a_correction_pulled_away_from_the_gateway_marks_the_file_it_supersedes(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, where = setup["root"], setup["where"]
    before = _bases(root / "inbox" / "probation")
    fixed = where / "police-fixed-2026-10.csv"
    fixed.write_bytes(_variant(9))
    submit = ["submit", str(fixed), "--agency", "police", "--officer", "police-do", "--corrects", before[0]]
    assert cli(root, *submit) == 0 and cli(root, "run", "--once") == 0
    (later,) = set(_bases(root / "inbox" / "probation")) - set(before)
    source = _away(root, "probation", where)
    args = ("--from", str(source), "--to", str(setup["out"]), "--gateway-key", str(setup["key"]))
    code, printed, err = _pull(capsys, where / "no-root", *args, "--gnupghome", str(setup["home"]))
    assert code == 0, err
    assert f"superseded {before[0]}.csv: {later} corrects it" in printed, printed
    marker = setup["out"] / f"{before[0]}.superseded.txt"
    assert later in marker.read_text() and stat.S_IMODE(marker.stat().st_mode) == 0o600
    assert (setup["out"] / f"{later}.csv").read_bytes() == _variant(9)
