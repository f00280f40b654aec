"""Oversight end to end: audit verify/show/report, purge and status on real roots after real exchanges."""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.admin.oversight import status
from gateway.admin.retention import purge
from gateway.state.audit import canonical
from gateway.state.disclosure import HEADER
from gateway.state.root import Root
from tests.integration.daemon_harness import (
    GOOD,
    INVALID,
    SAMPLES,
    audit_entries,
    cli,
    copy_of,
    drop,
    make_template,
    remove_root,
)
from tests.integration.gpg_helpers import gpg, new_officer, stop_agent

SURNAMES = ["Ashcroft", "O'Connell", "Smith-Jones", "Chaudhry", "Adeyemi", "Whitfield", "Mistry", "Byrne"]
BAD_HEADER = SAMPLES / "yos-bad-header-2026-10.csv"
NEW_PASSWORD = "Str0ng!Passw0rd-For-Test"
PAST = "2000-01-01T00:00:00+00:00"
DAY = 86400


@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    """A demo root where police routes to probation (OpenPGP) and housing (AES-ZIP)."""
    path = make_template()
    yield path
    remove_root(path)


@pytest.fixture(scope="module")
def exchanged(template: Path) -> Iterator[Path]:
    """The template after one real exchange: police-do's good file delivered by `run --once`."""
    with copy_of(template) as path:
        drop(path, "police", GOOD, GOOD.name, "police-do")
        assert cli(path, "run", "--once") == 0
        yield path


@pytest.fixture
def root(template: Path) -> Iterator[Path]:
    with copy_of(template) as path:
        yield path
        _stop_extra_agents(path)


@pytest.fixture
def after_run(exchanged: Path) -> Iterator[Path]:
    with copy_of(exchanged) as path:
        yield path


def _stop_extra_agents(root: Path) -> None:
    """Stop the agents of GnuPG homes a test made beside the root (the harness stops the root's own)."""
    for extra in root.parent.iterdir():
        if extra.is_dir() and extra.name.startswith("home-"):
            stop_agent(extra)


