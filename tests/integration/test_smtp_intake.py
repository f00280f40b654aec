"""The SMTP intake (`iom-gateway smtp`) as a real process, driven by the standard library's smtplib over
STARTTLS with a throw-away certificate: a registered officer's signed file by e-mail ends in the
recipients' inboxes; every refusal is a 5xx with a reason, and writes nothing."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway.adapters.gpg import Fingerprint, Purpose
from gateway.core.manifest import canonical_json
from gateway.core.model import Delivery
from gateway.core.pgpmime import read_signed
from gateway.exchange.envelope import seal
from gateway.state.root import Root
from tests.integration.daemon_harness import (
    GOOD,
    INVALID,
    ROUTE,
    Daemon,
    audit_entries,
    cli,
    copy_of,
    drop,
    home,
    packages,
    pull_raw,
    wait_until,
)
from tests.integration.gpg_helpers import gpg
from tests.integration.mail_helpers import certificate
from tests.integration.sshd_harness import free_port

ADDRESS = "iom@gateway.test"
PASSWORD = "Correct-Horse-42-Battery"
SURNAMES = [b"Ashcroft", b"O'Connell", b"Smith-Jones", b"Chaudhry", b"Adeyemi", b"Whitfield", b"Mistry", b"Byrne"]
MAX_MESSAGE_BYTES = 200_000


@dataclass
class Intake:
    root: Path
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    context: ssl.SSLContext

    def client(self, officer: str | None = "police-do", password: str = PASSWORD) -> smtplib.SMTP:
        """A client connected, in TLS, and (unless `officer` is None) logged in."""
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
        client.ehlo("client.test")
        client.starttls(context=self.context)
        client.ehlo("client.test")
        if officer is not None:
            client.login(officer, password)
        return client

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def _password_file(root: Path, password: str) -> Path:
    path = root / "pw.txt"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def _configure(root: Path) -> tuple[int, ssl.SSLContext]:
    """[smtp.intake] on a free port with a fresh certificate, and passwords for three officers."""
    certificate(root / "keys")
    port = free_port()
    with (root / "gateway.toml").open("a") as toml:
        toml.write(
            f'\n[smtp.intake]\nlisten = "127.0.0.1:{port}"\naddress = "{ADDRESS}"\n'
            f'tls_cert = "keys/smtp.crt"\ntls_key = "keys/smtp.key"\nmax_message_bytes = {MAX_MESSAGE_BYTES}\n'
        )
    for officer in ("police-do", "police-pdo", "probation-do"):
        secret = str(_password_file(root, PASSWORD))
        assert cli(root, "officers", "set-password", officer, "--password-file", secret) == 0
    return port, ssl.create_default_context(cafile=str(root / "keys" / "smtp.crt"))


@pytest.fixture
def intake(routed_template: Path) -> Iterator[Intake]:
    with copy_of(routed_template) as root:
        port, context = _configure(root)
        log = root.parent / "smtp.log"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "--root", str(root), "smtp"], stderr=sink, stdout=sink, env=env
            )
        served = Intake(root, port, process, log, context)
        try:
            wait_until(lambda: "event=smtp listening" in served.text() or process.poll() is not None, 30, "listening")
            assert process.poll() is None, served.text()
            yield served
        finally:
            process.terminate()
            assert process.wait(timeout=30) == 0, served.text()
        assert "Traceback" not in served.text()
        for surname in SURNAMES:
            assert surname.decode() not in served.text()


def signature(root: Path, officer: str, data: bytes) -> bytes:
    staging = root / "sign"
    staging.mkdir(exist_ok=True)
    (staging / "f.csv").write_bytes(data)
    gpg(home(root, officer), "--yes", "--output", str(staging / "f.csv.sig"), "--detach-sign", str(staging / "f.csv"))
    return (staging / "f.csv.sig").read_bytes()


def message(
    root: Path,
    *,
    sender: str = "police-do@demo.invalid",
    signer: str | None = "police-do",
    name: str = "police-mailed-2026-10.csv",
    csvs: int = 1,
    data: bytes | None = None,
    signed: bytes | None = None,
) -> EmailMessage:
    """A message from `sender` with `csvs` copies of `data` and `signer`'s signature over `signed` (`data`)."""
    data = GOOD.read_bytes() if data is None else data
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = ADDRESS
    mail["Subject"] = "IOM monthly return"
    mail.set_content("The month's file and its signature.")
    for n in range(csvs):
        mail.add_attachment(
            data, maintype="application", subtype="octet-stream", filename=name if n == 0 else f"b{name}"
        )
    if signer is not None:
        mail.add_attachment(
            signature(root, signer, data if signed is None else signed),
            maintype="application",
            subtype="pgp-signature",
            filename=name + ".sig",
        )
    return mail


