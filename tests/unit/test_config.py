"""gateway.toml is checked on load: every mistake is reported at once, with its line and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.adapters.config import Config, Limits, resolve_root
from gateway.core.errors import ConfigError, UsageError
from gateway.validate.schema import load_standard
from tests.conftest import REPO, make_root

STANDARD = load_standard(REPO)


def _load(root: Path) -> Config:
    return Config.load(root, columns=frozenset(STANDARD.columns), kinds=STANDARD.kinds)


def test_shipped_config_loads_with_the_demo_agencies() -> None:
    config = _load(REPO)
    assert set(config.agencies) == {"police", "probation", "council", "housing", "treatment", "yos"}
    assert all(agency.kind == agency.id for agency in config.agencies.values())
    assert config.limits == Limits() and not config.policy.unsafe_allow_formula_cells


BROKEN = """\
[partnership]
name = "Test"

[agencies.police]
name = "Police"
kind = "polis"

[agencies.Bad_Id]
name = "x"
kind = "council"

[limits]
max_rows = -5
max_cels = 3

[policy]
unsafe_allow_formula_cells = "yes"

[ownership]
current_intelligence = ["police", "wizards"]
shoe_size = ["police"]

[extras]
"""


def test_every_mistake_is_reported_with_its_line(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root", toml=BROKEN)
    with pytest.raises(ConfigError) as caught:
        _load(root)
    message = caught.value.message
    expected = {
        6: "kind must be one of",
        8: "agency id 'Bad_Id'",
        13: "limits.max_rows must be a whole number above 0",
        14: "unknown setting 'max_cels'",
        17: "must be true or false",
        20: "ownership.current_intelligence must be a list of kinds",
        21: "unknown column 'shoe_size'",
        23: "unknown section [extras]",
    }
    for line, words in expected.items():
        assert f"line {line}: " in message and words in message, (line, words, message)
    assert "8 mistake(s)" in message


def test_the_daemon_checkpoint_bounds_are_read_and_checked(tmp_path: Path) -> None:
    shipped = _load(REPO).daemon
    assert (shipped.checkpoint_entries, shipped.checkpoint_minutes) == (100, 60)
    text = (REPO / "gateway.toml").read_text(encoding="utf-8")
    good = make_root(tmp_path / "good", toml=text.replace("checkpoint_entries = 100", "checkpoint_entries = 25"))
    assert _load(good).daemon.checkpoint_entries == 25
    bad = text.replace("checkpoint_entries = 100", "checkpoint_entries = 0")
    with pytest.raises(ConfigError) as caught:
        _load(make_root(tmp_path / "bad", toml=bad))
    line = text.splitlines().index(next(x for x in text.splitlines() if x.startswith("checkpoint_entries"))) + 1
    assert f"line {line}: daemon.checkpoint_entries must be a whole number above 0" in caught.value.message


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root", toml='[partnership]\nname = "x\n')
    with pytest.raises(ConfigError, match="line 2"):
        _load(root)


def test_missing_config_says_how_to_point_at_a_root(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--root"):
        _load(tmp_path)


def test_unknown_agency_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="council, housing, police, probation, treatment, yos"):
        _load(REPO).agency("fire")


def test_root_comes_from_argument_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOM_GATEWAY_ROOT", str(tmp_path))
    assert resolve_root(None) == tmp_path.resolve()
    assert resolve_root(str(REPO)) == REPO


EXCHANGE_MISTAKES = """\
[partnership]
name = "Test"

[marking]
floor = "SOMEWHAT SECRET"
scheme = "nato"

[passwords]
min_length = 6

[packages]
compress_level = 12

