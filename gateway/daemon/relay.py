"""The relay: sends what the journal queued (packages by e-mail, notices) through [smtp.relay].

A process of `iom-gateway run` of its own (started, stopped and restarted like the SMTP intake),
so a slow or hanging mail server never holds a delivery. Every few seconds it sends the messages
that are due, over one connection: TLS always (STARTTLS, refused if the server does not offer it,
or implicit TLS), the server's certificate checked against `ca_file` or the system's CAs and its
name, and the login's password from the vault. A message is marked sent, durably, as soon as the
server answers 250 to its DATA, and never sent again; a 4xx or a lost connection is retried after
5 s, then twice as long each time up to 15 minutes; a 5xx, or `give_up_hours` of failures, gives it
up: an audit event, an ERROR line and a notice to the admins.

Exactly once, and its one limit: a SIGKILL (or power cut) after the server took a message and
before the journal recorded it, a window of one commit, sends that message again on restart, with
the same Message-ID. Anywhere else a crash loses nothing and doubles nothing.

Once an hour it also queues the admins' notices: agencies late for the month, keys near expiry.
"""

from __future__ import annotations

import logging
import signal
import smtplib
import ssl
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.adapters.config import SmtpRelay
from gateway.adapters.vault import RELAY_CREDENTIAL
from gateway.core import faults
from gateway.core.errors import GatewayError, VaultError
from gateway.exchange.health import key_warnings, late_agencies
from gateway.exchange.mailout import (
    KEY_EXPIRY,
    LANDED,
    LATE,
    RELAY_GAVE_UP,
    admin_notices,
    compose,
    relay_tls_context,
    spool,
)
from gateway.state.journal import MailItem
from gateway.state.root import Root, flush_audit

log = logging.getLogger("gateway.daemon.relay")
POLL_SECONDS = 5.0
FIRST_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 15 * 60.0
HEALTH_SECONDS = 3600.0
TIMEOUT_SECONDS = 60.0


class Unreachable(Exception):
    """No session with the relay (no connection, no TLS, a refused login): every message waits."""


def _batches(due: list[MailItem]) -> list[list[MailItem]]:
    """One message per item, except landed notices: one for every package waiting for an officer."""
    batches: list[list[MailItem]] = []
    landed: dict[str, list[MailItem]] = {}
    for item in due:
        if item.kind == LANDED:
            if item.address not in landed:
                landed[item.address] = []
                batches.append(landed[item.address])
            landed[item.address].append(item)
        else:
            batches.append([item])
    return batches


def _retry_after(attempts: int) -> float:
    return float(min(FIRST_RETRY_SECONDS * 2 ** max(attempts, 0), MAX_RETRY_SECONDS))


