"""The relay ([smtp.relay]) against aiosmtpd's Controller as the receiving mail server on 127.0.0.1,
over STARTTLS with a certificate made in the test, the daemon a real process: packages for an
`email = true` agency go to each of its officers as RFC 3156 PGP/MIME that plain `gpg -d` opens;
notices carry no cell value; a SIGKILL mid-relay still sends each officer's message once; nothing
is ever sent in clear or to a server whose certificate does not verify."""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import ssl
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from gateway.daemon.relay import FIRST_RETRY_SECONDS
from gateway.state.root import GNUPG_HOME, Root
from tests.integration.daemon_harness import (
    GOOD,
    INVALID,
    Daemon,
    audit_entries,
    cli,
    cli_output,
    copy_of,
    drop,
    home,
    packages,
    short_lived_officer,
    wait_until,
)
from tests.integration.gpg_helpers import gpg
from tests.integration.mail_helpers import certificate
from tests.integration.sshd_harness import free_port

pytestmark = pytest.mark.slow  # a daemon and a mail server per test

RELAY_USER, RELAY_PASSWORD = "gateway-relay", "Relay-Secret-Login-7731"
SENDER = "iom@gateway.test"
ADMIN = "admin@council.test"
GOOD_SURNAMES = [b"Ashcroft", b"O'Connell", b"Smith-Jones", b"Chaudhry", b"Adeyemi", b"Whitfield", b"Mistry", b"Byrne"]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(self.raw)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Server:
    """aiosmtpd's Controller: what it took, and answers to give instead of 250 (address -> replies)."""

    port: int
    received: list[Received] = field(default_factory=list)
    answers: dict[str, list[str]] = field(default_factory=dict)
    logins: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            for address in envelope.rcpt_tos:
                if self.answers.get(address):
                    return self.answers[address].pop(0)
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 2.0.0 queued"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == (
            RELAY_USER,
            RELAY_PASSWORD,
        )
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok)

    def to(self, address: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if address in r.rcpt_tos]


def _serve(folder: Path, *, tls: bool = True) -> tuple[Server, Controller]:
    cert, key = certificate(folder)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    server = Server(free_port())
    options: dict[str, Any] = {"auth_require_tls": True, "authenticator": server.authenticate, "auth_required": True}
    if tls:
        options |= {"tls_context": context, "require_starttls": True}
    else:
        options |= {"auth_require_tls": False}
    controller = Controller(server, hostname="127.0.0.1", port=server.port, **options)
    controller.start()
    return server, controller


def _configure(root: Path, port: int, *, extra: str = "", notices: str = "", trust: bool = True) -> None:
    toml = root / "gateway.toml"
    text = toml.read_text()
    text = text.replace("[agencies.probation]\n", "[agencies.probation]\nemail = true\n", 1)
    ca = 'ca_file = "../cert/smtp.crt"\n' if trust else ""
    text += (
        f'\n[smtp.relay]\nhost = "localhost"\nport = {port}\ntls = "starttls"\nsender = "{SENDER}"\n'
        f'user = "{RELAY_USER}"\n{ca}{extra}'
        f'\n[smtp.notices]\nadmins = ["{ADMIN}"]\n{notices}'
    )
    toml.write_text(text)
    secret = root / "relay.pw"
    secret.write_text(RELAY_PASSWORD + "\n")
    secret.chmod(0o600)
    assert cli(root, "keys", "relay-password", "--password-file", str(secret)) == 0
    secret.unlink()


@dataclass
class Setup:
    root: Path
    server: Server


@pytest.fixture
def relayed(routed_template: Path, request: pytest.FixtureRequest) -> Iterator[Setup]:
    options: dict[str, Any] = getattr(request, "param", {})
    with copy_of(routed_template) as root:
        (root.parent / "cert").mkdir()
        server, controller = _serve(root.parent / "cert", tls=options.get("tls", True))
        try:
            _configure(root, server.port, trust=options.get("trust", True), notices=options.get("notices", ""))
            yield Setup(root, server)
        finally:
            controller.stop()


def _officer_messages(server: Server, agency: str) -> dict[str, list[Received]]:
    return {o: server.to(f"{agency}-{o}@demo.invalid") for o in ("do", "pdo")}


def _packages_mailed(server: Server, agency: str) -> dict[str, int]:
    return {
        officer: sum(1 for r in got if r.message.get_content_type() == "multipart/encrypted")
        for officer, got in _officer_messages(server, agency).items()
    }