[agencies.police]
name = "Police"
kind = "police"
delivery = "carrier-pigeon"
route = ["nobody"]
"""


def test_exchange_settings_are_checked_with_their_lines(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root", toml=EXCHANGE_MISTAKES)
    with pytest.raises(ConfigError) as caught:
        _load(root)
    message = caught.value.message
    for line, words in {
        5: "is not a protective marking",
        6: "gpms",
        9: "cannot go below the protocol's 8",
        12: "0 (none) to 9",
        17: "delivery must be",
        18: "'nobody'",
    }.items():
        assert f"line {line}: " in message and words in message, (line, words, message)


def test_marking_text_and_default_route() -> None:
    config = _load(REPO)
    assert config.marking.token == "PROTECT-PERSONAL" and config.marking.text == "PROTECT - PERSONAL"
    assert [a.id for a in config.recipients(config.agencies["police"])] == [
        "probation",
        "council",
        "housing",
        "treatment",
        "yos",
    ]


def test_vault_passphrase_comes_from_env_then_systemd_credential_then_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_root(tmp_path / "root")
    config = _load(root)
    secret_file = root / "keys" / "vault-passphrase"
    secret_file.parent.mkdir()
    secret_file.write_text("from-the-file-0600\n")
    secret_file.chmod(0o644)
    monkeypatch.delenv("IOM_GATEWAY_VAULT_PASSPHRASE", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match="readable by others: chmod 600"):
        config.vault_passphrase()
    secret_file.chmod(0o600)
    assert config.vault_passphrase().reveal() == "from-the-file-0600"
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "vault-passphrase").write_text("from-systemd\n")
    (credentials / "vault-passphrase").chmod(0o440)  # systemd 254+ makes credentials 0440 with an ACL
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert config.vault_passphrase().reveal() == "from-systemd"
    monkeypatch.setenv("IOM_GATEWAY_VAULT_PASSPHRASE", "from-the-environment")
    assert config.vault_passphrase().reveal() == "from-the-environment"
    assert "from" not in repr(config.vault_passphrase())


def test_the_smtp_intake_is_off_without_its_section_and_every_setting_is_checked(tmp_path: Path) -> None:
    text = (REPO / "gateway.toml").read_text(encoding="utf-8")
    assert _load(REPO).smtp_intake is None
    good = text + (
        '\n[smtp.intake]\nlisten = "[::]:587"\naddress = "IOM@Gateway.Example.org"\n'
        'tls_cert = "keys/smtp.crt"\ntls_key = "/etc/iom/smtp.key"\n'
    )
    intake = _load(make_root(tmp_path / "good", toml=good)).smtp_intake
    assert intake is not None
    assert (intake.host, intake.port, intake.address) == ("::", 587, "iom@gateway.example.org")
    assert intake.tls_cert == tmp_path / "good" / "keys" / "smtp.crt" and intake.tls_key == Path("/etc/iom/smtp.key")
    assert intake.max_message_bytes == 64 * 1024 * 1024
    bad = text + (
        '\n[smtp.outgoing]\nhost = "x"\n\n[smtp.intake]\nlisten = "587"\naddress = "not an address"\n'
        "max_message_bytes = 10\nsize = 1\n"
    )
    with pytest.raises(ConfigError) as caught:
        _load(make_root(tmp_path / "bad", toml=bad))
    message = caught.value.message
    for expected in (
        "unknown section [smtp.outgoing]: known are [smtp.intake], [smtp.relay], [smtp.notices]",
        'smtp.intake.listen must be "HOST:PORT"',
        "smtp.intake.address must be the one address",
        "smtp.intake.tls_cert must name a PEM file",
        "smtp.intake.tls_key must name a PEM file",
        "smtp.intake.max_message_bytes must be a whole number from 1024",
        "unknown setting 'size' in [smtp.intake]",
    ):
        assert expected in message, message
    assert re.search(r"line \d+: smtp\.intake\.listen", message), message


def test_the_relay_and_notices_are_off_without_their_sections_and_every_setting_is_checked(tmp_path: Path) -> None:
    text = (REPO / "gateway.toml").read_text(encoding="utf-8")
    config = _load(REPO)
    assert config.smtp_relay is None and not any(a.email for a in config.agencies.values())
    good = text.replace("[agencies.probation]", "[agencies.probation]\nemail = true", 1) + (
        '\n[smtp.relay]\nhost = "smtp.example.org"\ntls = "implicit"\nsender = "iom@gateway.example.org"\n'
        'ca_file = "keys/relay-ca.pem"\nuser = "iom-gateway"\n'
        '\n[smtp.notices]\nadmins = ["admin@council.example.org"]\nlanded = false\n'
    )
    config = _load(make_root(tmp_path / "good", toml=good))
    relay = config.smtp_relay
    assert relay is not None
    assert (relay.host, relay.port, relay.tls, relay.sender, relay.user) == (
        "smtp.example.org",
        465,
        "implicit",
        "iom@gateway.example.org",
        "iom-gateway",
    )
    assert relay.ca_file == tmp_path / "good" / "keys" / "relay-ca.pem" and relay.give_up_hours == 24
    assert config.agencies["probation"].email and not config.agencies["police"].email
    assert config.notices.admins == ("admin@council.example.org",)
    assert not config.notices.wanted("landed") and config.notices.wanted("rejected")
    bad = text.replace("[agencies.probation]", '[agencies.probation]\nemail = "yes"', 1) + (
        '\n[smtp.relay]\nhost = "smtp example"\ntls = "none"\nport = 0\nsender = "nobody"\n'
        'give_up_hours = 0\npassword = "x"\n'
        '\n[smtp.notices]\nadmins = "admin"\nlate = "no"\nweekly = true\n'
    )
    with pytest.raises(ConfigError) as caught:
        _load(make_root(tmp_path / "bad", toml=bad))
    message = caught.value.message
    for expected in (
        "agency 'probation' email must be true or false",
        "smtp.relay.host must be the mail server's name",
        'smtp.relay.tls must be "starttls" (port 587) or "implicit" (port 465): the gateway never sends in clear',
        "smtp.relay.port must be a port number",
        "smtp.relay.sender must be the address the gateway sends from",
        "smtp.relay.give_up_hours must be a whole number from 1",
        "unknown setting 'password' in [smtp.relay]",
        "smtp.notices.admins must be a list of addresses",
        "smtp.notices.late must be true or false",
        "unknown setting 'weekly' in [smtp.notices]",
    ):
        assert expected in message, message
    alone = text + "\n[smtp.notices]\nlanded = false\n"
    with pytest.raises(ConfigError, match=r"\[smtp.notices\] needs an \[smtp.relay\]"):
        _load(make_root(tmp_path / "alone", toml=alone))


def test_the_journal_is_sqlite_unless_journal_url_names_a_postgresql_database(tmp_path: Path) -> None:
    assert _load(make_root(tmp_path / "a")).journal.url is None
    assert _load(make_root(tmp_path / "b", '\n[journal]\nurl = "sqlite"\n')).journal.url is None
    url = "postgresql://iom@db.partnership.example:5432/iom?sslmode=verify-full"
    assert _load(make_root(tmp_path / "c", f'\n[journal]\nurl = "{url}"\n')).journal.url == url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (
            "postgresql://iom:hunter2hunter2@db/iom",
            "holds a password: keep the password out of it: store it with"
            " `iom-gateway keys journal-password --password-file FILE`",
        ),
        ("postgresql://iom@db/iom?password=hunter2hunter2", "password= parameter"),
        ("mysql://iom@db/iom", 'must be "sqlite"'),
        ("postgresql://iom@db", "names no database"),
        ("postgresql://iom@db:port/iom", "is not a URL"),
    ],
)
def test_a_journal_url_with_a_password_or_not_naming_a_database_is_refused_with_the_fix(
    tmp_path: Path, url: str, says: str
) -> None:
    root = make_root(tmp_path, f'\n[journal]\nurl = "{url}"\n')
    with pytest.raises(ConfigError) as caught:
        _load(root)
    assert says in caught.value.message
    assert re.search(r"line \d+: journal\.url", caught.value.message), caught.value.message
    assert "hunter2" not in caught.value.message  # never repeats the secret it refuses


def test_an_unknown_journal_setting_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'password' in \\[journal\\]"):
        _load(make_root(tmp_path, '\n[journal]\npassword = "x"\n'))