class Relay:
    """The sending side of one root's [smtp.relay]."""

    def __init__(self, root: Root, relay: SmtpRelay, clock: Callable[[], datetime] | None = None) -> None:
        self.root, self.relay = root, relay
        self.clock = clock or (lambda: datetime.now(UTC))
        self.context = relay_tls_context(relay)
        self.checked_health = 0.0

    def _login(self, session: smtplib.SMTP) -> None:
        if not self.relay.user:
            return
        try:
            password = self.root.vault.credential(RELAY_CREDENTIAL)
        except VaultError as exc:
            raise Unreachable(f"the vault does not open ({exc.message})") from None
        if password is None:
            raise Unreachable("no relay password in the vault: run `iom-gateway keys relay-password --password-file F`")
        try:
            session.login(self.relay.user, password.reveal())
        except smtplib.SMTPException as exc:
            raise Unreachable(f"the relay refused the login {self.relay.user!r} ({_said(exc)})") from None

    def connect(self) -> smtplib.SMTP:
        """A logged-in session over TLS; Unreachable with the reason if there is none."""
        relay = self.relay
        try:
            if relay.tls == "implicit":
                session: smtplib.SMTP = smtplib.SMTP_SSL(
                    relay.host, relay.port, timeout=TIMEOUT_SECONDS, context=self.context
                )
            else:
                session = smtplib.SMTP(relay.host, relay.port, timeout=TIMEOUT_SECONDS)
                session.ehlo()
                if not session.has_extn("starttls"):
                    session.close()
                    raise Unreachable(
                        "the relay does not offer STARTTLS: the gateway never sends in clear "
                        '(ask for STARTTLS, or use tls = "implicit" on its TLS port)'
                    )
                session.starttls(context=self.context)
                session.ehlo()
        except ssl.SSLCertVerificationError as exc:
            raise Unreachable(f"the relay's certificate does not verify ({exc.verify_message})") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise Unreachable(f"no TLS session with {relay.host}:{relay.port} ({_said(exc)})") from None
        try:
            self._login(session)
        except Unreachable:
            session.close()
            raise
        return session

    def send_due(self) -> int:
        """Send every message due now over one session; return how many were sent."""
        now = self.clock()
        due = self.root.journal.mail_due(now.isoformat(timespec="seconds"))
        if not due:
            return 0
        batches, sent = _batches(due), 0
        try:
            session = self.connect()
        except Unreachable as exc:
            log.warning("relay unreachable messages=%d: %s", len(due), exc)
            for batch in batches:
                self._failed(batch, str(exc), now, permanent=False)
            return 0
        try:
            for index, batch in enumerate(batches):
                try:
                    self._send(session, batch, now)
                    sent += 1
                except Unreachable as exc:  # the session is lost: this and the rest wait
                    for rest in batches[index:]:
                        self._failed(rest, str(exc), now, permanent=False)
                    break
        finally:
            try:
                session.quit()
            except (OSError, smtplib.SMTPException):
                session.close()
            flush_audit(self.root)
            self._tidy_spool()
        return sent

    def _send(self, session: smtplib.SMTP, batch: list[MailItem], now: datetime) -> None:
        first = batch[0]
        if first.officer is not None and not self._still_active(first.officer):
            # revoked (or gone) since it was queued: an officer who has left gets nothing more
            dropped = {"kind": first.kind, "officer": first.officer, "agency": first.agency, "reason": "revoked"}
            ids = tuple(i.id for i in batch)
            self.root.journal.mail_gave_up(ids, "the officer is no longer active", ("mail.gave_up", dropped), ())
            log.info("relay dropped kind=%s officer=%s: no longer active", first.kind, first.officer)
            return
        try:
            message = compose(self.root, self.relay, batch, now)
        except (OSError, GatewayError) as exc:
            self._failed(batch, f"its attachment is gone ({type(exc).__name__}): purged, or state/ was lost", now)
            return
        faults.reached("relay.sending")
        try:
            session.send_message(message, from_addr=self.relay.sender, to_addrs=[first.address])
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            self._failed(batch, f"{code} {_text(text)}", now, permanent=code >= 500)
            return
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            self._failed(batch, f"{exc.smtp_code} {_text(exc.smtp_error)}", now, permanent=exc.smtp_code >= 500)
            return
        except (OSError, smtplib.SMTPException) as exc:
            raise Unreachable(f"the session with the relay was lost ({_said(exc)})") from None
        faults.reached("relay.accepted")  # the one window: taken by the server, not yet recorded
        sent: dict[str, object] = {
            "kind": first.kind,
            "officer": first.officer,
            "agency": first.agency,
            "packages": [i.package for i in batch if i.package] or None,
            "message_id": message["Message-ID"],
        }
        self.root.journal.mail_sent(tuple(i.id for i in batch), ("mail.sent", sent))
        log.info("relay sent kind=%s officer=%s agency=%s", first.kind, first.officer, first.agency)

    def _still_active(self, officer_id: str) -> bool:
        try:
            return self.root.registry.get(officer_id).active
        except GatewayError:
            return False

    def _failed(self, batch: list[MailItem], reason: str, now: datetime, *, permanent: bool = True) -> None:
        first = batch[0]
        ids = tuple(i.id for i in batch)
        created = min(datetime.fromisoformat(i.created) for i in batch)
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        if not permanent and now - created < timedelta(hours=self.relay.give_up_hours):
            due = now + timedelta(seconds=_retry_after(first.attempts))
            self.root.journal.mail_retry(ids, reason, due.isoformat(timespec="seconds"))
            return
        what = f"{first.kind} message to {first.officer or 'an admin'}" + (
            f" about {first.package}" if first.package else ""
        )
        alert = (
            ()
            if first.kind == RELAY_GAVE_UP
            else admin_notices(
                self.root,
                RELAY_GAVE_UP,
                first.id,
                f"The gateway gave up sending a {what}: {reason}. Nothing else was affected: the package, "
                "if any, is still in its inbox. Check [smtp.relay] and the recipient's address "
                "(`iom-gateway officers show`).",
            )
        )
        details = {"kind": first.kind, "officer": first.officer, "agency": first.agency, "reason": reason[:200]}
        self.root.journal.mail_gave_up(ids, reason, ("mail.gave_up", details), alert)
        log.error(
            "relay gave up kind=%s officer=%s agency=%s reason=%s", first.kind, first.officer, first.agency, reason
        )

    def _tidy_spool(self) -> None:
        """Remove each spooled entity no queued message attaches any more."""
        folder = spool(self.root)
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            if path.suffix == ".asc" and not self.root.journal.mail_waiting_for(path.name):
                path.unlink(missing_ok=True)

    def check_health(self, monotonic: float) -> None:
        """Once an hour: queue the admins' notices of late agencies and keys near expiry (each once a month)."""
        if self.checked_health and monotonic - self.checked_health < HEALTH_SECONDS:
            return
        self.checked_health = monotonic
        now = self.clock()
        month = now.strftime("%Y-%m")
        items: list[MailItem] = []
        for agency in late_agencies(self.root, now):
            items += admin_notices(
                self.root,
                LATE,
                f"{agency}:{month}",
                f"{agency} has not sent its file for {month} (due by day {self.root.config.submissions.due_day}): "
                "remind its Designated Officer.",
            )
        for warning in key_warnings(self.root, now):
            items += admin_notices(
                self.root,
                KEY_EXPIRY,
                f"{warning.fingerprint}:{month}:{warning.problem.split(':')[0].split(' in ')[0]}",
                f"{warning.owner}: {warning.problem} (key {warning.fingerprint}).",
            )
        self.root.journal.mail_queue(tuple(items))