def _decrypt(root: Path, officer: str, armored: bytes) -> bytes:
    run = subprocess.run(
        ["gpg", "--homedir", str(home(root, officer)), "--batch", "--quiet", "--decrypt"],
        input=armored,
        capture_output=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr.decode()
    return run.stdout


def _no_personal_data(raw: bytes) -> None:
    for surname in GOOD_SURNAMES:
        assert surname not in raw


def test_a_package_goes_to_each_officer_as_pgp_mime_that_gpg_opens_and_notices_carry_no_data(
    relayed: Setup,
) -> None:
    root, server = relayed.root, relayed.server
    drop(root, "police", GOOD, "police-2026-10.csv", "police-do")
    daemon = Daemon(root).ready()
    try:
        wait_until(lambda: _packages_mailed(server, "probation") == {"do": 1, "pdo": 1}, 60, "both officers mailed")
        wait_until(lambda: all(server.to(f"housing-{o}@demo.invalid") for o in ("do", "pdo")), 30, "landed notices")
    finally:
        assert daemon.stop() == 0
    assert set(server.logins) == {RELAY_USER}
    [package] = packages(root, "probation")
    for officer in ("probation-do", "probation-pdo"):
        [got] = server.to(f"{officer}@demo.invalid")
        assert got.mail_from == SENDER
        message = got.message
        # RFC 3156 6.1: multipart/encrypted, the control part, then the armored OpenPGP message
        assert message.get_content_type() == "multipart/encrypted"
        assert message.get_param("protocol") == "application/pgp-encrypted"
        control, body = list(message.iter_parts())
        assert control.get_content_type() == "application/pgp-encrypted"
        assert control.get_content().strip() in ("Version: 1", b"Version: 1")
        assert body.get_content_type() == "application/octet-stream"
        armored = body.get_payload(decode=True)
        assert armored.startswith(b"-----BEGIN PGP MESSAGE-----")
        assert re.fullmatch(r"\[[A-Z -]+\] IOM data from police, 2026-10", str(message["Subject"]))
        _no_personal_data(got.raw)  # in clear: only the headers and the ciphertext
        inner = BytesParser(policy=policy.default).parsebytes(_decrypt(root, officer, armored))
        [attachment] = list(inner.iter_attachments())
        assert attachment.get_filename() == package.name.removesuffix(".gpg")  # named with its marking
        assert attachment.get_payload(decode=True) == GOOD.read_bytes()
        [text] = [part for part in inner.walk() if part.get_content_type() == "text/plain"]
        assert "IOM data from police, 2026-10: 7 row(s)" in text.get_content()
    # housing (AES-ZIP, no e-mail): a notice to each officer that a package landed, no data in it
    for officer in ("housing-do", "housing-pdo"):
        [notice] = server.to(f"{officer}@demo.invalid")
        assert notice.message.get_content_type() == "text/plain"
        assert "1 new package from police for 2026-10" in notice.message.get_content()
        _no_personal_data(notice.raw)
    sent = [e for e in audit_entries(root) if e["event"] == "mail.sent"]
    assert sorted(str(e["officer"]) for e in sent) == sorted(
        ["probation-do", "probation-pdo", "housing-do", "housing-pdo"]
    )
    assert not list((root / "state" / "mail").glob("*.asc"))  # the spooled ciphertext goes once sent
    log = daemon.text()
    assert "Traceback" not in log and RELAY_PASSWORD not in log
    for surname in GOOD_SURNAMES:
        assert surname.decode() not in log
    assert RELAY_PASSWORD.encode() not in (root / "state" / "gateway.db").read_bytes()
    assert RELAY_PASSWORD.encode() not in (root / "gateway.toml").read_bytes()


def test_an_aes_zip_agency_gets_its_zip_attached_and_never_its_password(relayed: Setup) -> None:
    root, server = relayed.root, relayed.server
    toml = root / "gateway.toml"
    toml.write_text(toml.read_text().replace('delivery = "aes-zip"\n', 'delivery = "aes-zip"\nemail = true\n', 1))
    exported = root.parent / "housing.pw"
    assert cli(root, "keys", "export", "--agency", "housing", "--password", "--to", str(exported)) == 0
    password = exported.read_text().strip().encode()
    drop(root, "police", GOOD, "police-2026-10.csv", "police-do")
    assert cli(root, "run", "--once") == 0  # with no relay process, it sends what it queued before it exits
    [package] = packages(root, "housing")
    for officer in ("housing-do", "housing-pdo"):
        [got] = server.to(f"{officer}@demo.invalid")
        [attachment] = list(got.message.iter_attachments())
        assert attachment.get_filename() == package.name
        assert attachment.get_payload(decode=True) == package.read_bytes()
        assert password not in got.raw
        _no_personal_data(got.raw)
        seven = subprocess.run(
            ["7z", "t", f"-p{password.decode()}", str(package)], capture_output=True, check=False
        )  # the attached bytes are the package the password opens (7-Zip, as recipients use)
        assert seven.returncode == 0, seven.stdout.decode()


def test_a_sigkill_mid_relay_still_sends_each_officers_message_exactly_once(relayed: Setup) -> None:
    root, server = relayed.root, relayed.server
    toml = root / "gateway.toml"
    toml.write_text(toml.read_text() + "landed = false\n")  # only the two package messages to count
    drop(root, "police", GOOD, "police-2026-10.csv", "police-do")
    crashed = Daemon(root, fault="relay.sending@2:kill")
    assert crashed.exited(90) != 0  # killed as the second message was about to go
    assert sum(_packages_mailed(server, "probation").values()) == 1
    daemon = Daemon(root).ready()
    try:
        wait_until(lambda: sum(_packages_mailed(server, "probation").values()) == 2, 60, "the second message")
    finally:
        assert daemon.stop() == 0
    assert _packages_mailed(server, "probation") == {"do": 1, "pdo": 1}
    assert server.to("housing-do@demo.invalid") == []  # landed = false: that notice is switched off
    sent = [e for e in audit_entries(root) if e["event"] == "mail.sent"]
    assert len(sent) == 2
    assert "Traceback" not in daemon.text()


def test_killed_between_the_servers_250_and_its_record_the_message_goes_again_with_the_same_message_id(
    relayed: Setup,
) -> None:
    """The one window the README names: SMTP cannot say whether a message was taken, so it is sent again."""
    root, server = relayed.root, relayed.server
    toml = root / "gateway.toml"
    toml.write_text(toml.read_text() + "landed = false\n")
    drop(root, "police", GOOD, "police-2026-10.csv", "police-do")
    crashed = Daemon(root, fault="relay.accepted@1:kill")
    assert crashed.exited(90) != 0
    [first] = [r for got in _officer_messages(server, "probation").values() for r in got]
    daemon = Daemon(root).ready()
    try:
        wait_until(lambda: sum(_packages_mailed(server, "probation").values()) == 3, 60, "the resend and the other")
    finally:
        assert daemon.stop() == 0
    again = [r for r in server.received if r.rcpt_tos == first.rcpt_tos]
    assert len(again) == 2 and again[0].message["Message-ID"] == again[1].message["Message-ID"]
    assert sorted(_packages_mailed(server, "probation").values()) == [1, 2]


def test_a_4xx_is_retried_and_a_5xx_gives_up_with_an_alert_to_the_admins(
    relayed: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    root, server = relayed.root, relayed.server
    server.answers["probation-do@demo.invalid"] = ["451 4.3.0 mailbox busy, try again"]
    server.answers["probation-pdo@demo.invalid"] = ["550 5.1.1 no such mailbox"]
    drop(root, "police", GOOD, "police-2026-10.csv", "police-do")
    daemon = Daemon(root).ready()
    try:
        wait_until(lambda: _packages_mailed(server, "probation")["do"] == 1, 60, "the retried message")
        wait_until(lambda: bool(server.to(ADMIN)), 60, "the admins' alert")
    finally:
        assert daemon.stop() == 0
    assert _packages_mailed(server, "probation") == {"do": 1, "pdo": 0}
    gave_up = [e for e in audit_entries(root) if e["event"] == "mail.gave_up"]
    assert [e["officer"] for e in gave_up] == ["probation-pdo"]
    assert "550 5.1.1" in str(gave_up[0]["reason"])
    alerts = [r.message for r in server.to(ADMIN) if "not sent" in str(r.message["Subject"])]
    assert len(alerts) == 1 and "probation-pdo" in alerts[0].get_content()
    assert "level=ERROR" in daemon.text() and "relay gave up" in daemon.text()
    code, out = cli_output(root, capsys, "status", "--json")
    status = json.loads(out)
    assert code == 1 and status["mail_gave_up_24h"] == 1 and status["mail_queued"] == 0
    assert any("could not be sent through [smtp.relay]" in line for line in status["attention"])


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # the clear-text server we refuse
@pytest.mark.parametrize(
    ("relayed", "says"),
    [
        ({"tls": False}, "does not offer STARTTLS"),
        ({"trust": False}, "certificate does not verify"),
    ],
    indirect=["relayed"],
)
def test_nothing_is_sent_in_clear_or_to_a_server_whose_certificate_does_not_verify(relayed: Setup, says: str) -> None:
    root, server = relayed.root, relayed.server
    drop(root, "police", GOOD, "police-2026-10.csv", "police-do")
    daemon = Daemon(root).ready()
    try:
        daemon.wait_log(says, 60)
    finally:
        assert daemon.stop() == 0
    assert server.received == [] and server.logins == []
    assert len(packages(root, "probation")) == 1  # the inbox delivery is made all the same
    assert "Traceback" not in daemon.text()


@pytest.mark.parametrize("relayed", [{"notices": "landed = false\n"}], indirect=True)
def test_a_rejected_file_is_told_to_its_officer_with_counts_and_no_value(relayed: Setup) -> None:
    root, server = relayed.root, relayed.server
    toml = root / "gateway.toml"
    toml.write_text(re.sub(r"(?m)^due_day = [0-9]+", "due_day = 1", toml.read_text()))
    drop(root, "probation", INVALID, "probation-2026-10.csv", "probation-do")
    daemon = Daemon(root).ready()
    try:
        wait_until(lambda: bool(server.to("probation-do@demo.invalid")), 60, "the rejection notice")
    finally:
        assert daemon.stop() == 0
    [notice] = server.to("probation-do@demo.invalid")
    text = notice.message.get_content()
    assert "was not delivered" in text and "outbox/probation/rejected/" in text
    assert list((root / "outbox" / "probation" / "rejected").glob("*.report.*"))  # the report is where it says
    assert re.search(r"- [a-z_]+: [0-9]+", text), text
    cells = {cell.strip() for line in INVALID.read_text().splitlines()[1:] for cell in line.split(",")}
    for cell in cells:
        if len(cell) >= 4 and not cell.isdigit():  # names, dates, CRO numbers: none in the notice
            assert cell not in notice.raw.decode(), cell
    assert server.to("probation-pdo@demo.invalid") == []  # only the officer who signed it
    # the admins hear once of each agency late for this month (none has sent this month's file)
    if dt.datetime.now(dt.UTC).day > 1:
        wait_until(lambda: sum("late" in str(r.message["Subject"]) for r in server.to(ADMIN)) >= 6, 30, "late")
    late = [r.message.get_content() for r in server.to(ADMIN) if "late" in str(r.message["Subject"])]
    month = dt.datetime.now(dt.UTC).strftime("%Y-%m")
    agencies = sorted(tomllib.loads(toml.read_text())["agencies"])
    expected = [] if dt.datetime.now(dt.UTC).day == 1 else agencies
    assert sorted(text.split()[0] for text in late) == expected
    assert all(f"has not sent its file for {month}" in text for text in late)


def test_the_relay_password_comes_from_the_vault_and_needs_a_user(routed_template: Path) -> None:
    with copy_of(routed_template) as root:
        secret = root / "pw"
        secret.write_text("x" * 20)
        secret.chmod(0o600)
        assert cli(root, "keys", "relay-password", "--password-file", str(secret)) == 2  # no [smtp.relay] user
        secret.chmod(0o644)
        toml = root / "gateway.toml"
        toml.write_text(toml.read_text() + f'\n[smtp.relay]\nhost = "localhost"\nsender = "{SENDER}"\nuser = "u"\n')
        assert cli(root, "keys", "relay-password", "--password-file", str(secret)) == 1  # readable by others
        secret.chmod(0o600)
        assert cli(root, "keys", "relay-password", "--password-file", str(secret)) == 0
        assert b"x" * 20 not in (root / "keys" / "vault.json").read_bytes()
        assert [e["user"] for e in audit_entries(root) if e["event"] == "relay.password_set"] == ["u"]


def test_the_admins_hear_once_a_month_of_a_key_near_expiry(relayed: Setup) -> None:
    root, server = relayed.root, relayed.server
    with short_lived_officer(root) as fingerprint:
        assert cli(root, "run", "--once") == 0
        assert cli(root, "run", "--once") == 0  # the next pass queues it no more
    expiring = [r.message for r in server.to(ADMIN) if "renewing" in str(r.message["Subject"])]
    assert len(expiring) == 1, [str(m["Subject"]) for m in server.to(ADMIN)]
    text = expiring[0].get_content()
    assert "officer council-short (council)" in text and "expires in 9 day(s)" in text and fingerprint in text


def test_a_message_whose_encryption_failed_is_never_sent(relayed: Setup) -> None:
    """An officer key gone from the gateway's keyring: encrypting to the agency fails, so nothing goes out to
    it, not in clear, not at all (the file is refused at sealing, and its officer told without a value)."""
    root, server = relayed.root, relayed.server
    fingerprint = Root.open(root).registry.get("probation-pdo").fingerprint
    gpg(root / "keys" / GNUPG_HOME, "--yes", "--delete-keys", fingerprint)
    drop(root, "police", GOOD, "police-2026-10.csv", "police-do")
    assert cli(root, "run", "--once") == 1
    rejected = [e for e in audit_entries(root) if e["event"] == "submission.rejected"]
    assert [e["stage"] for e in rejected] == ["seal"]
    assert server.to("probation-do@demo.invalid") == [] and server.to("probation-pdo@demo.invalid") == []
    assert not list((root / "inbox" / "probation").glob("*.csv.gpg"))
    for received in server.received:  # notices only (the rejection to police's officers, the admins')
        assert received.message.get_content_type() != "multipart/encrypted"
        _no_personal_data(received.raw)
    spooled = root / "state" / "mail"
    assert not spooled.is_dir() or not list(spooled.glob("*.asc"))


def test_an_officer_revoked_before_their_message_went_is_never_sent_it(relayed: Setup) -> None:
    root, server = relayed.root, relayed.server
    server.answers["probation-pdo@demo.invalid"] = ["451 4.3.0 mailbox busy, try again"]
    drop(root, "police", GOOD, "police-2026-10.csv", "police-do")
    assert cli(root, "run", "--once") == 0  # probation-do's goes; probation-pdo's waits for its retry
    assert _packages_mailed(server, "probation") == {"do": 1, "pdo": 0}
    assert cli(root, "officers", "revoke", "probation-pdo", "--yes") == 0
    time.sleep(FIRST_RETRY_SECONDS + 1)  # until the retry is due (not a timing assertion)
    assert cli(root, "run", "--once") == 0
    assert _packages_mailed(server, "probation") == {"do": 1, "pdo": 0}
    gave_up = [e for e in audit_entries(root) if e["event"] == "mail.gave_up"]
    assert [(e["officer"], e["reason"]) for e in gave_up] == [("probation-pdo", "revoked")]
    assert not [r for r in server.to(ADMIN) if "not sent" in str(r.message["Subject"])]  # no alert: as meant


def test_a_package_purged_before_its_mail_went_takes_its_encrypted_copy_and_its_messages_with_it(
    relayed: Setup,
) -> None:
    root, server = relayed.root, relayed.server
    for officer in ("do", "pdo"):
        server.answers[f"probation-{officer}@demo.invalid"] = ["451 4.3.0 try again"] * 10
    drop(root, "police", GOOD, "police-2026-10.csv", "police-do")
    assert cli(root, "run", "--once") == 0
    assert len(list((root / "state" / "mail").glob("*.asc"))) == 1  # waiting, encrypted
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    with sqlite3.connect(root / "state" / "gateway.db") as db:
        db.execute("UPDATE deliveries SET expires = ?", (past,))
    db.close()
    assert cli(root, "purge") == 0
    assert list((root / "state" / "mail").glob("*.asc")) == []
    with sqlite3.connect(root / "state" / "gateway.db") as db:
        left = db.execute("SELECT COUNT(*) FROM mail_out WHERE agency = 'probation'").fetchone()[0]
    db.close()
    assert left == 0
    server.answers.clear()
    time.sleep(FIRST_RETRY_SECONDS + 1)
    assert cli(root, "run", "--once") == 0
    assert _packages_mailed(server, "probation") == {"do": 0, "pdo": 0}


def test_a_package_too_large_to_mail_is_a_notice_to_fetch_it_instead(relayed: Setup) -> None:
    root, server = relayed.root, relayed.server
    toml = root / "gateway.toml"
    toml.write_text(toml.read_text().replace("[smtp.notices]\n", "max_message_bytes = 1024\n\n[smtp.notices]\n", 1))
    drop(root, "police", GOOD, "police-2026-10.csv", "police-do")
    assert cli(root, "run", "--once") == 0
    assert _packages_mailed(server, "probation") == {"do": 0, "pdo": 0}
    for officer in ("do", "pdo"):
        [notice] = server.to(f"probation-{officer}@demo.invalid")
        text = notice.message.get_content()
        assert "1 new package from police for 2026-10" in text and "too large to send by e-mail" in text
        _no_personal_data(notice.raw)
    assert not (root / "state" / "mail").exists() or not list((root / "state" / "mail").iterdir())
    assert len(packages(root, "probation")) == 1
