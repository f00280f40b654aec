"""Take the signed requests officers drop into `outbox/<agency>/requests/` (NAME.json + NAME.json.sig).

Each file is an outcome for itself: a bad one never stops the daemon or the others. A request that checks
out is registered and removed from the folder; a refused one is quarantined encrypted to the gateway key
(with its signature as it came), a short report `NAME.json.rejected.txt` is left beside where it was, and
nothing of it is registered. Every name in the folder is hostile: only plain names are taken.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gateway.adapters.fsio import Folder, is_plain_name, shown
from gateway.adapters.gpg import MAX_SIGNATURE_BYTES, Purpose
from gateway.adapters.perms import group_id
from gateway.core.errors import GatewayError, InputFileError, UsageError
from gateway.core.model import Agency
from gateway.core.request import MAX_REQUEST_BYTES, REQUEST_SIGNATURE_SUFFIX, REQUEST_SUFFIX, REQUESTS
from gateway.governance.requests import receive
from gateway.state.requests import RequestRecord
from gateway.state.root import QUARANTINE, Root

log = logging.getLogger(__name__)
REJECTED_SUFFIX = ".rejected.txt"


@dataclass(frozen=True, slots=True)
class Dropped:
    """What became of one dropped request: registered (`record`), refused (`reason`, `report`), or waiting."""

    agency: str
    name: str
    record: RequestRecord | None = None
    reason: str | None = None
    report: Path | None = None

    @property
    def waiting(self) -> bool:
        return self.record is None and self.reason is None


def take_requests(root: Root, agency: Agency, outbox: Folder, now: datetime, wait_seconds: float) -> list[Dropped]:
    """Register (or refuse) every signed request in the agency's `requests/` folder. A request whose
    signature has not arrived, or that does not check out while either file is younger than `wait_seconds`
    (it may still be arriving), waits."""
    try:
        folder = outbox.sub(REQUESTS)
    except (UsageError, InputFileError):  # none dropped yet (or not a plain folder: nothing is taken from it)
        return []
    with folder:
        names = sorted(
            e.name
            for e in folder.entries()
            if e.name.endswith(REQUEST_SUFFIX) and is_plain_name(e.name) and not e.name.startswith(".")
        )
        return [_take(root, agency, folder, name, now, wait_seconds) for name in names]


def _take(root: Root, agency: Agency, folder: Folder, name: str, now: datetime, wait: float) -> Dropped:
    signature_name = name + REQUEST_SIGNATURE_SUFFIX.removeprefix(REQUEST_SUFFIX)
    young = _age(folder, name, now) < wait or _age(folder, signature_name, now) < wait
    try:
        data = folder.read(name, MAX_REQUEST_BYTES)
        signature = folder.read(signature_name, MAX_SIGNATURE_BYTES)
        if data is None:
            return Dropped(agency.id, name)  # gone before it was read
        if signature is None:
            if young:
                return Dropped(agency.id, name)
            return _refuse(root, agency, folder, name, now, f"no signature beside it: drop {shown(signature_name)}")
        record = receive(root, data, signature, agency=agency.id, now=now)
    except GatewayError as exc:
        if young:
            return Dropped(agency.id, name)
        return _refuse(root, agency, folder, name, now, exc.message)
    folder.remove(signature_name)
    folder.remove(name)
    folder.remove(name + REJECTED_SUFFIX)  # an earlier refusal of the same name: this one was taken
    folder.sync()
    return Dropped(agency.id, name, record)


def _age(folder: Folder, name: str, now: datetime) -> float:
    try:
        return now.timestamp() - os.stat(name, dir_fd=folder.fd, follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return float("inf")


def _refuse(root: Root, agency: Agency, folder: Folder, name: str, now: datetime, reason: str) -> Dropped:
    """Quarantine the request (encrypted: it may hold what the officer wrote about a person) and its signature,
    remove both, and write the report beside them for the officer."""
    signature_name = name + REQUEST_SIGNATURE_SUFFIX.removeprefix(REQUEST_SUFFIX)
    stamp = now.strftime("%Y%m%dT%H%M%S")
    gateway = root.gateway_key()
    with (
        Folder.open(root.path, QUARANTINE, agency.id, create=True) as quarantine,
        quarantine.sub(REQUESTS, create=True) as aside,
    ):
        for kept in (name, signature_name):
            try:
                data = folder.read(kept, max(MAX_REQUEST_BYTES, MAX_SIGNATURE_BYTES))
            except InputFileError:
                data = None  # a link or something odd: removed, never followed
            if data is None:
                continue
            target = f"{stamp}-{kept}.gpg"
            with aside.new_file(target) as sealed:
                root.keyring.encrypt(
                    (data,), sealed, recipients=[gateway], signer=gateway, literal_name=f"{stamp}-{kept}",
                    purpose=Purpose.QUARANTINE,
                )  # fmt: skip
            root.journal.quarantined(f"{agency.id}/{REQUESTS}/{target}", agency.id, f"request:{name}", str(gateway))
    folder.remove(signature_name)
    folder.remove(name)
    text = (
        f"{shown(name)}: REQUEST REFUSED ({now:%Y-%m-%d %H:%M} UTC): {reason}.\n\n"
        "Nothing was registered; the request is kept encrypted in quarantine. Make it with\n"
        "`iom-gateway request new`, or sign exactly the JSON it describes as an active DO/PDO of this agency\n"
        "(gpg --detach-sign NAME.json) and drop NAME.json.sig first, then NAME.json.\n"
    )
    report: Path | None = folder.path / (name + REJECTED_SUFFIX)
    try:
        folder.write(name + REJECTED_SUFFIX, text.encode(), group=group_id(agency.unix_group))
    except OSError as exc:
        log.error("no report agency=%s file=%r: %s", agency.id, name, exc)
        report = None
    folder.sync()
    root.audit.append("request.rejected", actor="gateway", agency=agency.id, file=shown(name))
    log.error("refused request agency=%s file=%r: %s", agency.id, name, reason)
    return Dropped(agency.id, name, reason=reason, report=report)
