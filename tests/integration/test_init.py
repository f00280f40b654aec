"""`init` is all-or-nothing: a failed first init leaves the folder as it was, a rerun starts afresh, and a
real root's gateway key is named after its partnership (only a demo's says DEMO KEY)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import main
from tests.conftest import REPO
from tests.integration.gpg_helpers import gpg, stop_agent

EXAMPLE = (REPO / "gateway" / "resources" / "gateway.toml").read_text(encoding="utf-8")
PARTNERSHIP = "Warwickshire IOM Partnership"


@pytest.fixture
def folder() -> Iterator[Path]:
    # gpg-agent sockets live in the GnuPG homes here, and a socket path may not exceed 108 bytes
    parent = Path(tempfile.mkdtemp(prefix="iom", dir="/tmp"))
    yield parent / "root"
    for home in [parent / "root" / "keys" / "gnupg", *(parent / "root" / "keys" / "demo-officers").glob("*")]:
        stop_agent(home)
    shutil.rmtree(parent)


def real_root(path: Path, partnership: str = PARTNERSHIP, *, passphrase: bool = True) -> Path:
    """What an admin prepares before `init`: a folder with an edited gateway.toml and the passphrase file."""
    path.mkdir(mode=0o700)
    toml = EXAMPLE.replace('name = "Demo IOM Partnership"', f'name = "{partnership}"')
    assert toml != EXAMPLE
    (path / "gateway.toml").write_text(toml, encoding="utf-8")
    if passphrase:
        (path / "keys").mkdir(mode=0o700)
        secret = path / "keys" / "vault-passphrase"
        secret.write_text("correct horse battery staple\n", encoding="utf-8")
        secret.chmod(0o600)
    return path


def tree(path: Path) -> dict[str, bytes | None]:
    """Every name under `path` (a folder maps to None, a file to its bytes)."""
    return {str(p.relative_to(path)): None if p.is_dir() else p.read_bytes() for p in sorted(path.rglob("*"))}


def gateway_uids(root: Path) -> list[str]:
    """The user ids of the keys whose secret the gateway holds (officers' public keys are beside them)."""
    listing = gpg(root / "keys" / "gnupg", "--with-colons", "--list-secret-keys").stdout.decode()
    return [line.split(":")[9] for line in listing.splitlines() if line.startswith("uid:")]


def test_init_of_a_path_that_is_a_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "hostname"
    afile.write_text("gateway\n")
    for target in (afile, afile / "below"):
        assert main(["--root", str(target), "init"]) == 2
        err = capsys.readouterr().err
        assert f"{str(target)!r} is not a folder: pass --root" in err
        assert "Traceback" not in err
    assert afile.read_text() == "gateway\n"


def test_a_missing_passphrase_file_is_named_with_how_to_make_it_and_init_leaves_nothing_behind(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real_root(folder, passphrase=False)
    before = tree(folder)
    assert main(["--root", str(folder), "init"]) == 1
    err = capsys.readouterr().err
    secret = folder / "keys" / "vault-passphrase"
    assert f"{str(secret)!r}, the [vault] passphrase_file in gateway.toml, does not exist" in err
    assert f"head -c 32 /dev/urandom | base64 > {secret}" in err
    assert "init made nothing" in err
    assert tree(folder) == before  # no folders, no keys/, no state/, no gateway key


def test_a_failure_after_the_folders_leaves_nothing_and_the_rerun_names_the_key_after_the_fixed_partnership(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real_root(folder, partnership="Warwickshire <IOM>")  # gpg refuses the name: after folders and vault checks
    before = tree(folder)
    assert main(["--root", str(folder), "init"]) == 1
    err = capsys.readouterr().err
    assert "contains a line break, control character or one of '<>'" in err and "init made nothing" in err
    assert str(folder / ".init-") not in err  # the message names the root, not the staging folder
    assert tree(folder) == before
    (folder / "gateway.toml").write_text(
        (folder / "gateway.toml").read_text().replace("Warwickshire <IOM>", PARTNERSHIP), encoding="utf-8"
    )
    assert main(["--root", str(folder), "init"]) == 0, capsys.readouterr().err
    assert gateway_uids(folder) == [f"{PARTNERSHIP} IOM gateway <gateway@warwickshire-iom-partnership.invalid>"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "gateway.toml",
        "inbox",
        "keys",
        "outbox",
        "quarantine",
        "schemas",
        "state",
    ]
    assert (folder / "keys" / "vault.json").is_file()
    assert {p.name for p in (folder / "outbox").iterdir()} == {
        "police",
        "probation",
        "council",
        "housing",
        "treatment",
        "yos",
    }
    for private in ("keys", "state"):
        assert (folder / private).stat().st_mode & 0o777 == 0o700
    capsys.readouterr()
    assert main(["--root", str(folder), "audit", "verify"]) == 0, capsys.readouterr().out


def test_a_demo_failing_after_its_gateway_key_leaves_nothing_and_a_rerun_starts_a_fresh_log(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder.mkdir(mode=0o700)
    # the demo officers' keys are made after the gateway key and the vault: gpg refuses this officer name
    toml = EXAMPLE.replace('name = "Demo Youth Offending Service"', 'name = "Demo <Youth> Service"')
    (folder / "gateway.toml").write_text(toml, encoding="utf-8")
    before = tree(folder)
    assert main(["--root", str(folder), "init", "--demo"]) == 1
    assert "init made nothing" in capsys.readouterr().err
    assert tree(folder) == before
    (folder / "gateway.toml").write_text(EXAMPLE, encoding="utf-8")
    assert main(["--root", str(folder), "init", "--demo"]) == 0, capsys.readouterr().err
    assert gateway_uids(folder) == [
        "Demo IOM Partnership IOM gateway (DEMO KEY, never for real data) <gateway@demo-iom-partnership.invalid>"
    ]
    assert main(["--root", str(folder), "audit", "verify"]) == 0, capsys.readouterr().out


def test_init_demo_in_a_new_folder_leaves_nothing_when_it_fails(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IOM_GATEWAY_VAULT_PASSPHRASE", "too short")
    target = folder / "new" / "root"
    assert main(["--root", str(target), "init", "--demo"]) == 1
    assert "needs at least 12 characters" in capsys.readouterr().err
    assert not folder.exists()  # not the folder, nor the parents init made for it


def test_an_interrupted_init_is_cleaned_up_and_a_root_with_state_but_no_journal_is_refused(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real_root(folder)
    stale = folder / ".init-abcd1234"  # what a killed init leaves
    (stale / "keys" / "gnupg").mkdir(parents=True, mode=0o700)
    (folder / "state").mkdir(mode=0o700)
    (folder / "state" / "audit.jsonl").write_text("{}\n")  # not init's: it must not be replaced
    before = tree(folder)
    del before[".init-abcd1234"], before[".init-abcd1234/keys"], before[".init-abcd1234/keys/gnupg"]
    assert main(["--root", str(folder), "init"]) == 1
    err = capsys.readouterr().err
    assert "already holds 'state/audit.jsonl', which init makes" in err and "move them aside" in err
    assert tree(folder) == before
    os.unlink(folder / "state" / "audit.jsonl")
    assert main(["--root", str(folder), "init"]) == 0, capsys.readouterr().err
    assert not [p for p in folder.iterdir() if p.name.startswith(".init-")]


def test_init_again_completes_the_root_with_an_added_agency_and_keeps_its_gateway_key(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real_root(folder)
    assert main(["--root", str(folder), "init"]) == 0
    first = capsys.readouterr().out
    with (folder / "gateway.toml").open("a", encoding="utf-8") as toml:
        toml.write('\n[agencies.fire]\nname = "Fire and Rescue"\nkind = "council"\ndelivery = "aes-zip"\n')
    assert main(["--root", str(folder), "init"]) == 0
    assert capsys.readouterr().out == first  # the same gateway key
    assert all((folder / box / "fire").is_dir() for box in ("outbox", "inbox", "quarantine"))
    assert len(gateway_uids(folder)) == 1


def test_a_rotated_gateway_key_is_named_after_the_partnership_as_it_is_now(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real_root(folder, partnership="Exeter IOM Partnership")
    assert main(["--root", str(folder), "init"]) == 0
    toml = folder / "gateway.toml"
    toml.write_text(toml.read_text().replace("Exeter IOM Partnership", PARTNERSHIP), encoding="utf-8")
    assert main(["--root", str(folder), "keys", "rotate", "--gateway"]) == 0, capsys.readouterr().err
    assert gateway_uids(folder) == [
        "Exeter IOM Partnership IOM gateway <gateway@exeter-iom-partnership.invalid>",
        f"{PARTNERSHIP} IOM gateway <gateway@warwickshire-iom-partnership.invalid>",
    ]


def test_init_demo_refuses_a_real_root_and_changes_nothing(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    real_root(folder)
    assert main(["--root", str(folder), "init"]) == 0
    capsys.readouterr()
    before = tree(folder)
    assert main(["--root", str(folder), "init", "--demo"]) == 2
    err = capsys.readouterr().err
    assert f"{str(folder)!r} is a real gateway root" in err and "init --demo would add demo officers" in err
    assert tree(folder) == before
    assert not (folder / "keys" / "demo-officers").exists()
