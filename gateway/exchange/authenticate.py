"""Who signed a submission, and may they send it? (Warwickshire 2.3.3, 2.4; Solihull 4.1, 4.4)"""

from __future__ import annotations

from datetime import datetime, timedelta

from gateway.adapters.gpg import (
    CORRECTS_NOTATION,
    MARKING_NOTATION,
    PERIOD_NOTATION,
    REQUEST_NOTATION,
    Fingerprint,
    SignatureCheck,
)
from gateway.core.errors import CryptoError, PolicyError, UsageError
from gateway.core.marking import Level, Marking, apply_marking, requested_level
from gateway.core.model import Period
from gateway.exchange.intake import Job, period_in, period_of
from gateway.exchange.outcome import Refused
from gateway.state.registry import Officer
from gateway.state.requests import Requests, answerable
from gateway.state.root import Root
from gateway.state.signature import Signature, authenticate  # the rules, shared with information requests


def proven(job: Job) -> bool:
    """Whether the signature verifies cryptographically over the one read of the file, by any key
    in the keyring (whether or not its officer may send, or its key is still current).

    Then the bytes are exactly the ones that were signed, so the file is complete and every verdict
    on it (an unregistered signer, an expired key, Table 1, a duplicate) is final. Otherwise (a
    truncated CSV, a half-written signature, no signature packet at all, an unknown key) the file
    may still be arriving: only once it has settled is that a refusal.
    """
    # and gpg read the file to its end: a verdict on fewer bytes than the hash saw proves nothing
    return job.check is not None and job.check.intact and job.source.digest is not None


def signed_by(root: Root, job: Job, now: datetime, *, authenticated_at: datetime | None = None) -> str:
    """The registered officer who signed exactly these bytes; refuse (naming the fix) otherwise.

    `authenticated_at`: when these bytes were first accepted (a partial submission taken again days
    later): the signature's age and the officer's key are judged as of then; it must still verify.
    """
    at = authenticated_at or now
    if job.signed is None:
        timeout = root.config.submissions.pairing_timeout_seconds
        raise Refused(
            "intake",
            [
                f"no signature arrived within {timeout} seconds: every submission needs a detached "
                f"OpenPGP signature by a DO/PDO of {job.agency.id} beside it ({job.shown}.sig or "
                ".asc); sign it and submit both again"
            ],
            advice="Submit the file again together with its signature.",
        )
    if job.check is None:
        raise Refused("authenticate", [f"the signature does not verify: {job.signed.problem}"])
    check = job.check
    fingerprint = str(check.fingerprint) if check.fingerprint else None
    officer = root.registry.by_fingerprint(fingerprint, at) if fingerprint else None
    limits = root.config.submissions
    found = authenticate(
        Signature(
            check.valid,
            fingerprint,
            check.signed_at,
            check.problem,
            check.hash_algorithm,
            check.signature_class,
            canonical=job.signed.envelope is not None,
        ),
        officer,
        job.agency.id,
        now=at,
        max_age=timedelta(hours=limits.signature_max_age_hours),
        skew=timedelta(seconds=limits.clock_skew_seconds),
    )
    if isinstance(found, str):
        raise Refused("authenticate", [found], advice=_advice(check, officer, job.agency.id))
    return found.id


def _advice(check: SignatureCheck, officer: Officer | None, agency: str) -> str | None:
    """What the sender can do when the file may be fine but its signer may not send it; None: fix and resubmit."""
    if check.unknown_key is not None or (check.valid and officer is None):
        return (
            "The file itself was not at fault if it was signed by the right person: ask the gateway admin to "
            f"register the signing key for a DO/PDO of {agency}, or have a registered officer sign it; then "
            "submit the file and its signature again."
        )
    if check.valid and officer is not None and (not officer.active or officer.agency != agency):
        return (
            f"The file itself was not at fault: have a current DO/PDO of {agency} sign it, then submit the file "
            "and its signature again (or drop it into the signing officer's own agency outbox)."
        )
    return None


def intent(root: Root, job: Job, now: datetime) -> tuple[Marking, Period]:
    """The marking and period: the signed notations decide; a file-name prefix can only raise the
    marking; a period in the file name must agree with a signed one. Without notations, the file
    name decides (a prefix, a YYYY-MM), else the floor and the current month."""
    assert job.check is not None  # noqa: S101 (authenticated)
    try:
        signed_marking, signed_period = job.check.notation(MARKING_NOTATION), job.check.notation(PERIOD_NOTATION)
        level = Level.parse(signed_marking) if signed_marking is not None else None
    except (CryptoError, PolicyError) as exc:
        problem = f"the signed marking ({MARKING_NOTATION}): {exc.message}; sign again"
        raise Refused("authenticate", [problem]) from None
    prefix, base = requested_level(job.pair.csv)
    marking = apply_marking(root.config.marking, max((x for x in (level, prefix) if x is not None), default=None))
    named = period_in(base)
    if signed_period is None:
        return marking, period_of(base, now)
    try:
        period = Period.parse(signed_period)
    except UsageError as exc:
        raise Refused("authenticate", [f"the signed period ({PERIOD_NOTATION}): {exc.message}; sign again"]) from None
    if named is not None and named != period:
        raise Refused(
            "authenticate",
            [
                f"the file name says period {named} but the officer signed it for {period} ({PERIOD_NOTATION}): "
                f"rename the file to match the signed period, or sign it again for {named}"
            ],
        )
    return marking, period


def corrects(root: Root, job: Job) -> str | None:
    """The package this file corrects, as its officer signed it (corrects@iom-gateway), or None.

    It must name (by package name or submission id) a package the same agency sent and had delivered:
    a correction can only supersede the sender's own disclosure."""
    assert job.check is not None  # noqa: S101 (authenticated)
    named = job.check.notation(CORRECTS_NOTATION)
    if named is None:
        return None
    package = root.journal.sent_package(job.agency.id, named.strip())
    if package is None:
        raise Refused(
            "authenticate",
            [
                f"the signed {CORRECTS_NOTATION} names {named[:120]!r}, which is no package {job.agency.id} had "
                "delivered: give the package name (or its submission id) the earlier file was delivered as, and "
                "sign again"
            ],
        )
    return package


def answers(root: Root, job: Job, submission: str) -> tuple[str, str] | None:
    """The information request this file answers, as its officer signed it (request@iom-gateway), and the
    agency that asked; None if it answers none. The request must be open, ask this agency, and the asking
    agency must be one of its recipients."""
    assert job.check is not None  # noqa: S101 (authenticated)
    named = job.check.notation(REQUEST_NOTATION)
    if named is None:
        return None
    ident = named.strip()[:40]
    record = Requests(root.db).get(ident)
    recipients = {r.id for r in root.config.recipients(job.agency)}
    why = answerable(record, ident, job.agency.id, recipients, submission)
    if why is not None or record is None:
        raise Refused("authenticate", [f"the signed {REQUEST_NOTATION}: {why}; sign again without it, or for another"])
    return record.id, record.from_agency


def signer_key(job: Job) -> Fingerprint:
    """The key that made the sender's signature (call only once the job is authenticated)."""
    assert job.check is not None and job.check.fingerprint is not None  # noqa: S101 (authenticated)
    return job.check.fingerprint