NOTE = "Checked by DS Quill before sending."  # the officer's words: they must never lie in clear on the gateway


def pgp_mime(
    root: Path,
    *,
    signer: str = "police-do",
    textmode: bool = False,
    cte: str = "base64",
    protocol: str = "application/pgp-signature",
    tamper: bool = False,
    parts: int = 2,
    closed: bool = True,
    data: bytes | None = None,
) -> bytes:
    """A PGP/MIME signed message (RFC 3156) as a mail client sends it: the signed part (a text part and
    the CSV attached) signed, armored, by `signer`'s own GnuPG home over its exact CRLF bytes."""
    entity = EmailMessage()
    entity.set_content(NOTE)
    data = GOOD.read_bytes() if data is None else data
    entity.add_attachment(data, maintype="text", subtype="csv", filename="police-mailed-2026-10.csv", cte=cte)
    signed = entity.as_bytes(policy=policy.SMTP)
    staging = root.parent / "sign-pgp-mime"  # the officer's machine: not the gateway's root
    staging.mkdir(exist_ok=True)
    (staging / "entity").write_bytes(signed)
    mode = ["--textmode"] if textmode else []
    gpg(
        home(root, signer),
        "--yes",
        "--armor",
        *mode,
        "--output",
        str(staging / "entity.asc"),
        "--detach-sign",
        str(staging / "entity"),
    )
    armored = (staging / "entity.asc").read_bytes().replace(b"\n", b"\r\n")
    if tamper:
        signed = signed.replace(NOTE.encode(), NOTE.upper().encode())
    boundary = b"------------sig8XqPz"
    signature = (
        b"--" + boundary + b'\r\nContent-Type: application/pgp-signature; name="OpenPGP_signature.asc"\r\n'
        b"Content-Description: OpenPGP digital signature\r\n\r\n" + armored + b"\r\n"
    )
    return (
        b"From: Police DO <police-do@demo.invalid>\r\nTo: " + ADDRESS.encode() + b"\r\nSubject: IOM return\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/signed; micalg=pgp-sha256;\r\n protocol="'
        + protocol.encode()
        + b'";\r\n boundary="'
        + boundary
        + b'"\r\n\r\nThis is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n--'
        + boundary
        + b"\r\n"
        + signed
        + b"\r\n"
        + signature * (parts - 1)
        + (b"--" + boundary + b"--\r\n" if closed else b"")
    )


def outbox(root: Path) -> list[str]:
    folder = root / "outbox" / "police"
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def send(intake: Intake, mail: EmailMessage | bytes, *, officer: str = "police-do") -> tuple[int, str]:
    """The server's answer to the whole message (its code and text)."""
    with intake.client(officer) as client:
        sender = f"{officer}@demo.invalid"
        try:
            wire = mail if isinstance(mail, bytes) else mail.as_bytes(policy=policy.SMTP)
            refused = client.sendmail(sender, [ADDRESS], wire)
        except smtplib.SMTPDataError as error:
            return error.smtp_code, error.smtp_error.decode()
        except smtplib.SMTPSenderRefused as error:
            return error.smtp_code, error.smtp_error.decode()
        assert refused == {}
        return 250, ""