def _text(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return " ".join(text.split())[:200]


def _said(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {_text(exc.smtp_error)}"
    return _text(str(exc)) or type(exc).__name__


def serve(path: Path, stop: threading.Event) -> int:
    """Send the root's queued mail until `stop` is set; return the exit status."""
    root = Root.open(path)
    relay = root.config.smtp_relay
    if relay is None:
        log.error("gateway.toml has no [smtp.relay] section: nothing to send through")
        return 1
    sender = Relay(root, relay)
    log.info("relay started host=%s port=%d tls=%s", relay.host, relay.port, relay.tls)
    try:
        while not stop.is_set():
            sender.check_health(time.monotonic())
            sender.send_due()
            stop.wait(POLL_SECONDS)
    finally:
        root.close()
    log.info("relay stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m gateway.daemon.relay --root DIR --parent PID`: the relay as the daemon's child."""
    from gateway.daemon.worker import arm_child_faults, child_logging, child_of_daemon  # noqa: PLC0415

    path = child_of_daemon("gateway.daemon.relay", "The mail relay of `iom-gateway run`.", argv)
    if path is None:
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the daemon's to act on: it restarts this process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    child_logging()
    arm_child_faults()
    try:
        return serve(path, stop)
    except GatewayError as exc:
        log.error("relay cannot start: %s", exc.message.replace("\n", " "))
        return 1


if __name__ == "__main__":
    sys.exit(main())
