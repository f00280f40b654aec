"""Receipts uploaded into `outbox/<agency>/receipts/`: the running daemon records a good one (`package.received`,
the disclosure register's "received by"), refuses a forged one with a report and sets it aside, and `status`
and `purge` act on what was (not) received. Receipts are made here as an officer's machine makes them: the
canonical JSON of gateway.core.receipt, signed by the officer's own key with the real `gpg`."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.core.receipt import Receipt
from gateway.state.root import Root
from tests.integration.daemon_harness import (
    GOOD,
    Daemon,
    audit_entries,
    cli,
    cli_output,
    drop,
    home,
    packages,
    wait_until,
)
from tests.integration.gpg_helpers import gpg


def deliver(root: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Police's October file, delivered to probation and housing; the package id."""
    drop(root, "police", GOOD, GOOD.name, "police-do")
    code, out = cli_output(root, capsys, "run", "--once")
    assert code == 0 and "delivered police/" in out, out
    return packages(root, "probation")[0].name.removesuffix(".csv.gpg")


def manifest(root: Path, agency: str, package: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((root / "inbox" / agency / f"{package}.manifest.json").read_text())
    return loaded


def receipt_for(
    root: Path, package: str, agency: str = "probation", officer: str = "probation-do", **changes: str
) -> Receipt:
    """The receipt `officer` would sign for `package` as delivered to `agency` (fields overridden by `changes`)."""
    fields = manifest(root, agency, package)
    registered = Root.open(root).registry.get(officer)
    values = {
        "package": package,
        "agency": agency,
        "payload_sha256": str(fields["payload_sha256"]),
        "plaintext_sha256": str(fields["plaintext_sha256"]),
        "officer": officer,
        "fingerprint": registered.fingerprint,
        "received": datetime(2026, 11, 3, 9, 15, tzinfo=UTC).isoformat(),
    } | changes
    return Receipt(**values)  # type: ignore[arg-type]


def upload(
    root: Path, receipt: Receipt, *, signer: str, agency: str = "probation", signed: bytes | None = None
) -> Path:
    """Put the receipt and `signer`'s detached signature over `signed` (default: its own bytes) into the
    agency's receipts folder: signature first, each by rename, as an SFTP client's rename would."""
    folder = root / "outbox" / agency / "receipts"
    staging = root.parent / "receipt-staging"
    staging.mkdir(exist_ok=True)
    name = f"{receipt.package}.receipt.json"
    (staging / name).write_bytes(receipt.to_bytes())
    (staging / "signed").write_bytes(signed if signed is not None else receipt.to_bytes())
    gpg(home(root, signer), "--yes", "--output", str(staging / f"{name}.sig"), "--detach-sign", str(staging / "signed"))
    os.replace(staging / f"{name}.sig", folder / f"{name}.sig")
    os.replace(staging / name, folder / name)
    return folder / name


def events(root: Path, name: str) -> list[dict[str, object]]:
    return [e for e in audit_entries(root) if e["event"] == name]


@pytest.mark.slow
def test_the_running_daemon_records_a_receipt_and_the_register_shows_who_received_it(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = deliver(routed_root, capsys)
    assert (routed_root / "outbox" / "probation" / "receipts").is_dir(), "the gateway makes the receipts folder"
    daemon = Daemon(routed_root).ready()
    try:
        uploaded = upload(routed_root, receipt_for(routed_root, package), signer="probation-do")
        wait_until(lambda: bool(events(routed_root, "package.received")), 30, "package.received")
    finally:
        assert daemon.stop() == 0, daemon.text()
    [received] = events(routed_root, "package.received")
    assert (received["agency"], received["package"], received["officer"]) == ("probation", package, "probation-do")
    assert not uploaded.exists() and not Path(str(uploaded) + ".sig").exists(), "the receipt was left behind"
    code, out = cli_output(routed_root, capsys, "audit", "report", "--month", "2026-10", "--format", "json")
    rows = {row["to_agency"]: row for row in json.loads(out)}
    assert code == 0
    assert (rows["probation"]["received_by"], rows["probation"]["received_at"]) == (
        "probation-do",
        "2026-11-03T09:15:00+00:00",
    )
    assert rows["housing"]["received_by"] == ""

    upload(routed_root, receipt_for(routed_root, package), signer="probation-do")  # the same again: once only
    code, out = cli_output(routed_root, capsys, "run", "--once")
    assert code == 0 and f"received  probation/{package} by probation-do" in out
    assert len(events(routed_root, "package.received")) == 1


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("another agency's officer", "is not the key of an active officer of probation"),
        ("a wrong plaintext hash", "its plaintext SHA-256 is not that of the file delivered"),
        ("a wrong payload hash", "its payload SHA-256 is not that of the package delivered"),
        ("a signature over other bytes", "its signature does not verify"),
        ("a package never delivered there", "the gateway delivered no package"),
        ("an edited receipt", "not in canonical form"),
    ],
)
def test_a_forged_receipt_is_refused_with_a_report_and_set_aside(
    routed_root: Path, capsys: pytest.CaptureFixture[str], case: str, named: str
) -> None:
    package = deliver(routed_root, capsys)
    receipt = receipt_for(routed_root, package)
    signer, signed = "probation-do", None
    if case == "another agency's officer":  # a police officer's good signature on probation's receipt
        receipt, signer = receipt_for(routed_root, package, officer="police-do"), "police-do"
    elif case == "a wrong plaintext hash":
        receipt = receipt_for(routed_root, package, plaintext_sha256="0" * 64)
    elif case == "a wrong payload hash":
        receipt = receipt_for(routed_root, package, payload_sha256="0" * 64)
    elif case == "a signature over other bytes":
        signed = b"something else\n"
    elif case == "a package never delivered there":
        receipt = Receipt(**{**asdict(receipt), "package": "PROTECT-PERSONAL__police__2026-10__000000000000000000"})
    path = upload(routed_root, receipt, signer=signer, signed=signed)
    if case == "an edited receipt":
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    code, out = cli_output(routed_root, capsys, "run", "--once")
    assert code == 1 and f"rejected  probation/{path.name} at receipt" in out, out
    assert not path.exists() and not Path(str(path) + ".sig").exists()
    report = routed_root / "outbox" / "probation" / "rejected" / f"{path.name}.report.txt"
    assert "RECEIPT REFUSED" in report.read_text() and named in report.read_text(), report.read_text()
    aside = list((routed_root / "quarantine" / "probation" / "receipts").iterdir())
    assert len(aside) == 2 and any(p.name.endswith(path.name) for p in aside)
    assert events(routed_root, "package.received") == []
    [refused] = events(routed_root, "receipt.refused")
    assert refused["agency"] == "probation" and named in str(refused["reason"])