def test_a_signed_file_mailed_by_its_officer_is_in_the_outbox_before_250_and_then_delivered(intake: Intake) -> None:
    with intake.client() as client:
        client.mail("police-do@demo.invalid")
        client.rcpt(ADDRESS)
        code, reply = client.data(message(intake.root).as_bytes(policy=policy.SMTP))
        assert code == 250, reply
        # the answer came after both files were on disk
        assert outbox(intake.root) == ["police-mailed-2026-10.csv", "police-mailed-2026-10.csv.sig"]
        assert b"is in police's outbox" in reply
    assert (intake.root / "outbox" / "police" / "police-mailed-2026-10.csv").read_bytes() == GOOD.read_bytes()
    assert cli(intake.root, "run", "--once") == 0
    for recipient in ROUTE:
        assert len(packages(intake.root, recipient)) == 1
    assert outbox(intake.root) == []
    events = [e for e in audit_entries(intake.root) if e["event"] == "submission.mailed"]
    assert len(events) == 1 and events[0]["actor"] == "police-do" and events[0]["agency"] == "police"


def _no_note_in_clear(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert b"DS Quill" not in path.read_bytes(), path


@pytest.mark.parametrize("textmode", [False, True], ids=["binary", "textmode"])
def test_a_pgp_mime_signed_message_is_delivered_and_its_officer_signature_checked_end_to_end(
    intake: Intake, tmp_path: Path, textmode: bool
) -> None:
    """Thunderbird and GpgOL sign the MIME entity, not the file: the gateway keeps that envelope, sealed for
    each recipient, and a recipient checks the officer's own signature over it, on the gateway or away."""
    root = intake.root
    code, reply = send(intake, pgp_mime(root, textmode=textmode))
    assert code == 250, reply
    assert outbox(root) == ["police-mailed-2026-10.csv", "police-mailed-2026-10.csv.pgpmime"]
    assert (root / "outbox" / "police" / "police-mailed-2026-10.csv").read_bytes() == GOOD.read_bytes()
    assert cli(root, "run", "--once") == 0
    assert outbox(root) == []
    for recipient in ROUTE:
        (package,) = packages(root, recipient)
        manifest = json.loads((package.parent / (package.name.split(".")[0] + ".manifest.json")).read_bytes())
        assert manifest["sender"]["officer"] == "police-do" and manifest["sender_envelope"]
        assert pull_raw(root, recipient, tmp_path / recipient) == [GOOD.read_bytes()]
    _no_note_in_clear(root)  # the envelope (with the officer's words) only ever travelled sealed
    # away from the gateway: only the gateway's public key and the officer's own GnuPG home
    assert cli(root, "keys", "export", "--gateway", "--to", str(tmp_path / "gateway.asc")) == 0
    away = tmp_path / "away"
    away.mkdir(mode=0o700)
    args = [
        "--from",
        str(root / "inbox" / "probation"),
        "--to",
        str(away),
        "--gateway-key",
        str(tmp_path / "gateway.asc"),
    ]
    assert cli(root, "pull", *args, "--gnupghome", str(home(root, "probation-pdo")), "--raw") == 0
    assert [p.read_bytes() for p in away.glob("*.csv")] == [GOOD.read_bytes()]


def test_a_sealed_envelope_that_does_not_fit_the_file_fails_the_pull_and_writes_nothing(
    intake: Intake, tmp_path: Path
) -> None:
    """Another PGP/MIME package's envelope, put into a manifest (by someone who could re-sign it), does not
    make the officer's signature cover this file: the recipient's end-to-end check refuses it."""
    root = intake.root
    assert send(intake, pgp_mime(root))[0] == 250
    assert cli(root, "run", "--once") == 0
    (package,) = packages(root, "probation")
    name = package.parent / (package.name.split(".")[0] + ".manifest.json")
    manifest = json.loads(name.read_bytes())
    other = EmailMessage()
    other.set_content("another file")
    other.add_attachment(b"a,b\r\n1,2\r\n", maintype="text", subtype="csv", filename="other.csv")
    wire = b"Content-Type: multipart/signed; boundary=b\r\n\r\n--b\r\n" + other.as_bytes(policy=policy.SMTP)
    wire += b"\r\n--b\r\nContent-Type: application/pgp-signature\r\n\r\nx\r\n--b--\r\n"
    envelope = read_signed(wire, "b").envelope
    gateway = Root.open(root)
    recipients = [Fingerprint.parse(k) for k in manifest["encryption"]["key_id"].split(",")]
    manifest["sender_envelope"] = seal(
        envelope, Delivery.GPG, keyring=gateway.keyring, recipients=recipients, gateway=gateway.gateway_key()
    )
    document = canonical_json(manifest)
    name.write_bytes(document)
    signature = gateway.keyring.sign_bytes(document, gateway.gateway_key(), purpose=Purpose.MANIFEST)
    (name.parent / (name.name + ".sig")).write_bytes(signature)
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    assert cli(root, "pull", "--agency", "probation", "--to", str(out), "--officer", "probation-do") == 1
    assert list(out.glob("*.csv")) == []


def test_a_refused_pgp_mime_file_is_quarantined_with_its_envelope_sealed_to_the_gateway(intake: Intake) -> None:
    root = intake.root
    assert send(intake, pgp_mime(root, data=INVALID.read_bytes()))[0] == 250
    assert cli(root, "run", "--once") == 1
    quarantined = sorted(p.name for p in (root / "quarantine" / "police").iterdir())
    assert len(quarantined) == 2 and quarantined[1] == quarantined[0].removesuffix(".gpg") + ".pgpmime.gpg"
    assert outbox(root) == []
    _no_note_in_clear(root)


def test_pgp_mime_packages_still_open_after_a_password_rotation_and_a_revocation(
    intake: Intake, tmp_path: Path
) -> None:
    """`keys rotate --reencrypt` seals the envelope under the new password; `officers revoke --reencrypt`
    takes the revoked officer off it as off the payload."""
    root = intake.root
    assert send(intake, pgp_mime(root))[0] == 250
    assert cli(root, "run", "--once") == 0
    assert cli(root, "keys", "rotate", "--agency", "housing", "--reencrypt", "--yes") == 0
    assert cli(root, "officers", "revoke", "probation-do", "--reencrypt", "--yes") == 0
    assert pull_raw(root, "housing", tmp_path / "housing") == [GOOD.read_bytes()]
    out = tmp_path / "probation"
    out.mkdir(mode=0o700)
    assert cli(root, "pull", "--agency", "probation", "--to", str(out), "--raw", "--officer", "probation-pdo") == 0
    assert [p.read_bytes() for p in out.glob("*.csv")] == [GOOD.read_bytes()]
    (package,) = packages(root, "probation")
    manifest = json.loads((package.parent / (package.name.split(".")[0] + ".manifest.json")).read_bytes())
    sealed = tmp_path / "envelope.gpg"
    sealed.write_bytes(base64.b64decode(manifest["sender_envelope"]))
    assert gpg(home(root, "probation-do"), "--decrypt", str(sealed), check=False).returncode != 0
    assert gpg(home(root, "probation-pdo"), "--decrypt", str(sealed)).returncode == 0


def test_a_client_that_resets_its_connection_ends_only_its_session(intake: Intake) -> None:
    for stage in ("greeting", "ehlo", "tls", "auth") * 5:
        raw = socket.create_connection(("127.0.0.1", intake.port), timeout=30)
        if stage != "greeting":
            raw.sendall(b"EHLO client.test\r\n")
        if stage in ("tls", "auth"):
            raw.sendall(b"STARTTLS\r\n")
            raw.recv(4096)
            raw.sendall(b"\x16\x03\x01\x00\x05hello" if stage == "tls" else b"AUTH PLAIN\r\n")
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()  # an RST, not a FIN, wherever the session is
    with intake.client() as client:  # the intake serves on
        assert client.noop()[0] == 250
    # the fixture's teardown asserts the intake's log holds no traceback


def test_auth_is_offered_only_after_starttls_and_refused_before_it(intake: Intake) -> None:
    with smtplib.SMTP("127.0.0.1", intake.port, timeout=30) as client:
        client.ehlo("client.test")
        assert not client.has_extn("auth") and client.has_extn("starttls")
        code, reply = client.docmd("AUTH", "PLAIN AHBvbGljZS1kbwBDb3JyZWN0LUhvcnNlLTQyLUJhdHRlcnk=")
        assert code >= 500, reply
        code, reply = client.docmd("MAIL", "FROM:<police-do@demo.invalid>")
        assert code >= 500, reply
        client.starttls(context=intake.context)
        client.ehlo("client.test")
        assert client.has_extn("auth")
        code, reply = client.docmd("MAIL", "FROM:<police-do@demo.invalid>")
        assert code == 530, reply  # in TLS, but not logged in
    assert outbox(intake.root) == []


def test_a_bad_password_is_refused_and_five_lock_the_officer_and_the_client_out(intake: Intake) -> None:
    for _ in range(5):
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            intake.client("police-do", "Wrong-Password-99")
        assert refused.value.smtp_code == 535
    with pytest.raises(smtplib.SMTPAuthenticationError) as locked:
        intake.client("police-do", PASSWORD)  # the right password, too late
    assert locked.value.smtp_code == 535 and b"locked out" in locked.value.smtp_error
    with pytest.raises(smtplib.SMTPAuthenticationError) as client_locked:
        intake.client("probation-do", PASSWORD)  # another officer from the same client address
    assert b"locked out" in client_locked.value.smtp_error
    events = [e for e in audit_entries(intake.root) if e["event"] == "smtp.locked_out"]
    assert sorted(str(e.get("officer") or e.get("client")) for e in events) == ["127.0.0.1", "police-do"]
    text = intake.text()
    assert "Wrong-Password-99" not in text and PASSWORD not in text
    assert PASSWORD.encode() not in (intake.root / "state" / "gateway.db").read_bytes()


def test_an_officer_with_no_password_and_an_unknown_login_are_refused(intake: Intake) -> None:
    for login in ("council-do", "nobody-here"):
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            intake.client(login, PASSWORD)
        assert refused.value.smtp_code == 535 and b"locked" not in refused.value.smtp_error


def test_a_guessed_login_is_locked_out_but_never_written_down_as_typed(intake: Intake) -> None:
    for _ in range(5):
        with pytest.raises(smtplib.SMTPAuthenticationError):
            intake.client("Ashcroft 01/01/1990", PASSWORD)
    events = [e for e in audit_entries(intake.root) if e["event"] == "smtp.locked_out"]
    assert sorted(str(e.get("officer") or e.get("client")) for e in events) == ["(not an officer id)", "127.0.0.1"]
    assert "Ashcroft" not in (intake.root / "state" / "audit.jsonl").read_text()
    assert "Ashcroft" not in intake.text()


def test_the_envelope_must_be_the_officer_to_the_gateway_and_nobody_else(intake: Intake) -> None:
    with intake.client() as client:
        code, reply = client.mail("someone-else@demo.invalid")
        assert code == 553 and b"registered address" in reply
        code, _ = client.mail("police-do@demo.invalid")
        assert code == 250
        code, reply = client.rcpt("victim@elsewhere.example")
        assert code == 550 and b"relaying denied" in reply
    assert outbox(intake.root) == []


@pytest.mark.parametrize(
    ("case", "code", "says"),
    [
        ("from-header", 550, "From: is not your registered address"),
        ("no-attachment", 554, "no attachment"),
        ("two-csvs", 554, "2 CSVs"),
        ("no-signature", 554, "no signature"),
        ("other-officer", 554, "signed by another officer"),
        ("other-agency", 554, "signed by another agency's officer"),
        ("tampered", 554, "signature is not good"),
        ("malformed", 554, "malformed"),
        ("nested-deep", 554, "malformed"),
        ("too-big", 552, ""),
        ("path-name", 554, "not a plain file name"),
        ("pgp-mime-other-officer", 554, "signed by another officer"),
        ("pgp-mime-other-agency", 554, "signed by another agency's officer"),
        ("pgp-mime-tampered", 554, "signature is not good"),
        ("pgp-mime-unclosed", 554, "malformed"),
        ("pgp-mime-three-parts", 554, "not two parts"),
        ("pgp-mime-s-mime", 554, "protocol is not application/pgp-signature"),
        ("pgp-mime-quoted-printable", 554, "not base64-encoded"),
    ],
)
def test_each_bad_message_gets_a_5xx_with_its_reason_and_writes_nothing(
    intake: Intake, case: str, code: int, says: str
) -> None:
    root = intake.root
    mail: EmailMessage | bytes
    if case == "from-header":
        mail = message(root, sender="Police DO <someone-else@demo.invalid>")
    elif case == "no-attachment":
        mail = message(root, signer=None, csvs=0)
    elif case == "two-csvs":
        mail = message(root, csvs=2)
    elif case == "no-signature":
        mail = message(root, signer=None)
    elif case == "other-officer":
        mail = message(root, signer="police-pdo")
    elif case == "other-agency":
        mail = message(root, signer="probation-do")
    elif case == "tampered":
        mail = message(root, signed=GOOD.read_bytes() + b"\r\n")
    elif case == "malformed":
        boundary = b"=====b"
        mail = (
            b"From: police-do@demo.invalid\r\nTo: " + ADDRESS.encode() + b"\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="'
            + boundary
            + b'"\r\n\r\n--'
            + boundary
            + b"\r\nContent-Type: text/plain\r\n\r\nno closing boundary, no attachment\r\n"
        )
    elif case == "nested-deep":  # deeper than Python's recursion limit: the parser cannot follow it
        level = b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n'
        nested = b"".join(level % (i, i) for i in range(3000))
        mail = b"From: police-do@demo.invalid\r\nTo: " + ADDRESS.encode() + b"\r\nMIME-Version: 1.0\r\n" + nested
    elif case == "too-big":
        mail = message(root, data=GOOD.read_bytes() * (MAX_MESSAGE_BYTES // len(GOOD.read_bytes()) + 2))
    elif case == "path-name":
        mail = message(root, name="../../state/x.csv")
    elif case == "pgp-mime-other-officer":
        mail = pgp_mime(root, signer="police-pdo")
    elif case == "pgp-mime-other-agency":
        mail = pgp_mime(root, signer="probation-do")
    elif case == "pgp-mime-tampered":
        mail = pgp_mime(root, tamper=True)
    elif case == "pgp-mime-unclosed":
        mail = pgp_mime(root, closed=False)
    elif case == "pgp-mime-three-parts":
        mail = pgp_mime(root, parts=3)
    elif case == "pgp-mime-s-mime":
        mail = pgp_mime(root, protocol="application/pkcs7-signature")
    else:
        mail = pgp_mime(root, cte="quoted-printable")
    got, reply = send(intake, mail)
    assert got == code, reply
    assert says in reply
    assert outbox(root) == []
    assert not any(e["event"] == "submission.mailed" for e in audit_entries(root))


def test_set_password_refuses_a_weak_password_a_readable_file_and_a_revoked_officer(intake: Intake) -> None:
    root = intake.root
    weak = _password_file(root, "short")
    assert cli(root, "officers", "set-password", "police-do", "--password-file", str(weak)) == 1
    readable = _password_file(root, PASSWORD)
    readable.chmod(0o644)
    assert cli(root, "officers", "set-password", "police-do", "--password-file", str(readable)) == 1
    assert cli(root, "officers", "set-password", "police-do", "--password-file", str(root / "missing")) == 2
    assert cli(root, "officers", "set-password", "no-such-officer", "--password-file", str(weak)) == 2
    assert cli(root, "officers", "revoke", "police-pdo") == 0
    good = _password_file(root, PASSWORD)
    assert cli(root, "officers", "set-password", "police-pdo", "--password-file", str(good)) == 1
    with pytest.raises(smtplib.SMTPAuthenticationError):
        intake.client("police-pdo", PASSWORD)  # revoked: its old password opens nothing
    with intake.client():  # the refusals changed nothing for police-do
        pass


def _listening_pids(text: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"event=smtp listening .* pid=([0-9]+)", text)]


def test_the_daemon_runs_the_intake_restarts_it_when_it_dies_and_stops_it_with_itself(routed_root: Path) -> None:
    port, context = _configure(routed_root)
    daemon = Daemon(routed_root).ready()
    wait_until(lambda: len(_listening_pids(daemon.text())) == 1, 30, "the intake listening")
    served = Intake(routed_root, port, daemon.process, daemon.log, context)
    assert send(served, message(routed_root, name="police-first-2026-10.csv"))[0] == 250
    wait_until(lambda: all(len(packages(routed_root, r)) == 1 for r in ROUTE), 30, "the first delivery")
    (first,) = _listening_pids(daemon.text())
    os.kill(first, signal.SIGKILL)  # an intake that dies is the intake's outcome, never the daemon's
    wait_until(lambda: len(_listening_pids(daemon.text())) == 2, 60, "the intake started again")
    assert daemon.process.poll() is None
    other = GOOD.read_bytes().replace(b"Attends weekly appointments", b"Attends weekly appointments (2)", 1)
    assert other != GOOD.read_bytes()
    assert send(served, message(routed_root, name="police-second-2026-10.csv", data=other))[0] == 250
    wait_until(lambda: all(len(packages(routed_root, r)) == 2 for r in ROUTE), 30, "the second delivery")
    assert daemon.stop() == 0
    assert "event=smtp intake exited status=-9" in daemon.text()
    for pid in _listening_pids(daemon.text()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", port, timeout=5)


def test_an_intake_that_cannot_start_never_stops_the_daemon_and_is_retried_ever_more_slowly(routed_root: Path) -> None:
    _configure(routed_root)
    (routed_root / "keys" / "smtp.crt").write_text("not a certificate")
    daemon = Daemon(routed_root).ready()
    drop(routed_root, "police", GOOD, "police-while-broken-2026-10.csv", "police-do")
    wait_until(lambda: all(len(packages(routed_root, r)) == 1 for r in ROUTE), 30, "a delivery meanwhile")
    daemon.wait_log("started again in 10s")  # the second failure waits twice as long as the first
    assert daemon.process.poll() is None
    assert daemon.stop() == 0
    text = daemon.text()
    assert "the [smtp.intake] certificate and key do not load" in text
    assert "started again in 5s" in text and "Traceback" not in text


def test_a_name_already_waiting_in_the_outbox_is_refused_and_the_waiting_file_kept(intake: Intake) -> None:
    assert send(intake, message(intake.root))[0] == 250
    other = GOOD.read_bytes().replace(b"Attends weekly appointments", b"Attends weekly appointments (3)", 1)
    code, reply = send(intake, message(intake.root, data=other))
    assert code == 550 and "is already waiting in police's outbox" in reply
    assert (intake.root / "outbox" / "police" / "police-mailed-2026-10.csv").read_bytes() == GOOD.read_bytes()
