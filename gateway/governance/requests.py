"""Information requests between Designated Officers (Warwickshire 2.3.3.1-2.3.3.3, 2.4.2): made in writing by
a DO/PDO of one agency to another, answered within ten working days, a refusal recorded with its reasons.

The request is signed by its officer and checked by the rules a submission's signature meets. Its text
(purpose, grounds, consent evidence, urgent reason) and a refusal's reason are data about a person: they are
kept only encrypted to the gateway's key (`state/requests/ID.gpg`, `ID.refusal.gpg`), never in the register,
the audit log, a log line or the metrics. The register keeps ids, agencies, officers, dates and the outcome.
An answer by submission (`submit --request`, `request answer --with-submission`) closes the request when its
package is delivered to the requester (exchange.deliver).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from gateway.adapters.fsio import Folder, open_once
from gateway.adapters.gpg import Fingerprint, Keyring, Purpose, SignatureCheck
from gateway.core.errors import CryptoError, InputFileError, PolicyError, UsageError
from gateway.core.manifest import canonical_json
from gateway.core.request import (
    MAX_EVIDENCE_BYTES,
    REQUEST_ID,
    REQUESTS,
    Consent,
    Request,
    check_request,
    check_text,
    parse_request,
    request_id,
)
from gateway.governance.holidays import due_date
from gateway.state.registry import Officer
from gateway.state.requests import OPEN, RequestRecord, Requests, local_day
from gateway.state.root import STATE, Root, flush_audit
from gateway.state.signature import Signature, authenticate

log = logging.getLogger(__name__)
TEXT_SUFFIX, REFUSAL_SUFFIX = ".gpg", ".refusal.gpg"


@dataclass(frozen=True, slots=True, repr=False)
class Shown:
    """A request's text as `request show` prints it to the admin, with its refusal if it was refused."""

    record: RequestRecord
    request: Request
    refusal: str | None

    def __repr__(self) -> str:  # printed on purpose by `request show`, never by accident
        return f"Shown({self.record.id}, <text redacted>)"


def new_request(
    root: Root,
    *,
    from_agency: str,
    officer_id: str,
    to_agency: str,
    purpose: str,
    grounds: str,
    consent: Path | None,
    urgent: str | None,
    gnupghome: Path | None,
    now: datetime,
) -> RequestRecord:
    """Sign a request as the officer (their own GnuPG home, else the demo one) and receive it as a drop would be.

    Raises UsageError for an unknown agency or officer, the same agency twice, an empty or overlong text, a
    consent file that cannot be read; PolicyError if the officer is revoked or of another agency, or the gateway
    refuses the signature; ConfigError for a malformed state/bank-holidays.json. Nothing is stored on any.
    """
    agency, asked = root.config.agency(from_agency), root.config.agency(to_agency)
    if agency.id == asked.id:
        raise UsageError(f"--to-agency {asked.id} is the requesting agency itself: name the agency you ask")
    officer = _officer_of(root, officer_id, agency.id)
    try:
        request = check_request(
            Request(
                from_agency=agency.id,
                to_agency=asked.id,
                officer=officer.id,
                purpose=_text("--purpose", purpose),
                grounds=_text("--grounds", grounds),
                consent=_evidence(consent),
                urgent=None if urgent is None else _text("--urgent", urgent),
                created=now.isoformat(timespec="seconds"),
            )
        )
    except ValueError as exc:
        raise UsageError(f"the request is malformed: {exc}") from None
    data = request.to_bytes()
    signature = _keyring(root, officer, gnupghome).sign_detached((data,), Fingerprint.parse(officer.fingerprint))
    return receive(root, data, signature, agency=agency.id, now=now)


def _officer_of(root: Root, officer_id: str, agency: str) -> Officer:
    officer = root.registry.get(officer_id)
    if officer.agency != agency:  # a real officer, who may not sign for this agency: a refusal
        raise PolicyError(
            f"{officer_id} is an officer of {officer.agency}, not of {agency}: only a DO/PDO of {agency} may sign; "
            "nothing recorded"
        )
    if not officer.active:  # a real officer the register refuses now: a refusal, not a usage error
        raise PolicyError(f"{officer_id} is revoked: an active DO/PDO of {agency} must sign; nothing recorded")
    return officer


def _keyring(root: Root, officer: Officer, gnupghome: Path | None) -> Keyring:
    home = gnupghome or root.demo_home(officer.id)
    if not home.is_dir():
        raise UsageError(f"no GnuPG home for {officer.id}: pass --gnupghome with the officer's own keyring")
    return Keyring(home)


_NAMES = {"--purpose": "purpose", "--grounds": "grounds", "--urgent": "urgent reason", "--refuse": "reason"}