def test_status_names_a_package_nobody_receipted_and_purge_deletes_a_receipted_one_when_asked(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    package = deliver(routed_root, capsys)
    toml = routed_root / "gateway.toml"
    toml.write_text(re.sub(r"(?m)^receipt_days = 5", "receipt_days = 1", toml.read_text()))
    code, out = cli_output(routed_root, capsys, "status", "--json")
    assert json.loads(out)["unreceipted"] == [], "a package delivered just now is not yet late"
    toml.write_text(re.sub(r"(?m)^delete_after_receipt = false", "delete_after_receipt = true", toml.read_text()))
    with Root.open(routed_root) as root:  # delivered two days ago
        root.db.execute("UPDATE deliveries SET created = '2026-01-01T00:00:00+00:00'")
    code, out = cli_output(routed_root, capsys, "status")
    assert (
        code == 1 and f"probation has not receipted {package}" in out and f"housing has not receipted {package}" in out
    )
    upload(routed_root, receipt_for(routed_root, package), signer="probation-do")
    assert cli(routed_root, "run", "--once") == 0
    code, out = cli_output(routed_root, capsys, "status", "--json")
    late = {(u["agency"], u["package"]) for u in json.loads(out)["unreceipted"]}
    assert late == {("housing", package)}
    code, out = cli_output(routed_root, capsys, "purge", "--json")
    assert code == 0, out
    assert not list((routed_root / "inbox" / "probation").glob(f"{package}*")), "the receipted package is still there"
    assert list((routed_root / "inbox" / "housing").glob(f"{package}*")), "purge deleted a package nobody receipted"
    shutil.rmtree(routed_root.parent / "receipt-staging", ignore_errors=True)
