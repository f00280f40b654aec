"""`iom-gateway smtp`: the SMTP intake, where registered officers send their monthly file by e-mail.

An aiosmtpd server on `[smtp.intake] listen`, speaking only TLS: before STARTTLS it answers
nothing but EHLO, NOOP, QUIT and STARTTLS (`require_starttls`), and it offers AUTH (PLAIN,
LOGIN) only after it (`auth_require_tls`); MAIL before AUTH is refused (`auth_required`). The
login is the officer id and the password the admin set with `officers set-password` (an scrypt
hash in the register, compared in constant time). Five failed logins within 15 minutes lock that
officer, and that client address, out for 15 minutes, each lock an audit event.

MAIL FROM must be the authenticated officer's registered address and RCPT TO the intake's own
`address`: the gateway relays to nobody. A message over `max_message_bytes` is refused while it
arrives (552). Each accepted message goes to exchange/mailin.py, which answers 250 only once the
CSV and its signature are on disk in the agency's outbox (so an accepted message is never lost),
or a 5xx with the reason and the fix, having written nothing.

Everything runs on one event loop in this process: a session's checks (scrypt, gpg's verify)
hold the others for their ~0.1 s, which an agency's monthly files never notice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.adapters.config import SmtpIntake
from gateway.adapters.passwords import login_matches
from gateway.core.errors import GatewayError, UsageError
from gateway.core.secret import Secret
from gateway.exchange.mailin import Refusal, read_message, same_address, take_mailed, tls_context
from gateway.state.registry import Officer
from gateway.state.root import Root

log = logging.getLogger("gateway.daemon.smtp")  # the same name when run as `python -m`
FAILURES_BEFORE_LOCK = 5
FAILURE_WINDOW_SECONDS = 15 * 60
LOCK_SECONDS = 15 * 60
PRUNE_ABOVE = 10_000  # remembered logins and addresses before the stale ones are dropped
IDENT = "iom-gateway SMTP intake"


@dataclass
class Lockouts:
    """Failed logins per officer and per client address; five in the window lock it for a while."""

    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, list[float]] = field(default_factory=dict)
    _locked: dict[str, float] = field(default_factory=dict)

    def locked(self, *keys: str) -> bool:
        now = self.clock()
        return any(self._locked.get(key, 0.0) > now for key in keys)

    def failed(self, *keys: str) -> list[str]:
        """Count a failure for each key; return those it locks now."""
        now, locked = self.clock(), []
        if len(self._failures) + len(self._locked) > PRUNE_ABOVE:
            self._prune(now)  # a guesser trying many logins must not grow this without bound
        for key in keys:
            recent = [t for t in self._failures.get(key, []) if now - t < FAILURE_WINDOW_SECONDS] + [now]
            self._failures[key] = recent
            if len(recent) >= FAILURES_BEFORE_LOCK and self._locked.get(key, 0.0) <= now:
                self._locked[key] = now + LOCK_SECONDS
                self._failures[key] = []
                locked.append(key)
        return locked

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    @property
    def tracked(self) -> int:
        """How many logins and addresses are remembered (failures in the window, or locked)."""
        return len(self._failures.keys() | self._locked.keys())

    def _prune(self, now: float) -> None:
        self._failures = {k: v for k, v in self._failures.items() if v and now - v[-1] < FAILURE_WINDOW_SECONDS}
        self._locked = {k: until for k, until in self._locked.items() if until > now}


class Intake:
    """aiosmtpd's authenticator and handler for one root."""

    def __init__(self, root: Root, settings: SmtpIntake, lockouts: Lockouts | None = None) -> None:
        self.root = root
        self.settings = settings
        self.lockouts = lockouts or Lockouts()

    # ------------------------------------------------------------------- AUTH (an authenticator)

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword  # noqa: PLC0415 (only the intake needs aiosmtpd)

        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        client = f"client:{session.peer[0] if session.peer else '?'}"
        who = f"officer:{login}"
        if self.lockouts.locked(who, client):
            return AuthResult(
                success=False,
                handled=False,
                message="535 5.7.8 too many failed logins: locked out for 15 minutes; ask the gateway's admin "
                "if you have forgotten your password",
            )
        officer = self._officer(login)
        password = Secret(auth_data.password.decode("utf-8", "replace"))
        stored = self.root.registry.login_hash(officer.id) if officer is not None else None
        if login_matches(password, stored) and officer is not None and officer.active:
            self.lockouts.succeeded(who)
            log.info("smtp login officer=%s", officer.id)
            return AuthResult(success=True, auth_data=officer)
        for key in self.lockouts.failed(who, client):
            kind, _, value = key.partition(":")
            if kind == "officer" and officer is None:
                value = "(not an officer id)"  # the login is the caller's text: never recorded as given
            details: dict[str, Any] = {kind: value, "failures": FAILURES_BEFORE_LOCK, "minutes": LOCK_SECONDS // 60}
            agency = officer.agency if officer is not None and kind == "officer" else None
            self.root.audit.append("smtp.locked_out", actor="gateway", agency=agency, **details)
            log.warning("smtp locked out %s=%s for %d minutes", kind, value, LOCK_SECONDS // 60)
        log.info("smtp failed login client=%s", client.partition(":")[2])
        return AuthResult(success=False, handled=False)

    def _officer(self, login: str) -> Officer | None:
        try:
            return self.root.registry.get(login)
        except GatewayError:
            return None

    # ------------------------------------------------------------------- the transaction (a handler)

    async def handle_MAIL(  # aiosmtpd's hook names
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        officer: Officer = session.auth_data
        if not same_address(address, officer.email):
            return f"553 5.7.1 you ({officer.id}) may send only from your registered address <{officer.email}>"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        if not same_address(address, self.settings.address):
            return f"550 5.7.1 relaying denied: this gateway takes mail only for <{self.settings.address}>"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        officer: Officer = session.auth_data
        raw = envelope.original_content or envelope.content or b""
        try:
            name = take_mailed(self.root, officer, read_message(bytes(raw), officer))
        except Refusal as refusal:
            log.info("smtp refused officer=%s reply=%r", officer.id, refusal.reply[:3])
            return refusal.reply
        except Exception as exc:  # hostile bytes must be an outcome for this message alone
            log.error("smtp could not read a message officer=%s error=%s", officer.id, type(exc).__name__)
            return (
                "554 5.3.0 the gateway could not read this message (its admin can see why in the log): "
                "send an ordinary message with the CSV and its signature attached"
            )
        log.info("smtp accepted officer=%s agency=%s", officer.id, officer.agency)
        return f"250 2.0.0 {name.rsplit('/', 1)[-1]} is in {officer.agency}'s outbox: the gateway checks it now"


def _one_line(record: logging.LogRecord) -> bool:
    """aiosmtpd logs a session's exception (a client's reset, a broken TLS handshake) with its
    traceback: keep it to one line naming the error, a warning (hostile clients do this)."""
    if record.exc_info:
        kind = record.exc_info[0].__name__ if record.exc_info[0] is not None else "error"
        record.msg, record.args = "smtp session ended by %s", (kind,)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def _connection_trouble(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A client that resets or drops its connection is that session's end, one line in the log, never
    a traceback (asyncio's own handler prints one for every reset)."""
    problem = context.get("exception")
    if isinstance(problem, OSError | asyncio.IncompleteReadError | ssl.SSLError):
        log.info("smtp connection ended by the client: %s", type(problem).__name__)
        return
    log.error("smtp event loop: %s (%s)", context.get("message", "?"), type(problem).__name__ if problem else "-")


def serve(path: Path, *, stop_on: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> int:
    """Run the intake of the root at `path` until one of `stop_on` arrives; return the exit status."""
    from aiosmtpd.smtp import SMTP  # noqa: PLC0415

    root = Root.open(path)
    settings = root.config.smtp_intake
    if settings is None:
        raise UsageError(
            "gateway.toml has no [smtp.intake] section: add one (listen, address, tls_cert, tls_key) to take mail"
        )
    context = tls_context(settings)
    session_log = logging.getLogger("mail.log")  # aiosmtpd's own session log: peers, commands
    session_log.setLevel(logging.ERROR)
    session_log.addFilter(_one_line)
    intake = Intake(root, settings)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.set_exception_handler(_connection_trouble)

    def session() -> SMTP:
        return SMTP(
            intake,
            hostname=settings.address.rpartition("@")[2],
            ident=IDENT,
            tls_context=context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=intake,
            data_size_limit=settings.max_message_bytes,
            loop=loop,
        )

    try:
        server = loop.run_until_complete(loop.create_server(session, host=settings.host, port=settings.port))
    except OSError as exc:
        raise UsageError(
            f"the intake cannot listen on {settings.host}:{settings.port} ({exc.strerror}): "
            "choose a free port in [smtp.intake] listen, or stop what holds it"
        ) from None
    for number in stop_on:
        loop.add_signal_handler(number, loop.stop)
    bound = server.sockets[0].getsockname()
    log.info("smtp listening host=%s port=%d address=%s pid=%d", bound[0], bound[1], settings.address, os.getpid())
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()
        root.close()
    log.info("smtp stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m gateway.daemon.smtp --root DIR --parent PID`: the intake as the daemon's child."""
    from gateway.daemon.worker import child_logging, child_of_daemon  # noqa: PLC0415 (the child's set-up only)

    path = child_of_daemon("gateway.daemon.smtp", "The SMTP intake of `iom-gateway run`.", argv)
    if path is None:
        return 1
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the daemon's to act on: it restarts this process
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the group: the daemon sends SIGTERM
    child_logging()
    try:
        return serve(path, stop_on=(signal.SIGTERM,))
    except GatewayError as exc:
        log.error("smtp intake cannot start: %s", exc.message.replace("\n", " "))
        return 1


if __name__ == "__main__":
    sys.exit(main())