def _run(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run one command on `root`; return its exit status and what it printed."""
    capsys.readouterr()
    code = cli(root, *args)
    return code, _out(capsys)


def _out(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.out


def _json(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> object:
    code, out = _run(root, capsys, *args, "--json")
    data = json.loads(out)
    if args[:1] == ("status",):  # status exits 1 while something needs the admin
        assert code == (1 if data["attention"] else 0)
    else:
        assert code == 0
    return data


def _this_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def _lines(root: Path) -> list[bytes]:
    return (root / "state" / "audit.jsonl").read_bytes().splitlines(keepends=True)


def _write_lines(root: Path, lines: list[bytes]) -> None:
    (root / "state" / "audit.jsonl").write_bytes(b"".join(lines))


def _set_toml(root: Path, key: str, value: int) -> None:
    toml = root / "gateway.toml"
    text, count = re.subn(rf"(?m)^{key} = [0-9]+", f"{key} = {value}", toml.read_text())
    assert count == 1, key
    toml.write_text(text)


def _variant(number: int) -> bytes:
    """A valid police file with other bytes (identical bytes would be a duplicate)."""
    return GOOD.read_bytes().replace(
        b"Attends weekly appointments", f"Attends weekly appointments ({number})".encode(), 1
    )


def _expire(root: Path, recipient: str, package: str) -> None:
    # Test set-up reaches into the journal (state/gateway.db): expiry is fixed when a package is
    # sealed, so the only honest way to have an expired package today is to move its expiry back.
    with sqlite3.connect(root / "state" / "gateway.db") as db:
        changed = db.execute(
            "UPDATE deliveries SET expires = ? WHERE recipient = ? AND package = ?", (PAST, recipient, package)
        ).rowcount
    db.close()
    assert changed == 1


def _age(paths: list[Path], days: int) -> None:
    moment = time.time() - days * DAY
    for path in paths:
        os.utime(path, (moment, moment))


def _package_files(root: Path, agency: str) -> list[Path]:
    return sorted(p for p in (root / "inbox" / agency).iterdir() if not p.name.startswith("."))


def _base(root: Path, agency: str) -> str:
    names = {p.name.split(".")[0] for p in _package_files(root, agency)}
    assert len(names) == 1, names
    return names.pop()


def _password_file(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    return path


def _vault_ids(root: Path, agency: str = "housing") -> dict[str, str]:
    return {r.id: r.status for r in Root.open(root).vault.records() if r.agency == agency}


def _rotate(root: Path) -> None:
    new = _password_file(root.parent, "new-password", NEW_PASSWORD)
    assert cli(root, "keys", "import", "--agency", "housing", "--password-file", str(new)) == 0


def _tree(root: Path, *folders: str) -> set[str]:
    return {str(p.relative_to(root)) for f in folders for p in (root / f).rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------------------- audit verify


def test_audit_verify_says_intact_after_a_real_exchange(after_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(after_run, capsys, "audit", "verify")
    assert code == 0
    assert "intact" in out and f"last entry {len(_lines(after_run))}" in out


def _edit(lines: list[bytes], index: int) -> None:
    entry = json.loads(lines[index])
    entry["actor"] = "someone-else"  # still canonical: only the chain can tell
    lines[index] = canonical(entry) + b"\n"


@pytest.mark.parametrize("tamper", ["edit", "delete", "insert", "swap"])
def test_audit_verify_names_the_first_broken_entry(
    after_run: Path, capsys: pytest.CaptureFixture[str], tamper: str
) -> None:
    lines = _lines(after_run)
    index = len(lines) // 2
    seq = index + 1  # entries are numbered from 1, one a line
    assert json.loads(lines[index])["seq"] == seq and index + 1 < len(lines)
    if tamper == "edit":
        _edit(lines, index)
        expected = f"entry {seq + 1} (line {seq + 1}): prev is not the SHA-256 of entry {seq}"
    elif tamper == "delete":
        del lines[index]
        expected = f"entry {seq + 1} (line {seq}): expected entry {seq} after entry {seq - 1}"
    elif tamper == "insert":
        lines.insert(index + 1, lines[index - 3])
        expected = f"entry {seq - 3} (line {seq + 1}): expected entry {seq + 1} after entry {seq}"
    else:
        lines[index], lines[index + 1] = lines[index + 1], lines[index]
        expected = f"entry {seq + 1} (line {seq}): expected entry {seq} after entry {seq - 1}"
    _write_lines(after_run, lines)
    code, out = _run(after_run, capsys, "audit", "verify")
    assert code == 1
    assert "BROKEN" in out and expected in out, out


def test_audit_verify_json_reports_the_failed_step(after_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = _lines(after_run)
    _edit(lines, len(lines) // 2)
    _write_lines(after_run, lines)
    code, out = _run(after_run, capsys, "audit", "verify", "--json")
    assert code == 1
    verdict = json.loads(out)
    assert verdict["ok"] is False and verdict["step"] == 3
    assert f"entry {len(lines) // 2 + 2}" in verdict["problem"]


def test_every_command_that_appends_to_the_log_ends_it_with_a_signed_checkpoint(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, *_, last = audit_entries(root)
    assert first["event"] == "audit.genesis" and first["seq"] == 1 and last["event"] == "audit.checkpoint"  # init
    secret = root.parent / "housing-password"
    assert cli(root, "keys", "export", "--agency", "housing", "--password", "--to", str(secret)) == 0
    assert [e["event"] for e in audit_entries(root)[-2:]] == ["password.exported", "audit.checkpoint"]
    assert cli(root, "submit", str(GOOD), "--agency", "police", "--officer", "police-do") == 0
    assert [e["event"] for e in audit_entries(root)[-2:]] == ["submission.submitted", "audit.checkpoint"]
    assert cli(root, "run", "--once") == 0
    assert [e["event"] for e in audit_entries(root)[-2:]] == ["submission.delivered", "audit.checkpoint"]
    count = len(audit_entries(root))
    for read_only in (["audit", "verify"], ["audit", "show"], ["status"], ["run", "--once"]):
        assert cli(root, *read_only) == 0
    assert len(audit_entries(root)) == count  # nothing appended, nothing to sign


def test_every_manifest_witnesses_the_log_as_it_was_when_it_was_sealed(
    after_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _lines(after_run)
    manifests = sorted((after_run / "inbox").rglob("*.manifest.json"))
    assert [m.parent.name for m in manifests] == ["housing", "probation"]
    for manifest in manifests:
        stamp = json.loads(manifest.read_bytes())["audit"]
        assert hashlib.sha256(lines[stamp["seq"] - 1].rstrip(b"\n")).hexdigest() == stamp["head"]
        delivered = [json.loads(line) for line in lines[stamp["seq"] :]]
        assert any(e["event"] == "package.delivered" and e["agency"] == manifest.parent.name for e in delivered)
    code, out = _run(after_run, capsys, "audit", "verify")
    assert code == 0 and out.endswith("; 2 manifest(s) witness it\n"), out


def test_verify_witness_counts_a_recipients_copy_and_only_what_the_gateway_signed(
    after_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = after_run.parent / "probation-copy"
    shutil.copytree(after_run / "inbox" / "probation", copy)
    stray = copy / "unsigned.manifest.json"
    stray.write_bytes(next(copy.glob("PROTECT*.manifest.json")).read_bytes())
    code, out = _run(after_run, capsys, "audit", "verify", "--witness", str(copy))
    assert code == 0, out
    assert f"not a witness: {str(stray)!r}: 'unsigned.manifest.json.sig' is missing or not a regular file" in out
    assert "; 3 manifest(s) witness it" in out
    verdict = _json(after_run, capsys, "audit", "verify", "--witness", str(copy))
    assert isinstance(verdict, dict) and verdict["ok"] is True and verdict["witnesses"] == 3
    assert verdict["ignored_manifests"] == [
        {"file": str(stray), "why": "'unsigned.manifest.json.sig' is missing or not a regular file"}
    ]
    capsys.readouterr()
    assert cli(after_run, "audit", "verify", "--witness", str(after_run.parent / "nowhere")) == 2
    assert "is not a folder: name the folder the manifests were copied to" in capsys.readouterr().err


def test_checkpoint_entries_makes_run_once_sign_every_few_entries(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _set_toml(root, "checkpoint_entries", 2)
    before = len(audit_entries(root))  # init ended with a checkpoint
    drop(root, "police", GOOD, GOOD.name, "police-do")
    assert cli(root, "run", "--once") == 0
    events = [e["event"] for e in audit_entries(root)[before:]]
    assert events == [
        "package.delivered",
        "package.delivered",
        "audit.checkpoint",
        "submission.delivered",
        "audit.checkpoint",
    ]
    assert cli(root, "audit", "verify") == 0


# ----------------------------------------------------------------------------------------- audit show


def test_audit_show_filters_by_event_and_day_and_never_shows_a_cell(
    after_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    everything = _json(after_run, capsys, "audit", "show")
    assert isinstance(everything, list) and len(everything) == len(_lines(after_run))
    packages = _json(after_run, capsys, "audit", "show", "--event", "package")
    assert isinstance(packages, list)
    assert sorted((e["event"], e["agency"]) for e in packages) == [
        ("package.delivered", "housing"),
        ("package.delivered", "probation"),
    ]
    code, out = _run(after_run, capsys, "audit", "show", "--event", "package")
    assert code == 0
    listed = out.splitlines()
    assert len(listed) == 2 and all(line.split()[2] == "package.delivered" for line in listed)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    code, out = _run(after_run, capsys, "audit", "show", "--since", tomorrow)
    assert code == 0
    assert out == ""
    assert _json(after_run, capsys, "audit", "show", "--since", tomorrow) == []
    code, out = _run(after_run, capsys, "audit", "show")
    assert code == 0 and len(out.splitlines()) == len(everything)
    shown = out + json.dumps(everything, ensure_ascii=False)
    state = b"".join(p.read_bytes() for p in (after_run / "state").rglob("*") if p.is_file())
    for surname in SURNAMES:
        assert surname not in shown
        assert surname.encode() not in state  # audit.jsonl, the journal and everything else in state/


def test_audit_show_refuses_a_malformed_day(after_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(after_run, "audit", "show", "--since", "yesterday") == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- audit report


def test_audit_report_is_the_disclosure_register_of_the_month(
    after_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = Root.open(after_run).config
    manifest = json.loads(next((after_run / "inbox" / "probation").glob("*.manifest.json")).read_text())
    code, text = _run(after_run, capsys, "audit", "report", "--month", "2026-10")  # GOOD's data period
    assert code == 0
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == HEADER
    register = [dict(zip(HEADER, row, strict=True)) for row in rows[1:]]
    assert sorted(r["to_agency"] for r in register) == ["housing", "probation"]
    for row in register:
        assert row["from_agency"] == "police" and row["officer"] == "police-do"
        assert row["marking"] == "PROTECT - PERSONAL" and row["rows"] == "7"
        assert row["columns"] == "; ".join(manifest["columns"])
        assert row["purpose"] == config.purpose and row["legal_basis"] == config.legal_basis
        assert row["period"] == "2026-10" and row["date"].startswith(_this_month() + "-")  # delivered now
    assert {r["method"] for r in register} == {"gpg", "aes-zip"}

    code, page = _run(after_run, capsys, "audit", "report", "--month", "2026-10", "--format", "html")
    assert code == 0
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count("<tr><td>") == 2 and "2 disclosures, 14 rows" in page
    for value in ("police-do", "PROTECT - PERSONAL", "probation", "housing", config.purpose, config.legal_basis):
        assert html.escape(value) in page

    code, out = _run(after_run, capsys, "audit", "report", "--month", "2001-01")
    assert code == 0
    assert out == ",".join(HEADER) + "\r\n"

    target = after_run.parent / "register.csv"
    code, out = _run(after_run, capsys, "audit", "report", "--month", "2026-10", "--to", str(target))
    assert code == 0
    assert str(target) in out
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.read_bytes() == text.encode()


@pytest.mark.parametrize("where", ["missing folder", "a folder"])
def test_audit_report_to_a_path_it_cannot_write_is_a_usage_error(
    after_run: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    target = after_run.parent / "nowhere" / "register.csv" if where == "missing folder" else after_run.parent
    assert cli(after_run, "audit", "report", "--month", _this_month(), "--to", str(target)) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and f"cannot write the register to {str(target)!r}" in captured.err
    assert not list(after_run.parent.glob(".*.tmp"))


# ----------------------------------------------------------------------------------------- register on the log


def test_officer_register_changes_are_on_the_audit_log(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _json(root, capsys, "audit", "show", "--event", "officer")
    assert isinstance(before, list) and {e["event"] for e in before} == {"officer.added"}
    assert cli(root, "officers", "revoke", "police-pdo") == 0
    home = root.parent / "home-new"
    fingerprint = new_officer(home, "New Council Officer", "new@council.invalid")
    key = root.parent / "new.asc"
    key.write_bytes(gpg(home, "--armor", "--export", fingerprint).stdout)
    args = ["--agency", "council", "--role", "DO", "--name", "New Council Officer", "--email", "new@council.invalid"]
    assert cli(root, "officers", "add", *args, "--key", str(key), "--id", "council-new") == 0
    after = _json(root, capsys, "audit", "show", "--event", "officer")
    assert isinstance(after, list) and after[: len(before)] == before
    added = after[len(before) :]
    assert [(e["event"], e["agency"], e["officer"]) for e in added] == [
        ("officer.revoked", "police", "police-pdo"),
        ("officer.added", "council", "council-new"),
    ]
    assert added[1]["fingerprint"] == fingerprint and added[0]["actor"] == added[1]["actor"] == "admin"
    assert cli(root, "audit", "verify") == 0


# ----------------------------------------------------------------------------------------- purge


@dataclass(frozen=True)
class _Rotated:
    old_password: Path  # the file housing's PDO was given before the rotation
    old_id: str
    new_id: str


def _deliver_and_rotate(root: Path, *, rejected: bool = False) -> _Rotated:
    """Deliver police's file (housing's package sealed with its first password), then rotate that password."""
    drop(root, "police", GOOD, GOOD.name, "police-do")
    if rejected:
        drop(root, "probation", INVALID, INVALID.name, "probation-do")
        drop(root, "yos", BAD_HEADER, BAD_HEADER.name, "yos-do")
    assert cli(root, "run", "--once") == (1 if rejected else 0)
    old_password = root.parent / "old-password"
    assert cli(root, "keys", "export", "--agency", "housing", "--password", "--to", str(old_password)) == 0
    (old_id,) = _vault_ids(root)
    _rotate(root)
    ids = _vault_ids(root)
    new_id = next(i for i, status in ids.items() if status == "current")
    assert ids == {old_id: "retired", new_id: "current"}
    return _Rotated(old_password, old_id, new_id)


def test_purge_keeps_an_old_password_while_a_package_sealed_with_it_lives(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rotated = _deliver_and_rotate(root)
    housing = _base(root, "housing")
    code, out = _run(root, capsys, "purge")
    assert code == 0 and out.startswith("deleted: 0 expired package(s), 0 password(s), ")
    assert _vault_ids(root) == {rotated.old_id: "retired", rotated.new_id: "current"}
    pulled = root.parent / "pulled"
    pulled.mkdir()
    password = ["--password-file", str(rotated.old_password)]
    assert cli(root, "pull", "--agency", "housing", "--to", str(pulled), "--raw", *password) == 0
    assert (pulled / f"{housing}.csv").read_bytes() == GOOD.read_bytes()
    extracted = root.parent / "7z"
    secret = rotated.old_password.read_text().strip()
    seven = subprocess.run(
        ["7z", "x", f"-p{secret}", f"-o{extracted}", "-y", str(root / "inbox" / "housing" / f"{housing}.zip")],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert seven.returncode == 0 and (extracted / f"{housing}.csv").read_bytes() == GOOD.read_bytes()


def test_purge_dry_run_lists_what_expired_and_deletes_nothing(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rotated = _deliver_and_rotate(root, rejected=True)
    housing = _base(root, "housing")
    _expire(root, "housing", housing)
    old = _old_rejections(root)
    files = _tree(root, "inbox", "quarantine", "outbox")
    vault = (root / "keys" / "vault.json").read_bytes()
    log = _lines(root)
    planned = _json(root, capsys, "purge", "--dry-run")
    assert isinstance(planned, dict) and planned["dry_run"] is True
    assert planned["packages"] == [f"housing/{housing}"] and planned["passwords"] == [rotated.old_id]
    assert planned["quarantined"] == [str(p.relative_to(root)) for p in old if "quarantine" in p.parts]
    assert planned["reports"] == [str(p.relative_to(root)) for p in old if "outbox" in p.parts]
    assert planned["audit_entries"] == 0
    code, out = _run(root, capsys, "purge", "--dry-run")
    assert code == 0
    assert out.startswith("would delete: 1 expired package(s), 1 password(s), ")
    assert f"  housing/{housing}\n" in out and f"  {rotated.old_id}\n" in out
    assert _tree(root, "inbox", "quarantine", "outbox") == files
    assert (root / "keys" / "vault.json").read_bytes() == vault and _lines(root) == log


def test_purge_deletes_only_what_expired_and_the_password_only_it_needed(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rotated = _deliver_and_rotate(root, rejected=True)
    housing, probation = _base(root, "housing"), _base(root, "probation")
    _expire(root, "housing", housing)
    old = _old_rejections(root)
    young = [*(root / "quarantine" / "yos").iterdir(), *(root / "outbox" / "yos" / "rejected").glob("*.report.*")]
    assert len(young) >= 3
    _age(young, days=29)
    code, out = _run(root, capsys, "purge")
    assert code == 0 and out.startswith("deleted: 1 expired package(s), 1 password(s), ")
    assert _package_files(root, "housing") == []
    assert [p.name for p in _package_files(root, "probation")] == [
        f"{probation}.csv.gpg",
        f"{probation}.manifest.json",
        f"{probation}.manifest.json.sig",
    ]
    assert not any(p.exists() for p in old) and all(p.exists() for p in young)
    assert _vault_ids(root) == {rotated.new_id: "current"}
    assert list(_vault_ids(root, "treatment").values()) == ["current"]
    *_, last, closing = audit_entries(root)
    assert closing["event"] == "audit.checkpoint"  # every command that appends ends with a signed checkpoint
    assert last["event"] == "retention.purged" and last["actor"] == "admin"
    assert (last["packages"], last["password_ids"], last["audit_entries"]) == (1, [rotated.old_id], 0)
    quarantined = sum("quarantine" in p.parts for p in old)
    assert (last["quarantined"], last["reports"]) == (quarantined, len(old) - quarantined)
    assert cli(root, "audit", "verify") == 0
    again = _json(root, capsys, "purge", "--dry-run")
    assert isinstance(again, dict) and not (again["packages"] or again["passwords"] or again["quarantined"])


def _old_rejections(root: Path) -> list[Path]:
    """probation's quarantined submission and its reports, aged past the 30 days' retention."""
    quarantined = sorted((root / "quarantine" / "probation").iterdir())
    reports = sorted((root / "outbox" / "probation" / "rejected").glob("*.report.*"))
    assert quarantined and [p.name.split(".report.")[1] for p in reports] == ["json", "txt"]
    _age([*quarantined, *reports], days=31)
    return [*quarantined, *reports]


def test_purge_keeps_a_password_a_live_package_still_needs_and_dry_run_says_so(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drop(root, "police", _variant(1), "police-a-2026-10.csv", "police-do")
    drop(root, "police", _variant(2), "police-b-2026-10.csv", "police-do")
    assert cli(root, "run", "--once") == 0
    old_password = root.parent / "old-password"
    assert cli(root, "keys", "export", "--agency", "housing", "--password", "--to", str(old_password)) == 0
    (old_id,) = _vault_ids(root)
    _rotate(root)
    first, second = sorted({p.name.split(".")[0] for p in _package_files(root, "housing")})
    _expire(root, "housing", first)
    planned = _json(root, capsys, "purge", "--dry-run")
    assert isinstance(planned, dict) and planned["packages"] == [f"housing/{first}"]
    assert planned["passwords"] == []  # the other package was sealed with it too
    done = _json(root, capsys, "purge")
    assert isinstance(done, dict) and done["packages"] == [f"housing/{first}"] and done["passwords"] == []
    left = _vault_ids(root)
    assert left[old_id] == "retired" and sorted(left.values()) == ["current", "retired"]
    pulled = root.parent / "pulled"
    pulled.mkdir()
    password = ["--password-file", str(old_password)]
    assert cli(root, "pull", "--agency", "housing", "--to", str(pulled), "--raw", *password) == 0
    assert sorted(p.name for p in pulled.iterdir()) == [f"{second}.csv", f"{second}.marking.txt"]


def test_purge_removes_audit_entries_past_retention_behind_a_signed_anchor(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _set_toml(root, "audit_days", 365)
    total = len(_lines(root))
    result = purge(Root.open(root), datetime.now(UTC) + timedelta(days=400), dry_run=False)
    assert result.audit_entries == total - 1  # all but the last: the log never empties
    assert (root / "state" / "audit.anchor").exists()
    entries = audit_entries(root)
    assert entries[0]["seq"] == total > 1
    assert [e["event"] for e in entries[1:]] == ["audit.purged", "retention.purged"]
    assert entries[-1]["audit_entries"] == total - 1
    code, out = _run(root, capsys, "audit", "verify")
    assert code == 0
    assert "intact" in out


# ----------------------------------------------------------------------------------------- status


def test_status_of_a_gateway_that_never_ran(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    health = _json(root, capsys, "status")
    assert isinstance(health, dict) and health["last_run"] is None
    assert any("the gateway has never run" in line for line in health["attention"])
    code, out = _run(root, capsys, "status")
    assert code == 1  # something needs the admin: start it
    assert "last run:      never" in out and "  - the gateway has never run" in out


def _busy_month(root: Path) -> str:
    """One good police file for this month delivered and one probation file refused by `run --once`,
    then another police file dropped and not yet processed; return this month (YYYY-MM)."""
    month = datetime.now(UTC).strftime("%Y-%m")
    drop(root, "police", GOOD, f"police-{month}.csv", "police-do")  # data for the current month
    drop(root, "probation", INVALID, INVALID.name, "probation-do")
    assert cli(root, "run", "--once") == 1
    drop(root, "police", _variant(3), f"police-again-{month}.csv", "police-do")
    return month


def test_status_shows_queues_runs_refusals_late_agencies_and_expiring_keys(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _set_toml(root, "due_day", 1)
    month = _busy_month(root)
    home = root.parent / "home-short"
    fingerprint = new_officer(home, "Short Lived", "short@police.invalid", expire="10d")
    key = root.parent / "short.asc"
    key.write_bytes(gpg(home, "--armor", "--export", fingerprint).stdout)
    args = ["--agency", "police", "--role", "DO", "--name", "Short Lived", "--email", "short@police.invalid"]
    assert cli(root, "officers", "add", *args, "--key", str(key), "--id", "police-short") == 0

    health = _json(root, capsys, "status")
    assert isinstance(health, dict)
    run = health["last_run"]
    assert isinstance(run, dict) and run["mode"] == "once" and run["finished"]
    assert (run["processed"], run["errors"]) == (2, 1)
    assert health["inbox_unpulled"] == {a: int(a in ("probation", "housing")) for a in health["inbox_unpulled"]}
    assert health["outbox_waiting"] == {a: int(a == "police") for a in health["outbox_waiting"]}
    assert health["in_flight"] == 0
    assert health["errors_24h"] == {"rejected": 1, "abandoned": 0}
    assert health["period"] == month and health["due_day"] == 1
    (warning,) = health["keys"]
    assert warning["owner"] == "officer police-short (police)" and warning["fingerprint"] == fingerprint
    assert "expires in" in warning["problem"]
    assert any("police-short" in line and "expires in" in line for line in health["attention"])
    assert not any("never run" in line for line in health["attention"])

    code, out = _run(root, capsys, "status")
    assert code == 1  # a key near expiry, late agencies
    assert "last run:      once" in out and "2 processed, 1 refused" in out
    assert re.search(r"(?m)^police +1 +0$", out) and re.search(r"(?m)^probation +0 +1$", out)
    assert "  - officer police-short (police): key expires in" in out
    assert "note:          1 submission(s) refused in the last 24 h" in out

    # who is late depends on the day of the month: status is asked for days of the data's month, not the clock's
    mid_month = datetime.strptime(f"{month}-15 12:00", "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    everyone_but_police = ["council", "housing", "probation", "treatment", "yos"]
    with Root.open(root) as opened:
        assert status(opened, mid_month.replace(day=1)).late == []  # due_day 1: nobody is late on the 1st
        late = status(opened, mid_month)
    assert late.late == everyone_but_police and late.period == month
    assert f"probation has not submitted for {month} (due by day 1)" in late.attention
    _set_toml(root, "due_day", 15)
    with Root.open(root) as opened:
        assert status(opened, mid_month).late == []  # on the due day itself nobody is late yet
        assert status(opened, mid_month + timedelta(days=1)).late == everyone_but_police


def test_status_counts_unpulled_packages_per_recipient(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _busy_month(root)
    before = _json(root, capsys, "status")
    assert isinstance(before, dict)
    assert (before["inbox_unpulled"]["probation"], before["inbox_unpulled"]["housing"]) == (1, 1)
    pulled = root.parent / "pulled"
    pulled.mkdir()
    assert cli(root, "pull", "--agency", "probation", "--to", str(pulled), "--officer", "probation-do") == 0
    after = _json(root, capsys, "status")
    assert isinstance(after, dict) and after["inbox_unpulled"]["probation"] == 0
    assert after["inbox_unpulled"]["housing"] == 1
