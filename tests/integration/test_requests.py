"""Information requests between Designated Officers (Warwickshire 2.3.3.1-2.3.3.3, 2.4.2), with real gpg and
the demo officers' own GnuPG homes: a request answered with a submission (the manifest and the audit log link
them), one refused (its reason and purpose nowhere under the root in the clear), one overdue across a
bank-holiday weekend (its due date counted by hand), signed JSON dropped for a real daemon, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from gateway.admin.retention import purge
from gateway.core.request import Request, request_id
from gateway.governance.requests import receive
from gateway.state.requests import Requests
from gateway.state.root import Root
from tests.integration.daemon_harness import GOOD, Daemon, audit_entries, cli, cli_output, home, wait_until
from tests.integration.gpg_helpers import gpg, new_officer, stop_agent

PURPOSE = "ZQPURPOSE risk of harm to a named child at the Larkspur Road address"
GROUNDS = "Crime and Disorder Act 1998 s115: prevention of crime"
REASON = "ZQREASON disclosure would prejudice an ongoing investigation into the family"


def _new(root: Path, *extra: str, officer: str = "probation-do", to: str = "police") -> int:
    return cli(
        root, "request", "new", "--from-agency", "probation", "--officer", officer, "--to-agency", to,
        "--purpose", PURPOSE, "--grounds", GROUNDS, *extra,
    )  # fmt: skip


def _register(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    code, out = cli_output(root, capsys, "request", "list", "--json", *args)
    assert code == 0
    listed: list[dict[str, object]] = json.loads(out)
    return listed


def _requests(root: Path) -> list[dict[str, object]]:
    return [e for e in audit_entries(root) if str(e["event"]).startswith("request.")]


def _everything_under(root: Path) -> list[tuple[Path, bytes]]:
    return [
        (p, p.read_bytes()) for p in root.rglob("*") if p.is_file() and not p.is_symlink() and "S.gpg" not in p.name
    ]


def test_a_request_answered_with_a_submission_is_linked_in_manifest_audit_and_register(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    capsys.readouterr()
    assert _new(root, "--urgent", "meeting on Friday") == 0
    assert "due " in capsys.readouterr().out
    (listed,) = _register(root, capsys)
    ident = str(listed["id"])
    assert listed["status"] == "open" and listed["urgent"] is True and listed["from_officer"] == "probation-do"
    code, out = cli_output(
        root, capsys, "request", "answer", ident, "--officer", "police-do", "--with-submission", str(GOOD)
    )
    assert code == 0 and f"answering request {ident}" in out
    assert _register(root, capsys)[0]["status"] == "open"  # answered once the package reaches probation
    assert cli(root, "run", "--once") == 0
    (answered,) = _register(root, capsys)
    package = str(answered["package"])
    assert answered["status"] == "answered" and answered["answered_by"] == "police-do"
    assert package.endswith(str(answered["submission"])) and package.startswith("PROTECT-PERSONAL__police__")
    manifest = json.loads((root / "inbox" / "probation" / f"{package}.manifest.json").read_bytes())
    assert manifest["request"] == ident
    delivered = [e for e in audit_entries(root) if e["event"] == "package.delivered"]
    assert delivered and all(e["request"] == ident for e in delivered)
    events = {str(e["event"]): e for e in _requests(root)}
    assert events["request.answered"]["package"] == package and events["request.answered"]["request"] == ident
    assert events["request.received"]["due"] == listed["due"] and events["request.received"]["urgent"] is True
    code, text = cli_output(root, capsys, "request", "list")
    assert code == 0 and ident in text and "answered" in text and package in text
    code, text = cli_output(root, capsys, "audit", "report", "--month", "2026-10", "--json")
    assert {row["request"] for row in json.loads(text) if row["package"] == package} == {ident}  # the register
    capsys.readouterr()
    assert cli(root, "request", "answer", ident, "--officer", "police-do", "--refuse", "too late") == 1
    err = capsys.readouterr().err
    assert ident in err and "answered already" in err and "Traceback" not in err
    assert cli(root, "request", "answer", ident, "--officer", "police-do", "--with-submission", str(GOOD)) == 1
    assert "answered already" in capsys.readouterr().err


def test_a_refused_request_keeps_its_reason_and_purpose_only_encrypted(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    capsys.readouterr()
    assert cli(root, "-v", "request", "new", "--from-agency", "probation", "--officer", "probation-do",
               "--to-agency", "police", "--purpose", PURPOSE, "--grounds", GROUNDS) == 0  # fmt: skip
    (listed,) = _register(root, capsys)
    ident = str(listed["id"])
    assert cli(root, "-v", "request", "answer", ident, "--officer", "police-pdo", "--refuse", REASON) == 0
    printed = capsys.readouterr()
    assert REASON not in printed.out + printed.err and PURPOSE not in printed.out + printed.err  # nor a log line
    (refused,) = _register(root, capsys)
    assert refused["status"] == "refused" and refused["answered_by"] == "police-pdo"
    events = {str(e["event"]): e for e in _requests(root)}
    assert events["request.refused"]["officer"] == "police-pdo" and events["request.refused"]["request"] == ident
    for path, data in _everything_under(root):  # the journal, its WAL, the audit log, state/requests/, all
        for secret in (REASON, PURPOSE, GROUNDS):
            assert secret.encode() not in data, f"{secret[:8]} in the clear in {path}"
    stored = root / "state" / "requests"
    assert sorted(p.name for p in stored.iterdir()) == [f"{ident}.gpg", f"{ident}.refusal.gpg"]
    assert stored.stat().st_mode & 0o777 == 0o700 and all(p.stat().st_mode & 0o777 == 0o600 for p in stored.iterdir())
    code, shown = cli_output(root, capsys, "request", "show", ident)
    assert code == 0 and PURPOSE in shown and GROUNDS in shown and REASON in shown
    assert [e["request"] for e in audit_entries(root) if e["event"] == "request.shown"] == [ident]
    capsys.readouterr()
    assert cli(root, "request", "answer", ident, "--officer", "police-do", "--with-submission", str(GOOD)) == 1
    assert "refused already" in capsys.readouterr().err
    assert not list((root / "outbox" / "police").glob("*.csv"))  # nothing submitted


def test_a_request_due_across_a_bank_holiday_weekend_is_overdue_in_list_and_status(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    officer_home = root.parent / "home-aug"  # a probation DO whose key existed on 20 August 2026
    fingerprint = new_officer(officer_home, "August Officer", "aug@example.invalid", expire="never",
                              faked_time="20260801T000000")  # fmt: skip
    try:
        public = root.parent / "aug.asc"
        public.write_bytes(gpg(officer_home, "--armor", "--export", fingerprint).stdout)
        assert cli(root, "officers", "add", "--agency", "probation", "--role", "DO", "--name", "August Officer",
                   "--id", "probation-aug", "--email", "aug@example.invalid", "--key", str(public)) == 0  # fmt: skip
        request = Request("probation", "police", "probation-aug", PURPOSE, GROUNDS, None, None,
                          "2026-08-20T09:00:00+00:00")  # fmt: skip
        data = request.to_bytes()
        signature = gpg(officer_home, "--faked-system-time", "20260820T090000!", "--detach-sign", "--output", "-",
                        stdin=data).stdout  # fmt: skip
        with Root.open(root) as opened:
            # Thu 20 Aug 2026 is day 0: Fri 21 = 1, Mon 24 ... Fri 28 = 6, Mon 31 Aug (summer bank holiday)
            # skipped, Tue 1 Sep = 7, Wed 2 = 8, Thu 3 = 9, Fri 4 Sep = 10
            record = receive(opened, data, signature, agency="probation", now=datetime(2026, 8, 20, 9, 5, tzinfo=UTC))
        assert record.due == "2026-09-04" and record.id == request_id(data)
    finally:
        stop_agent(officer_home)
    late = (datetime.now(UTC).date() - date(2026, 9, 4)).days
    (listed,) = _register(root, capsys, "--open")
    assert listed["due"] == "2026-09-04" and listed["days_overdue"] == late > 0
    code, text = cli_output(root, capsys, "request", "list", "--agency", "police")
    assert code == 0 and f"OVERDUE {late} day(s)" in text
    code, text = cli_output(root, capsys, "status")
    assert code == 1 and f"request {record.id} from probation to police is OVERDUE by {late} day(s)" in text
    code, text = cli_output(root, capsys, "status", "--format", "prometheus")
    assert "iom_gateway_requests_overdue 1" in text and 'iom_gateway_requests_open{agency="police"} 1' in text
    assert _register(root, capsys, "--agency", "housing") == []


def _signed_drop(root: Path, name: str, officer: str, *, created: datetime, tamper: bool = False) -> None:
    request = Request("probation", "police", officer, PURPOSE, GROUNDS, None, None,
                      created.isoformat(timespec="seconds"))  # fmt: skip
    folder = root / "outbox" / "probation" / "requests"
    data = request.to_bytes()
    (folder / f"{name}.json.sig").write_bytes(
        gpg(home(root, officer), "--detach-sign", "--output", "-", stdin=data).stdout
    )
    (folder / f"{name}.json").write_bytes(data.replace(b"ZQPURPOSE", b"ZQPURPOSF") if tamper else data)


@pytest.mark.slow
def test_signed_json_dropped_into_requests_is_taken_by_the_daemon_and_bad_drops_are_refused_alone(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    folder = root / "outbox" / "probation" / "requests"
    assert folder.is_dir()  # init made it beside receipts/
    now = datetime.now(UTC)
    _signed_drop(root, "good", "probation-do", created=now)
    _signed_drop(root, "other-agency", "police-do", created=now)  # signed by another agency's officer
    _signed_drop(root, "tampered", "probation-pdo", created=now, tamper=True)
    (folder / "unsigned.json").write_bytes(b"{}")
    daemon = Daemon(root).ready()
    try:
        wait_until(lambda: not any(folder.glob("*.json")), 60, "every request taken or refused")
    finally:
        assert daemon.stop() == 0
    (listed,) = _register(root, capsys)
    assert listed["from_officer"] == "probation-do" and listed["status"] == "open"
    reports = {p.name: p.read_text() for p in folder.glob("*.rejected.txt")}
    assert set(reports) == {
        "other-agency.json.rejected.txt",
        "tampered.json.rejected.txt",
        "unsigned.json.rejected.txt",
    }
    assert "an officer of police" in reports["other-agency.json.rejected.txt"]
    assert "does not verify" in reports["tampered.json.rejected.txt"]
    assert "no signature" in reports["unsigned.json.rejected.txt"]
    aside = root / "quarantine" / "probation" / "requests"
    assert len(list(aside.glob("*.gpg"))) == 5  # two refused requests with their signatures, and the unsigned one
    for path, data in _everything_under(root):
        assert b"ZQPURPOS" not in data or path.parent == root / "staging", path
    assert PURPOSE not in daemon.text()
    rejected = [e for e in _requests(root) if e["event"] == "request.rejected"]
    assert sorted(str(e["file"]) for e in rejected) == ["other-agency.json", "tampered.json", "unsigned.json"]


# ----------------------------------------------------------------------------------------- bad input


def _nothing_stored(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _register(root, capsys) == []
    assert not (root / "state" / "requests").exists() or not any((root / "state" / "requests").iterdir())
    assert _requests(root) == []


def test_a_request_not_signed_by_a_current_officer_of_the_requesting_agency_is_refused_and_nothing_stored(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    capsys.readouterr()
    assert _new(root, officer="police-do", to="council") == 1  # another agency's officer
    assert "officer of police, not of probation" in capsys.readouterr().err
    stranger = root.parent / "home-stranger"
    new_officer(stranger, "Not Registered", "stranger@example.invalid")
    try:
        assert _new(root, "--gnupghome", str(stranger)) == 1  # a home without the officer's key: cannot sign as them
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.startswith("iom-gateway: ")
        request = Request("probation", "police", "probation-do", PURPOSE, GROUNDS, None, None,
                          datetime.now(UTC).isoformat(timespec="seconds"))  # fmt: skip
        data = request.to_bytes()
        unknown = gpg(stranger, "--detach-sign", "--output", "-", stdin=data).stdout
        good = gpg(home(root, "probation-do"), "--detach-sign", "--output", "-", stdin=data).stdout
        other = gpg(home(root, "police-do"), "--detach-sign", "--output", "-", stdin=data).stdout
        with Root.open(root) as opened:
            now = datetime.now(UTC)
            for signature, says in ((unknown, "not registered"), (other, "an officer of police")):
                with pytest.raises(Exception, match=says) as refused:
                    receive(opened, data, signature, agency="probation", now=now)
                assert getattr(refused.value, "exit_code", None) == 1
            with pytest.raises(Exception, match="does not verify"):
                receive(opened, data.replace(b"ZQPURPOSE", b"ZQPURPOSF"), good, agency="probation", now=now)
            with pytest.raises(Exception, match="dropped for police"):
                receive(opened, data, good, agency="police", now=now)
    finally:
        stop_agent(stranger)
    assert cli(root, "officers", "revoke", "probation-do", "--yes") == 0
    capsys.readouterr()
    assert _new(root) == 1
    assert "revoked" in capsys.readouterr().err
    _nothing_stored(root, capsys)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--from-agency", "nowhere", "--officer", "probation-do", "--to-agency", "police"], "agency 'nowhere'"),
        (["--from-agency", "probation", "--officer", "nobody", "--to-agency", "police"], "no officer 'nobody'"),
        (["--from-agency", "probation", "--officer", "probation-do", "--to-agency", "probation"], "itself"),
    ],
)
def test_unknown_agencies_or_officers_and_one_agency_twice_are_usage_errors(
    routed_root: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    capsys.readouterr()
    assert cli(routed_root, "request", "new", *args, "--purpose", PURPOSE, "--grounds", GROUNDS) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    _nothing_stored(routed_root, capsys)


def test_an_empty_purpose_or_an_unreadable_consent_file_is_a_usage_error(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    capsys.readouterr()
    base = ["request", "new", "--from-agency", "probation", "--officer", "probation-do", "--to-agency", "police"]
    assert cli(root, *base, "--purpose", "  ", "--grounds", GROUNDS) == 2
    assert "--purpose: the purpose is empty" in capsys.readouterr().err
    assert cli(root, *base, "--purpose", PURPOSE, "--grounds", GROUNDS, "--consent", "/nowhere/form.pdf") == 2
    assert "--consent '/nowhere/form.pdf' cannot be read" in capsys.readouterr().err
    _nothing_stored(root, capsys)


def test_answering_a_malformed_or_unknown_id_or_as_another_agency_is_refused(
    routed_root: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = routed_root
    capsys.readouterr()
    assert cli(root, "request", "answer", "not-an-id", "--officer", "police-do", "--refuse", "x") == 2
    assert "is not a request id" in capsys.readouterr().err
    assert cli(root, "request", "answer", "0123456789abcdef", "--officer", "police-do", "--refuse", "x") == 1
    assert "no request 0123456789abcdef" in capsys.readouterr().err
    assert cli(root, "request", "show", "0123456789abcdef") == 1
    form = tmp_path / "consent.pdf"
    form.write_bytes(b"%PDF-1.4 signed consent")
    assert _new(root, "--consent", str(form)) == 0
    (listed,) = _register(root, capsys)
    ident = str(listed["id"])
    capsys.readouterr()
    assert cli(root, "request", "answer", ident, "--officer", "probation-pdo", "--refuse", "mine") == 1
    assert "officer of probation, not of police" in capsys.readouterr().err
    answer = ["request", "answer", ident, "--officer", "probation-pdo", "--with-submission", str(GOOD)]
    assert cli(root, *answer) == 1  # a refusal by either way of answering, as for `request new`
    assert "officer of probation, not of police" in capsys.readouterr().err
    assert not [p for agency in ("police", "probation") for p in (root / "outbox" / agency).glob("*.csv")]
    assert cli(root, "request", "answer", ident, "--officer", "police-do", "--refuse", " ") == 2
    assert _register(root, capsys)[0]["status"] == "open"
    code, shown = cli_output(root, capsys, "request", "show", ident, "--json")
    assert code == 0 and json.loads(shown)["consent"] == {"name": "consent.pdf", "bytes": 23}


def test_an_answer_that_could_never_reach_the_requester_is_refused(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root  # police sends to probation and housing only: council's request cannot be answered by file
    assert cli(root, "request", "new", "--from-agency", "council", "--officer", "council-do", "--to-agency",
               "police", "--purpose", PURPOSE, "--grounds", GROUNDS) == 0  # fmt: skip
    (listed,) = _register(root, capsys)
    capsys.readouterr()
    code = cli(root, "request", "answer", str(listed["id"]), "--officer", "police-do", "--with-submission", str(GOOD))
    assert code == 1 and "does not send to council" in capsys.readouterr().err
    assert not list((root / "outbox" / "police").glob("*.csv"))


def test_a_malformed_bank_holiday_table_in_state_is_a_config_error_naming_it(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = routed_root / "state" / "bank-holidays.json"
    table.write_text('{"england-and-wales": {"events": [{"title": "Boxing Day"}]}}')
    capsys.readouterr()
    assert _new(routed_root) == 1
    err = capsys.readouterr().err
    assert str(table) in err and "gov.uk" in err
    _nothing_stored(routed_root, capsys)
    table.write_text(json.dumps({"england-and-wales": {"division": "england-and-wales", "events": [
        {"title": "A made-up holiday", "date": "2030-01-02", "notes": "", "bunting": False}]}}))  # fmt: skip
    assert _new(routed_root) == 0  # the admin's table overrides the shipped one (weekends only, off its years)


def _request_process(root: Path, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`iom-gateway request ...` as its own process, the text on standard input: not in its command line."""
    argv = [sys.executable, "-m", "gateway", "--root", str(root), "request", *args]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120, check=False)


