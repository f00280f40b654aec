"""Take the receipts officers upload into `outbox/<agency>/receipts/` after pulling away from the gateway.

A receipt is recorded (`package.received`) only when everything in it checks out: it is canonical, its
detached signature is good and by the key it names, that key is an active officer of the agency whose
outbox it came from, the package was delivered to that agency, and its hashes are those of the delivery.
Anything else is moved aside into quarantine with a report in `rejected/`, like a bad submission; nothing of
it is recorded. Receipts hold no personal data (package ids, hashes, officers), and every name in the folder
is treated as hostile.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime

from gateway.adapters.fsio import Folder, is_plain_name, shown
from gateway.adapters.gpg import MAX_SIGNATURE_BYTES
from gateway.core.errors import GatewayError, InputFileError, UsageError
from gateway.core.manifest import MAX_MANIFEST_BYTES
from gateway.core.model import Agency
from gateway.core.receipt import MAX_RECEIPT_BYTES, RECEIPT_SUFFIX, RECEIPTS, SIGNATURE_SUFFIX, Receipt, parse_receipt
from gateway.exchange.outcome import Outcome, Received, Rejected, Waiting
from gateway.exchange.refuse import write_report
from gateway.state.receipts import Receipts
from gateway.state.root import QUARANTINE, Root

log = logging.getLogger(__name__)
RECEIVABLE = ("delivered", "purged")  # a package pulled and then purged was still received


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def take_receipts(root: Root, agency: Agency, outbox: Folder, now: datetime, wait_seconds: float) -> list[Outcome]:
    """Check and record (or refuse) every receipt in the agency's `receipts/` folder; a receipt without its
    signature waits `wait_seconds` for it."""
    try:
        folder = outbox.sub(RECEIPTS)
    except (UsageError, InputFileError):  # none uploaded yet (or not a plain folder: nothing is taken from it)
        return []
    outcomes: list[Outcome] = []
    with folder:
        names = sorted(e.name for e in folder.entries() if e.name.endswith(RECEIPT_SUFFIX))
        for name in names:
            outcomes.append(_take(root, agency, folder, name, now, wait_seconds))
    return outcomes


def _take(root: Root, agency: Agency, folder: Folder, name: str, now: datetime, wait: float) -> Outcome:
    signature_name = name.removesuffix(RECEIPT_SUFFIX) + SIGNATURE_SUFFIX
    try:
        data = folder.read(name, MAX_RECEIPT_BYTES)
        signature = folder.read(signature_name, MAX_SIGNATURE_BYTES)
        if data is None:
            return Waiting(agency.id, name, "gone before it was read")
        if signature is None:
            identity = folder.identity(name)
            age = now.timestamp() - _mtime(folder, name)
            if identity is not None and age < wait:
                return Waiting(agency.id, name, "its signature (.receipt.json.sig) has not arrived yet")
            raise _Refused(f"no signature beside it: upload {shown(signature_name)} with it")
        receipt, officer = _check(root, agency, name, data, signature)
    except InputFileError as exc:
        return _refuse(root, agency, folder, name, signature_name, now, exc.message)
    except _Refused as refused:
        return _refuse(root, agency, folder, name, signature_name, now, refused.reason)
    if Receipts(root.db).record(receipt):
        root.audit.append(
            "package.received",
            actor=officer,
            agency=agency.id,
            package=receipt.package,
            officer=officer,
            fingerprint=receipt.fingerprint,
            received=receipt.received,
        )
    folder.remove(signature_name)
    folder.remove(name)
    folder.sync()
    log.info("received agency=%s package=%s officer=%s", agency.id, receipt.package, officer)
    return Received(agency.id, name, receipt.package, officer)


def _mtime(folder: Folder, name: str) -> float:
    return os.stat(name, dir_fd=folder.fd, follow_symlinks=False).st_mtime


def _check(root: Root, agency: Agency, name: str, data: bytes, signature: bytes) -> tuple[Receipt, str]:
    """The receipt in `data` and the id of the officer who signed it; raise _Refused naming the first problem."""
    try:
        receipt = parse_receipt(data)
    except ValueError as exc:
        raise _Refused(f"not a receipt iom-gateway makes ({exc}): make it with `iom-gateway pull`") from None
    if not is_plain_name(name) or name != receipt.package + RECEIPT_SUFFIX:
        raise _Refused(f"its name is not its package's ({receipt.package}{RECEIPT_SUFFIX}): upload it as pull wrote it")
    if receipt.agency != agency.id:
        raise _Refused(f"it is for a package delivered to {receipt.agency!r}, not to {agency.id!r}")
    check = root.keyring.verify_detached((data,), signature)
    if not check.valid or check.fingerprint is None or str(check.fingerprint) != receipt.fingerprint:
        raise _Refused(
            f"its signature does not verify as {receipt.fingerprint}'s ({check.problem or 'made by another key'})"
        )
    officer = root.registry.by_fingerprint(receipt.fingerprint)
    if officer is None or not officer.active or officer.agency != agency.id:
        raise _Refused(f"{receipt.fingerprint} is not the key of an active officer of {agency.id}")
    if receipt.officer is not None and receipt.officer != officer.id:
        raise _Refused(f"it names officer {receipt.officer!r}, but the key is {officer.id!r}'s")
    found = root.journal.delivery_of(receipt.package, agency.id)
    if found is None or found[0].status not in RECEIVABLE:
        raise _Refused(f"the gateway delivered no package {receipt.package} to {agency.id}")
    if receipt.plaintext_sha256 != found[1]:
        raise _Refused("its plaintext SHA-256 is not that of the file delivered")
    payload = _payload_sha256(root, agency, receipt.package)
    if payload is not None and receipt.payload_sha256 != payload:
        raise _Refused("its payload SHA-256 is not that of the package delivered")
    return receipt, officer.id


def _payload_sha256(root: Root, agency: Agency, package: str) -> str | None:
    """The payload's SHA-256 in the package's manifest while it is in the inbox (the gateway's own file)."""
    try:
        with root.store.open(agency.id) as inbox:
            document = inbox.read(package + ".manifest.json", MAX_MANIFEST_BYTES)
    except GatewayError:
        return None
    if document is None:
        return None
    try:
        value = json.loads(document).get("payload_sha256")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _refuse(
    root: Root, agency: Agency, folder: Folder, name: str, signature_name: str, now: datetime, reason: str
) -> Rejected:
    """Move the receipt (and its signature) aside into quarantine and tell the officer why."""
    shown_name = shown(name)
    stamp = now.strftime("%Y%m%dT%H%M%S")
    with (
        Folder.open(root.path, QUARANTINE, agency.id, create=True) as quarantine,
        quarantine.sub(RECEIPTS, create=True) as aside,
    ):
        for kept in (name, signature_name):
            try:
                data = folder.read(kept, max(MAX_RECEIPT_BYTES, MAX_SIGNATURE_BYTES))
            except InputFileError:
                data = None  # a link or something odd: removed, never followed
            if data is not None and is_plain_name(kept):
                aside.write(f"{stamp}-{kept}", data)
    folder.remove(signature_name)
    folder.remove(name)
    folder.sync()
    text = (
        f"{shown_name}: RECEIPT REFUSED ({now:%Y-%m-%d %H:%M} UTC): {reason}.\n\n"
        "Nothing was recorded; the receipt was set aside. Upload the receipt `iom-gateway pull` wrote, with its\n"
        "signature, into outbox/receipts/; tell the admin if you did.\n"
    )
    report = write_report(root, agency, name, text, {"file": shown_name, "status": "refused", "reasons": [reason]})
    root.audit.append("receipt.refused", actor="gateway", agency=agency.id, file=shown_name, reason=reason)
    log.error("refused receipt agency=%s file=%r: %s", agency.id, name, reason)
    return Rejected(agency.id, name, "receipt", (reason,), report)
