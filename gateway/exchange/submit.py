"""`iom-gateway submit`: validate, sign as the officer and drop the pair into the agency's outbox."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from pathlib import Path

from gateway.adapters.fsio import open_once
from gateway.adapters.gpg import (
    CORRECTS_NOTATION,
    MARKING_NOTATION,
    PERIOD_NOTATION,
    REQUEST_NOTATION,
    Fingerprint,
    Keyring,
)
from gateway.core.errors import PolicyError, UsageError
from gateway.core.marking import MARKING_SEPARATOR, Level
from gateway.core.request import REQUEST_ID
from gateway.exchange.intake import drop_pair, period_of
from gateway.state.requests import Requests, answerable
from gateway.state.root import Root
from gateway.validate import Report, validate_stream

log = logging.getLogger(__name__)


def submit(
    root: Root,
    path: Path,
    *,
    agency_id: str,
    officer_id: str,
    marking: str | None,
    gnupghome: Path | None,
    today: date,
    corrects: str | None = None,
    request: str | None = None,
) -> tuple[Report, Path | None]:
    """Validate `path`, sign it as the officer and drop CSV and signature into the agency's outbox.

    The marking and period the officer intends are signed with the file, as the notations
    marking@iom-gateway and period@iom-gateway. The file is read once; the validator, the signature
    and the copy each read that one open file. The signature lands first, each by temp file and
    rename, so the gateway never sees a CSV without its signature or half of either. Returns the
    report and the outbox path (None if refused). With `corrects` (an earlier package of the agency,
    by name or submission id) the officer also signs corrects@iom-gateway: the file supersedes that one.
    With `request` (an open information request to the agency) the officer signs request@iom-gateway: the
    file answers it, and the request is answered once its package reaches the agency that asked.
    """
    agency = root.config.agency(agency_id)
    officer = root.registry.get(officer_id)
    if officer.agency != agency.id:
        raise UsageError(f"{officer_id} is not an active officer of {agency.id}: a DO/PDO of {agency.id} must sign")
    if not officer.active:  # a real officer the register refuses now: exit 1, not a usage error
        raise PolicyError(f"{officer_id} is revoked: an active DO/PDO of {agency.id} must sign; nothing submitted")
    corrected = root.journal.sent_package(agency.id, corrects) if corrects is not None else None
    if corrects is not None and corrected is None:
        raise PolicyError(
            f"--corrects {corrects!r}: {agency.id} had no package delivered by that name or submission id "
            "(`audit show --event package.delivered` lists them); nothing submitted"
        )
    if request is not None:
        _check_answer(root, agency.id, request)
    requested = Level.parse(marking) if marking else None
    level = max(requested or root.config.marking.level, root.config.marking.level)
    base = path.name if level == root.config.marking.level else f"{level.name}{MARKING_SEPARATOR}{path.name}"
    period = period_of(path.name, datetime.now(UTC))
    with open_once(path) as source:
        report = validate_stream(
            source.stream(), source.size, path, agency, root.config, root.standard, period=period, today=today
        )
        if not report.valid:
            return report, None
        home = gnupghome or root.demo_home(officer.id)
        if not home.is_dir():
            raise UsageError(f"no GnuPG home for {officer.id}: pass --gnupghome with the officer's own keyring")
        notations = {MARKING_NOTATION: level.name, PERIOD_NOTATION: str(period)}
        if corrected is not None:
            notations[CORRECTS_NOTATION] = corrected
        if request is not None:
            notations[REQUEST_NOTATION] = request
        signer = Fingerprint.parse(officer.fingerprint)
        signature = Keyring(home).sign_detached(source.chunks(), signer, notations=notations)
        dropped = drop_pair(root.path, agency.id, base, ".sig", signature, source.chunks())
    answering = {"request": request} if request is not None else {}
    root.audit.append("submission.submitted", actor=officer.id, agency=agency.id, rows=report.rows, **answering)
    return report, dropped


def _check_answer(root: Root, agency: str, request: str) -> None:
    """Refuse to answer a request that is malformed (UsageError), unknown, not this agency's to answer, answered
    or refused already, or asked by an agency this one does not send to (PolicyError); nothing is dropped."""
    if not REQUEST_ID.fullmatch(request):
        raise UsageError(f"{request[:40]!r} is not a request id (16 hexadecimal digits, as `request list` shows them)")
    recipients = {r.id for r in root.config.recipients(root.config.agency(agency))}
    why = answerable(Requests(root.db).get(request), request, agency, recipients)
    if why is not None:
        raise PolicyError(f"{why}; nothing submitted")