def test_a_request_and_its_refusal_can_take_their_text_from_standard_input(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    who = ["--from-agency", "probation", "--officer", "probation-do", "--to-agency", "police"]
    made = _request_process(root, f"{PURPOSE}\n{GROUNDS}\n", "new", *who, "--purpose", "-", "--grounds", "-", "--json")
    assert made.returncode == 0, made.stderr
    ident = json.loads(made.stdout)["id"]
    refused = _request_process(root, REASON + "\n", "answer", ident, "--officer", "police-pdo", "--refuse", "-")
    assert refused.returncode == 0, refused.stderr
    code, shown = cli_output(root, capsys, "request", "show", ident)
    assert code == 0 and PURPOSE in shown and GROUNDS in shown and REASON in shown
    short = _request_process(root, PURPOSE + "\n", "new", *who, "--purpose", "-", "--grounds", "-")
    assert short.returncode == 2 and "one line for each" in short.stderr
    assert len(_register(root, capsys)) == 1  # nothing stored for the refused one


def test_purge_deletes_a_closed_requests_text_with_the_audit_entries_of_its_answer_and_refused_drops_with_theirs(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    assert _new(root) == 0 and _new(root, "--urgent", "hearing on Friday") == 0
    closed, still_open = (str(r["id"]) for r in _register(root, capsys)[::-1])
    assert cli(root, "request", "answer", closed, "--officer", "police-do", "--refuse", REASON) == 0
    folder = root / "outbox" / "probation" / "requests"
    (folder / "unsigned.json").write_bytes(b"{}")
    old = time.time() - 3600
    os.utime(folder / "unsigned.json", (old, old))  # past the pairing timeout: refused now
    assert cli(root, "run", "--once") == 1
    aside, stored = root / "quarantine" / "probation" / "requests", root / "state" / "requests"
    assert list(aside.glob("*.gpg")) and (folder / "unsigned.json.rejected.txt").exists()
    config = Root.open(root).config.retention
    soon = datetime.now(UTC) + timedelta(days=config.quarantine_days + 1)
    kept = purge(Root.open(root), soon, dry_run=True)
    assert kept.request_texts == () and len(kept.quarantined) == 1 and len(kept.reports) == 1
    later = datetime.now(UTC) + timedelta(days=config.audit_days + 1)
    planned = purge(Root.open(root), later, dry_run=True)
    assert planned.request_texts == (closed,) and (stored / f"{closed}.gpg").exists()
    done = purge(Root.open(root), later, dry_run=False)
    assert done.request_texts == (closed,) and not list(aside.iterdir())
    assert not (folder / "unsigned.json.rejected.txt").exists()
    assert sorted(p.name for p in stored.iterdir()) == [f"{still_open}.gpg"]  # an open request keeps its text
    capsys.readouterr()
    assert cli(root, "request", "show", closed) == 1
    assert "was deleted on" in capsys.readouterr().err
    statuses = {str(r["id"]): r["status"] for r in _register(root, capsys)}
    assert statuses == {closed: "refused", still_open: "open"}  # the register keeps ids, dates and outcome
    assert Requests(Root.open(root).db).sealing_keys() == {str(Root.open(root).gateway_key())}
    assert purge(Root.open(root), later, dry_run=False).request_texts == ()  # once


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["deliver.manifest", "deliver.manifest@2", "deliver.committed", "finish.removed"])
def test_a_kill_while_delivering_an_answer_leaves_the_request_answered_once_by_its_one_package(
    routed_root: Path, capsys: pytest.CaptureFixture[str], fault: str
) -> None:
    root = routed_root
    assert _new(root) == 0
    (listed,) = _register(root, capsys)
    ident = str(listed["id"])
    assert cli(root, "request", "answer", ident, "--officer", "police-do", "--with-submission", str(GOOD)) == 0
    crashed = Daemon(root, fault=fault)
    assert crashed.exited() == -9, f"fault {fault!r} was never reached:\n{crashed.text()}"
    survivor = Daemon(root).ready()
    try:
        wait_until(lambda: not list((root / "outbox" / "police").glob("*.csv")), 60, "the answer delivered")
        wait_until(lambda: _register(root, capsys)[0]["status"] == "answered", 30, "the request answered")
    finally:
        assert survivor.stop() == 0, survivor.text()
    (answered,) = _register(root, capsys)
    package = str(answered["package"])
    assert [p.name for p in (root / "inbox" / "probation").glob("*.manifest.json")] == [f"{package}.manifest.json"]
    manifest = json.loads((root / "inbox" / "probation" / f"{package}.manifest.json").read_bytes())
    assert manifest["request"] == ident
    assert [e["request"] for e in _requests(root) if e["event"] == "request.answered"] == [ident]
    capsys.readouterr()
    assert cli(root, "audit", "verify") == 0, capsys.readouterr().out