def _text(option: str, value: str) -> str:
    try:
        return check_text(_NAMES[option], value)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _evidence(path: Path | None) -> Consent | None:
    """The consent evidence file (None for `--consent none` or no option); UsageError if it cannot be used."""
    if path is None:
        return None
    try:
        with open_once(path) as file:
            data = b"".join(file.chunks(compare=False)) if file.size <= MAX_EVIDENCE_BYTES else None
    except (UsageError, InputFileError) as exc:
        raise UsageError(
            f"--consent {str(path)!r} cannot be read ({exc.message}): name the evidence file, or none"
        ) from None
    except OSError as exc:
        raise UsageError(
            f"--consent {str(path)!r} cannot be read ({exc.strerror}): name the evidence file, or none"
        ) from None
    if data is None:
        raise UsageError(f"--consent {str(path)!r} is larger than {MAX_EVIDENCE_BYTES:,} bytes: attach a smaller scan")
    return Consent(path.name, data)


def receive(root: Root, data: bytes, signature: bytes, *, agency: str, now: datetime) -> RequestRecord:
    """Check a signed request that came from `agency` and register it, its text stored encrypted; the same
    request again is the one already registered.

    Raises PolicyError, with nothing stored, if it is malformed, not from `agency`, to no agency of the
    partnership, or not signed (by the rules a submission's signature meets) by the active DO/PDO it names.
    """
    try:
        request = parse_request(data)
    except ValueError as exc:
        raise PolicyError(f"not a request iom-gateway takes ({exc}): make it with `iom-gateway request new`") from None
    if request.from_agency != agency:
        raise PolicyError(
            f"it is a request from {request.from_agency}, dropped for {agency}: drop it in its own outbox"
        )
    if request.to_agency not in root.config.agencies:
        raise PolicyError(f"it asks {request.to_agency!r}, which is no agency of the partnership")
    officer = _signer(root, data, signature, agency, now)
    if officer.id != request.officer:
        raise PolicyError(f"it names officer {request.officer!r} but is signed by {officer.id}: sign your own request")
    ident = request_id(data)
    requests = Requests(root.db)
    known = requests.get(ident)
    if known is not None:
        return known
    due, gateway = due_date(root, local_day(now)), root.gateway_key()  # before anything is stored: either may refuse
    _seal(root, ident + TEXT_SUFFIX, {"request": data, "signature": signature}, gateway)  # record the text first
    record = RequestRecord(
        ident, agency, officer.id, request.to_agency, now.isoformat(timespec="seconds"), due.isoformat(),
        request.urgent is not None, OPEN, None, None, None, None, str(gateway),
    )  # fmt: skip
    details = {
        "request": ident, "from": agency, "to": request.to_agency, "officer": officer.id,
        "urgent": record.urgent, "due": record.due, "consent": request.consent is not None,
    }  # fmt: skip
    requests.add(record, details)
    flush_audit(root)
    log.info("request received id=%s from=%s to=%s due=%s", ident, agency, request.to_agency, record.due)
    return record


def _signer(root: Root, data: bytes, signature: bytes, agency: str, now: datetime) -> Officer:
    """The registered, active DO/PDO of `agency` whose current key signed `data`; else PolicyError (why and the fix)."""
    check = root.keyring.verify_detached((data,), signature)
    fingerprint = str(check.fingerprint) if check.fingerprint else None
    officer = root.registry.by_fingerprint(fingerprint, now) if fingerprint else None
    limits = root.config.submissions
    found = authenticate(
        _signature(check),
        officer,
        agency,
        now=now,
        max_age=timedelta(hours=limits.signature_max_age_hours),
        skew=timedelta(seconds=limits.clock_skew_seconds),
    )
    if isinstance(found, str):
        raise PolicyError(f"refused: {found}; nothing was recorded")
    return found


def _signature(check: SignatureCheck) -> Signature:
    fingerprint = str(check.fingerprint) if check.fingerprint else None
    return Signature(
        check.valid, fingerprint, check.signed_at, check.problem, check.hash_algorithm, check.signature_class
    )


def _seal(root: Root, name: str, parts: dict[str, bytes], gateway: Fingerprint) -> None:
    """Write `parts` (base64 in one JSON) encrypted to the gateway key as state/requests/NAME (0600, atomic)."""
    bundle = json.dumps({key: base64.b64encode(value).decode("ascii") for key, value in parts.items()}).encode()
    with Folder.open(root.path, STATE, REQUESTS, create=True) as folder, folder.new_file(name) as target:
        root.keyring.encrypt(
            (bundle,), target, recipients=[gateway], signer=gateway, literal_name=name.removesuffix(".gpg"),
            purpose=Purpose.REQUEST,
        )  # fmt: skip


