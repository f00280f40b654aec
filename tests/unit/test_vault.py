"""The password vault: encrypted at rest, authenticated header, private file, atomic saves."""

from __future__ import annotations

import base64
import json
import shutil
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.adapters.vault import PasswordRecord, Vault
from gateway.core.errors import PolicyError, VaultError
from gateway.core.secret import Secret

PASSPHRASE = Secret("correct horse battery staple")
PASSWORD = Secret("Xq7#housing-Password-2026")
NOW = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
WRONG = "the vault passphrase is wrong, or the vault was altered: check IOM_GATEWAY_VAULT_PASSPHRASE"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "vault.json"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vault holding one housing password, made once: scrypt costs ~0.1 s per derivation."""
    path = tmp_path_factory.mktemp("template") / "vault.json"
    Vault.create(path, PASSPHRASE).add("housing", PASSWORD, NOW)
    return path


@pytest.fixture
def saved(template: Path, path: Path) -> Path:
    shutil.copy2(template, path)
    return path


def _edit(path: Path, change: dict[str, object]) -> None:
    document = json.loads(path.read_bytes())
    for key, value in change.items():
        if key.startswith("kdf."):
            document["kdf"][key[4:]] = value
        else:
            document[key] = value
    path.write_text(json.dumps(document))


def test_create_open_round_trip(saved: Path) -> None:
    vault = Vault.open(saved, PASSPHRASE)
    record, secret = vault.current("housing")
    assert secret.reveal() == PASSWORD.reveal()
    assert record.agency == "housing" and record.status == "current" and record.created == NOW
    assert record.id.startswith("pw-housing-") and len(record.id) == len("pw-housing-") + 8
    int(record.id[-8:], 16)
    assert vault.password(record.id).reveal() == PASSWORD.reveal()


def test_the_file_is_private_and_holds_neither_password_nor_passphrase(saved: Path) -> None:
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    data = saved.read_bytes()
    for secret in (PASSWORD, PASSPHRASE):
        assert secret.reveal().encode() not in data
        assert base64.b64encode(secret.reveal().encode()) not in data
    document = json.loads(data)
    assert document["format"] == "iom-gateway-vault" and document["version"] == 1
    assert document["kdf"] | {"salt": ""} == {"name": "scrypt", "salt": "", "n": 32768, "r": 8, "p": 1}
    assert len(base64.b64decode(document["kdf"]["salt"])) >= 16
    assert not list(saved.parent.glob(".*.tmp"))


def test_repr_and_records_show_no_secret(saved: Path) -> None:
    vault = Vault.open(saved, PASSPHRASE)
    shown = repr(vault) + repr(vault.records()) + str(vault.current("housing"))
    assert PASSWORD.reveal() not in shown and PASSPHRASE.reveal() not in shown
    assert all(isinstance(record, PasswordRecord) for record in vault.records())


def test_wrong_passphrase_is_refused(saved: Path) -> None:
    with pytest.raises(VaultError) as raised:
        Vault.open(saved, Secret("not the passphrase at all"))
    assert raised.value.message == WRONG


@pytest.mark.parametrize("where", [0, -1])  # the data, the GCM tag
def test_a_flipped_ciphertext_byte_is_refused(saved: Path, where: int) -> None:
    document = json.loads(saved.read_bytes())
    ciphertext = bytearray(base64.b64decode(document["ciphertext"]))
    ciphertext[where] ^= 0x01
    _edit(saved, {"ciphertext": base64.b64encode(bytes(ciphertext)).decode()})
    with pytest.raises(VaultError) as raised:
        Vault.open(saved, PASSPHRASE)
    assert raised.value.message == WRONG


def test_a_flipped_nonce_byte_is_refused(saved: Path) -> None:
    nonce = bytearray(base64.b64decode(json.loads(saved.read_bytes())["nonce"]))
    nonce[0] ^= 0x80
    _edit(saved, {"nonce": base64.b64encode(bytes(nonce)).decode()})
    with pytest.raises(VaultError, match="passphrase is wrong, or the vault was altered"):
        Vault.open(saved, PASSPHRASE)


@pytest.mark.parametrize("change", [{"kdf.n": 16384}, {"kdf.r": 9}])
def test_an_edited_header_fails_authentication(saved: Path, change: dict[str, object]) -> None:
    _edit(saved, change)
    with pytest.raises(VaultError) as raised:
        Vault.open(saved, PASSPHRASE)
    assert raised.value.message == WRONG


def test_an_edited_salt_fails_authentication(saved: Path) -> None:
    salt = bytearray(base64.b64decode(json.loads(saved.read_bytes())["kdf"]["salt"]))
    salt[3] ^= 0x01
    _edit(saved, {"kdf.salt": base64.b64encode(bytes(salt)).decode()})
    with pytest.raises(VaultError, match="passphrase is wrong"):
        Vault.open(saved, PASSPHRASE)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"kdf.n": 32769}, "is not an iom-gateway vault"),
        ({"kdf.n": 1 << 24}, "is not an iom-gateway vault"),  # refused before scrypt could exhaust memory
        ({"kdf.n": True}, "is not an iom-gateway vault"),
        ({"kdf.name": "pbkdf2"}, "is not an iom-gateway vault"),
        ({"format": "something-else"}, "is not an iom-gateway vault"),
        ({"nonce": "AAAA"}, "is not an iom-gateway vault"),
        ({"ciphertext": "not base64!"}, "is not an iom-gateway vault"),
        ({"version": 2}, "upgrade iom-gateway"),
    ],
)
def test_a_malformed_header_names_the_file(saved: Path, change: dict[str, object], says: str) -> None:
    _edit(saved, change)
    with pytest.raises(VaultError, match=says) as raised:
        Vault.open(saved, PASSPHRASE)
    assert repr(str(saved)) in raised.value.message


@pytest.mark.parametrize("content", [b"", b"\xff\xfe garbage", b"[]", b'{"format": "iom-gateway-vault"}'])
def test_a_file_that_is_not_a_vault_is_refused(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    with pytest.raises(VaultError, match="is not an iom-gateway vault") as raised:
        Vault.open(path, PASSPHRASE)
    assert "restore keys/ from a backup" in raised.value.message


def test_a_missing_vault_names_the_path_and_the_fix(path: Path) -> None:
    with pytest.raises(VaultError) as raised:
        Vault.open(path, PASSPHRASE)
    assert repr(str(path)) in raised.value.message and "iom-gateway init" in raised.value.message


def test_a_symlinked_vault_is_refused(saved: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.json"
    link.symlink_to(saved)
    with pytest.raises(VaultError, match="symbolic link"):
        Vault.open(link, PASSPHRASE)


def test_create_refuses_an_existing_file(saved: Path) -> None:
    before = saved.read_bytes()
    with pytest.raises(VaultError, match="already exists"):
        Vault.create(saved, PASSPHRASE)
    assert saved.read_bytes() == before


@pytest.mark.parametrize("passphrase", ["", "elevenchars"])
def test_create_refuses_a_short_passphrase(path: Path, passphrase: str) -> None:
    with pytest.raises(PolicyError, match="at least 12 characters"):
        Vault.create(path, Secret(passphrase))
    assert not path.exists()


def test_add_retires_the_previous_current_and_survives_reopening(saved: Path) -> None:
    vault = Vault.open(saved, PASSPHRASE)
    old, _ = vault.current("housing")
    newer = vault.add("housing", Secret("Second#Password-99"), NOW + timedelta(days=30))
    other = vault.add("treatment", Secret("Treatment#Pass-42"), NOW + timedelta(days=1))
    assert newer.id != old.id

    reopened = Vault.open(saved, PASSPHRASE)
    assert [(r.id, r.status) for r in reopened.records()] == [
        (old.id, "retired"),
        (newer.id, "current"),
        (other.id, "current"),
    ]
    assert reopened.current("housing") == (newer, Secret("Second#Password-99"))
    assert reopened.password(old.id).reveal() == PASSWORD.reveal()  # kept to open live packages
    assert reopened.current("treatment")[0] == other


def test_every_save_uses_a_fresh_nonce(saved: Path) -> None:
    first = json.loads(saved.read_bytes())["nonce"]
    Vault.open(saved, PASSPHRASE).add("housing", Secret("Another#Password-7"), NOW)
    assert json.loads(saved.read_bytes())["nonce"] != first


def test_created_times_are_kept_in_utc(path: Path) -> None:
    vault = Vault.create(path, PASSPHRASE)
    record = vault.add("yos", PASSWORD, datetime(2026, 6, 1, 10, 0, tzinfo=timezone(timedelta(hours=1))))
    assert record.created == datetime(2026, 6, 1, 9, 0, tzinfo=UTC) and record.created.tzinfo == UTC


def test_an_agency_without_a_password_names_the_command(path: Path) -> None:
    vault = Vault.create(path, PASSPHRASE)
    with pytest.raises(VaultError) as raised:
        vault.current("council")
    assert raised.value.message.startswith("no password for agency 'council'")
    assert "keys import --agency council" in raised.value.message
    with pytest.raises(VaultError, match="no password with id 'pw-council-00000000'"):
        vault.password("pw-council-00000000")


@pytest.mark.parametrize(
    ("agency", "password", "now"),
    [
        ("../police", PASSWORD, NOW),
        ("housing", Secret(""), NOW),
        ("housing", PASSWORD, datetime(2026, 1, 1)),  # naive: which zone?
    ],
)
def test_add_refuses_bad_arguments_and_leaves_the_file_alone(
    saved: Path, agency: str, password: Secret, now: datetime
) -> None:
    before = saved.read_bytes()
    vault = Vault.open(saved, PASSPHRASE)
    with pytest.raises(ValueError, match="add"):
        vault.add(agency, password, now)
    assert saved.read_bytes() == before and len(vault.records()) == 1


def test_a_failed_save_changes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    folder.mkdir()
    vault = Vault.create(folder / "vault.json", PASSPHRASE)
    vault.add("housing", PASSWORD, NOW)
    before = (folder / "vault.json").read_bytes()
    folder.rename(tmp_path / "away")  # the save cannot make its temp file, even as root
    with pytest.raises(FileNotFoundError):
        vault.add("housing", Secret("Second#Password-99"), NOW)
    (tmp_path / "away").rename(folder)
    assert (folder / "vault.json").read_bytes() == before
    assert [r.status for r in vault.records()] == ["current"]
    assert vault.current("housing")[1].reveal() == PASSWORD.reveal()