def lookup(root: Root, text: str) -> RequestRecord:
    """The request with id `text`; raise UsageError if it is no request id, PolicyError if none has it."""
    if not REQUEST_ID.fullmatch(text):
        raise UsageError(f"{text[:40]!r} is not a request id (16 hexadecimal digits, as `request list` shows them)")
    record = Requests(root.db).get(text)
    if record is None:
        raise PolicyError(f"no request {text} in the register: `iom-gateway request list` shows them")
    return record


def answering(root: Root, text: str, officer_id: str) -> RequestRecord:
    """The request `officer_id` is about to answer with a submission, once they are shown to be an active DO/PDO
    of the agency asked. Raises as `lookup`, and PolicyError for an officer of another agency or a revoked one
    (a refusal, as for `refuse`: exit 1, nothing submitted)."""
    record = lookup(root, text)
    _officer_of(root, officer_id, record.to_agency)
    return record


def refuse(
    root: Root, text: str, *, officer_id: str, reason: str, gnupghome: Path | None, now: datetime
) -> RequestRecord:
    """Refuse an open request as an active DO/PDO of the agency asked, with the reasons (Warwickshire 2.3.3.3):
    signed by the officer, stored encrypted; the register and `request.refused` hold no word of it.

    Raises UsageError (malformed id, an empty reason, an officer of another agency), PolicyError (no such
    request, not open any more, a revoked officer, a signature the gateway refuses)."""
    record = lookup(root, text)
    officer = _officer_of(root, officer_id, record.to_agency)
    if record.status != OPEN:
        raise PolicyError(f"request {record.id} is {record.status} already: it can be answered once")
    document = canonical_json(
        {
            "version": 1,
            "request": record.id,
            "officer": officer.id,
            "reason": _text("--refuse", reason),
            "refused": now.isoformat(timespec="seconds"),
        }
    )
    signature = _keyring(root, officer, gnupghome).sign_detached((document,), Fingerprint.parse(officer.fingerprint))
    _signer(root, document, signature, record.to_agency, now)
    _seal(root, record.id + REFUSAL_SUFFIX, {"refusal": document, "signature": signature}, root.gateway_key())
    details = {"request": record.id, "from": record.from_agency, "to": record.to_agency, "officer": officer.id}
    if not Requests(root.db).refused(record, officer.id, details):
        raise PolicyError(f"request {record.id} was answered meanwhile: it can be answered once")
    flush_audit(root)
    log.info("request refused id=%s by=%s", record.id, officer.id)
    refused = Requests(root.db).get(record.id)
    assert refused is not None  # noqa: S101 (just written)
    return refused


def list_requests(root: Root, *, open_only: bool, agency: str | None) -> list[RequestRecord]:
    """The register, urgent first, then by due date; raise UsageError for an unknown agency."""
    if agency is not None:
        root.config.agency(agency)
    return Requests(root.db).all(open_only=open_only, agency=agency)


def show(root: Root, text: str, *, actor: str) -> Shown:
    """Decrypt a request's text (and its refusal's reason) for the admin; audited as `request.shown` (by whom,
    which request: never what it says). Raises as `lookup`; CryptoError if the gateway key that sealed it is gone."""
    record = lookup(root, text)
    purged = Requests(root.db).text_purged(record.id)
    if purged is not None:
        raise PolicyError(
            f"the text of request {record.id} was deleted on {purged[:10]} with the audit entries of its answer "
            "([retention] audit_days); `request list` still shows its ids, dates and outcome"
        )
    bundle = _open(root, record.id + TEXT_SUFFIX)
    request = parse_request(bundle["request"])
    refusal = None
    if os.path.exists(root.path / STATE / REQUESTS / (record.id + REFUSAL_SUFFIX)):
        refusal = str(json.loads(_open(root, record.id + REFUSAL_SUFFIX)["refusal"])["reason"])
    root.audit.append("request.shown", actor=actor, agency=record.to_agency, request=record.id)
    return Shown(record, request, refusal)


def _open(root: Root, name: str) -> dict[str, bytes]:
    signers = [Fingerprint.parse(fingerprint) for fingerprint, *_ in root.journal.gateway_keys()]
    plain = io.BytesIO()  # in memory only: the text goes to the admin's terminal, nowhere else
    try:
        with Folder.open(root.path, STATE, REQUESTS) as folder, folder.open_file(name) as file:
            root.keyring.decrypt(file.chunks(), plain, signers=signers, purpose=Purpose.REQUEST, name=name)
    except (UsageError, InputFileError) as exc:
        raise CryptoError(f"the text of {name} cannot be read ({exc.message}): tell the admin") from None
    return {key: base64.b64decode(value) for key, value in json.loads(plain.getvalue()).items()}
