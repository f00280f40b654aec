"""Subject access (Solihull 5.1; Warwickshire Appendix 2): `sar` finds every package that held a person, by
CRO number or by surname and date of birth however they are typed, and none that did not; a rejected file
adds nothing; the gateway keeps no personal data to do it (the database and every file under the root are
searched for the fixture people); rotating the SAR key ends look-ups of what came before; purge drops the
entries of packages past audit retention; every look-up is audited without whom it was about.

Files are signed by the demo officers with the real gpg and delivered by `run --once` (in-process) to
probation (OpenPGP) and housing (AES-ZIP)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.core.subject import cro_key, name_key
from gateway.validate.rules import CRO_LETTERS, cro_check_letter_ok
from tests.conftest import csv_bytes
from tests.integration.daemon_harness import (
    GOOD,
    audit_entries,
    cli,
    cli_output,
    copy_of,
    drop,
    journal_rows,
    journal_write,
    packages,
    pull_raw,
)

HEADER = GOOD.read_text(encoding="utf-8").splitlines()[0].split(",")
RECIPIENTS = ("housing", "probation")


def _cro(number: str) -> str:
    """`number` (NNNNNN/YY or SFYY/NNNNNN) with its right check letter."""
    return next(number + letter for letter in CRO_LETTERS if cro_check_letter_ok(number + letter))


@dataclass(frozen=True)
class Person:
    forename: str
    surname: str
    dob: str  # DD/MM/YYYY
    cro: str  # "" if none

    def row(self) -> list[str]:
        cells = dict.fromkeys(HEADER, "")
        cells |= {"Title": "Mx", "Forename": self.forename, "Surname": self.surname, "Gender": "F"}
        cells |= {"Date of Birth": self.dob, "CRO Number": self.cro, "Ethnicity": "W1", "Victim Consent": "N"}
        cells |= {"Address Street": "1 Mill Lane", "Post Town": "Birmingham", "Postcode": "B276RR"}
        return [cells[column] for column in HEADER]

    @property
    def iso(self) -> str:
        return f"{self.dob[6:]}-{self.dob[3:5]}-{self.dob[:2]}"

    def subject_keys(self) -> set[str]:
        keys = {name_key(self.surname, self.iso)} - {None}
        return {str(k) for k in keys} | ({cro_key(self.cro)} if self.cro else set())


QUENNELL = Person("Harriet", "Quennell", "14/03/1985", _cro("310001/12"))
DARCY = Person("Miles", "D'Arcy-Vane", "02/11/1979", _cro("77412/08"))
OKONKWO = Person("Ngozi", "Okonkwo", "21/06/1990", "")  # no CRO number: found by name only
MACTAVISH = Person("Ewan", "MacTavish", "09/09/1970", _cro("SF95/12345"))
ODEGARD = Person("Siv", "Ødegård", "30/01/1995", _cro("5521/19"))
WINTERBOTTOM = Person("Prudence", "Winterbottom", "17/07/1982", _cro("660213/03"))  # only in a rejected file
ABSENT = Person("Absent", "Nobody", "07/04/1966", _cro("123/45"))  # in no file at all
PEOPLE = (QUENNELL, DARCY, OKONKWO, MACTAVISH, ODEGARD, WINTERBOTTOM, ABSENT)
FILES = {  # file name -> who is in it; D'Arcy-Vane is in two files
    "police-sar-a-2026-10.csv": (QUENNELL, DARCY, OKONKWO),
    "police-sar-b-2026-10.csv": (DARCY, MACTAVISH),
    "police-sar-c-2026-10.csv": (ODEGARD,),
}
REJECTED = "police-sar-bad-2026-10.csv"  # Winterbottom, and a row with gender "male"


def _bytes(people: tuple[Person, ...]) -> bytes:
    return csv_bytes([HEADER, *(p.row() for p in people)])


def _deliver(root: Path, name: str, people: tuple[Person, ...]) -> str:
    """Drop a signed file, run the gateway once; the package name (the same for every recipient)."""
    before = set(packages(root, "probation"))
    drop(root, "police", _bytes(people), name, "police-do")
    assert cli(root, "run", "--once") == 0
    (new,) = set(packages(root, "probation")) - before
    return new.name.removesuffix(".csv.gpg")


def _index(root: Path) -> list[tuple[bytes, str, str]]:
    rows = journal_rows(
        root, "SELECT i.digest, m.submission, m.key_id FROM sar_index i JOIN sar_submissions m USING (ref)"
    )
    return [(bytes(digest), str(submission), str(key)) for digest, submission, key in rows]  # type: ignore[arg-type]


def _sar(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    code, out = cli_output(root, capsys, "sar", *args, "--json")
    assert code == 0, out
    answer: dict[str, object] = json.loads(out)
    return answer


def _found(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> set[tuple[str, str]]:
    """(package, recipient) of every package the look-up lists."""
    listed = _sar(root, capsys, *args)["packages"]
    assert isinstance(listed, list)
    return {(str(p["package"]), str(p["recipient"])) for p in listed}


@dataclass(frozen=True)
class Delivered:
    root: Path
    packages: dict[str, str]  # file name -> package name
    pulled: Path  # where probation and housing pulled to: outside the root


@pytest.fixture(scope="module")
def delivered(routed_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Delivered]:
    """Three files delivered, one rejected, and probation's and housing's packages pulled out of the root
    (probation's officer signs a receipt as she pulls)."""
    with copy_of(routed_template) as root:
        made = {name: _deliver(root, name, people) for name, people in FILES.items()}
        entries = len(_index(root))
        bad = Person("Al", "Bad", "01/01/1990", "").row()
        bad[HEADER.index("Gender")] = "male"  # the file is invalid
        drop(root, "police", csv_bytes([HEADER, WINTERBOTTOM.row(), bad]), REJECTED, "police-do")
        assert cli(root, "run", "--once") == 1
        assert (root / "outbox" / "police" / "rejected" / REJECTED.replace(".csv", ".report.txt")).is_file()
        assert len(_index(root)) == entries  # the rejected file added nothing
        pulled = tmp_path_factory.mktemp("pulled")
        for agency in RECIPIENTS:
            assert len(pull_raw(root, agency, pulled / agency)) == len(FILES)
        yield Delivered(root, made, pulled)


def _holding(delivered: Delivered, person: Person) -> set[tuple[str, str]]:
    return {(delivered.packages[n], r) for n, people in FILES.items() if person in people for r in RECIPIENTS}


@pytest.mark.parametrize("person", PEOPLE, ids=lambda p: p.surname)
def test_sar_finds_every_package_that_held_a_person_and_none_other(
    delivered: Delivered, capsys: pytest.CaptureFixture[str], person: Person
) -> None:
    root, expected = delivered.root, _holding(delivered, person)
    by_name = _found(root, capsys, "--surname", person.surname, "--dob", person.dob)
    assert by_name == expected
    if person.cro:
        assert _found(root, capsys, "--cro", person.cro) == expected
    if person in (WINTERBOTTOM, ABSENT):
        assert expected == set()


@pytest.mark.parametrize(
    ("person", "surname", "cro"),
    [
        (DARCY, "d’arcy vane", " 77412/08" + DARCY.cro[-1].lower()),
        (QUENNELL, "QUENNELL ", "310001 / 12" + QUENNELL.cro[-1]),
        (ODEGARD, "ødegård", ODEGARD.cro.lower()),
        (MACTAVISH, "Mac-Tavish", "sf95/12345" + MACTAVISH.cro[-1].lower()),
    ],
)
def test_a_query_typed_differently_finds_the_same_packages(
    delivered: Delivered, capsys: pytest.CaptureFixture[str], person: Person, surname: str, cro: str
) -> None:
    expected = _holding(delivered, person)
    assert expected
    assert _found(delivered.root, capsys, "--surname", surname, "--dob", person.dob) == expected
    assert _found(delivered.root, capsys, "--cro", cro) == expected


def test_the_answer_says_when_from_whom_to_whom_and_what_became_of_each_package(
    delivered: Delivered, capsys: pytest.CaptureFixture[str]
) -> None:
    root = delivered.root
    answer = _sar(root, capsys, "--cro", QUENNELL.cro)
    assert answer["by"] == "cro" and answer["count"] == 2
    first = delivered.packages["police-sar-a-2026-10.csv"]
    listed = {str(p["recipient"]): p for p in answer["packages"]}  # type: ignore[attr-defined]
    for agency, entry in listed.items():
        assert entry["package"] == first and entry["sender"] == "police" and entry["rows"] == 3
        assert entry["marking"] == "PROTECT-PERSONAL" and entry["period"] == "2026-10" and entry["status"] == "live"
        assert str(entry["delivered"]).startswith("20") and entry["pulled"] is not None, agency
    assert listed["probation"]["received"] is not None  # its officer's pull signed a receipt
    code, text = cli_output(root, capsys, "sar", "--surname", "Quennell", "--dob", QUENNELL.dob)
    assert code == 0 and "2 package(s) held this person" in text
    assert " police     probation  PROTECT-PERSONAL  " in text and first in text
    code, text = cli_output(root, capsys, "sar", "--cro", ABSENT.cro)
    assert code == 0 and text.startswith("subject access look-up by CRO number: no package in the index held this")


def test_every_lookup_is_audited_with_who_asked_and_how_many_never_whom(
    delivered: Delivered, capsys: pytest.CaptureFixture[str]
) -> None:
    root = delivered.root
    before = len(audit_entries(root))
    _found(root, capsys, "--surname", DARCY.surname, "--dob", DARCY.dob)
    _found(root, capsys, "--cro", ABSENT.cro)
    lookups = [e for e in audit_entries(root)[before:] if e["event"] == "sar.lookup"]
    assert [(e["by"], e["packages"], e["submissions"]) for e in lookups] == [("name", 4, 2), ("cro", 0, 0)]
    assert all(e["actor"] == "admin" and e["user"] and str(e["key_id"]).startswith("sar-") for e in lookups)
    text = json.dumps(lookups, ensure_ascii=False).casefold()
    for needle in ("arcy", "1979", "02/11", ABSENT.cro.casefold(), "nobody"):
        assert needle not in text


def _forms(person: Person) -> set[bytes]:
    """The person's data as it could be written down: as given, folded, in UTF-8, dates both ways."""
    texts = {person.surname, person.surname.casefold(), person.surname.upper(), person.dob, person.iso}
    texts |= {k.split(":", 1)[1].split("|")[0] for k in person.subject_keys() if k.startswith("name:")}
    if person.cro:
        texts |= {person.cro, person.cro.casefold()}
    return {t.encode() for t in texts}


def test_the_gateway_keeps_no_personal_data_for_the_index(
    delivered: Delivered, capsys: pytest.CaptureFixture[str]
) -> None:
    root = delivered.root
    for person in PEOPLE:  # look-ups too leave nothing behind
        _found(root, capsys, "--surname", person.surname, "--dob", person.dob)
        if person.cro:
            _found(root, capsys, "--cro", person.cro)
    assert _index(root), "the index is there (and holds only digests and ids)"
    assert all(len(digest) == 16 and key.startswith("sar-") for digest, _, key in _index(root))
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.name == "audit.jsonl" for p in files)
    assert not list((root / "outbox" / "police").glob("police-sar-*.csv"))  # every drop was consumed
    found = []
    for path in files:
        data = path.read_bytes()
        found += [(str(path.relative_to(root)), f) for person in PEOPLE for f in _forms(person) if f in data]
    assert found == []
    # the pulls outside the root do hold them: the search would have seen them
    pulled = b"".join(p.read_bytes() for p in delivered.pulled.rglob("*.csv"))
    assert all(f in pulled for f in (QUENNELL.surname.encode(), QUENNELL.dob.encode(), QUENNELL.cro.encode()))


def test_rotating_the_sar_key_ends_lookups_of_what_came_before(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    first = _deliver(root, "police-sar-a-2026-10.csv", FILES["police-sar-a-2026-10.csv"])
    assert _found(root, capsys, "--cro", DARCY.cro) == {(first, r) for r in RECIPIENTS}
    entries = len(_index(root))
    assert entries == len(set().union(*(p.subject_keys() for p in FILES["police-sar-a-2026-10.csv"])))
    code, out = cli_output(root, capsys, "keys", "rotate", "--sar-key", "--yes")
    assert code == 0 and f"{entries} index entr(y/ies) made under sar-" in out and "finds nothing delivered" in out
    (rotated,) = [e for e in audit_entries(root) if e["event"] == "sar.key.rotated"]
    assert rotated["entries_deleted"] == entries and rotated["old"] != rotated["new"]
    assert _index(root) == []
    assert _found(root, capsys, "--cro", DARCY.cro) == set()
    assert _found(root, capsys, "--surname", QUENNELL.surname, "--dob", QUENNELL.dob) == set()
    second = _deliver(root, "police-sar-b-2026-10.csv", FILES["police-sar-b-2026-10.csv"])
    assert _found(root, capsys, "--cro", DARCY.cro) == {(second, r) for r in RECIPIENTS}
    assert {key for _, _, key in _index(root)} == {rotated["new"]}


def test_purge_drops_the_entries_of_packages_past_audit_retention_and_no_others(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    old = _deliver(root, "police-sar-a-2026-10.csv", FILES["police-sar-a-2026-10.csv"])
    recent = _deliver(root, "police-sar-b-2026-10.csv", FILES["police-sar-b-2026-10.csv"])
    kept = _deliver(root, "police-sar-c-2026-10.csv", FILES["police-sar-c-2026-10.csv"])
    old_keys = len(set().union(*(p.subject_keys() for p in FILES["police-sar-a-2026-10.csv"])))
    # Test set-up reaches into the journal: expiry and delivery time are fixed when a package is sealed, so
    # the honest way to have packages past retention today is to move them back. `old` expired and was
    # delivered before the audit log's six years; `recent` expired too, but its audit entries are kept.
    journal_write(
        root, "UPDATE deliveries SET expires = '2020-01-01T00:00:00+00:00' WHERE package IN (?, ?)", (old, recent)
    )
    journal_write(root, "UPDATE deliveries SET created = '2019-01-01T00:00:00+00:00' WHERE package = ?", (old,))
    before = len(_index(root))
    code, out = cli_output(root, capsys, "purge", "--dry-run", "--json")
    assert code == 0 and json.loads(out)["sar_entries"] == old_keys and len(_index(root)) == before
    code, out = cli_output(root, capsys, "purge")
    assert code == 0 and f"{old_keys} subject access index entr(y/ies)" in out
    assert len(_index(root)) == before - old_keys
    purged = [e for e in audit_entries(root) if e["event"] == "retention.purged"]
    assert purged[-1]["sar_entries"] == old_keys and purged[-1]["packages"] == 4
    assert _found(root, capsys, "--surname", QUENNELL.surname, "--dob", QUENNELL.dob) == set()  # only in `old`
    answer = _sar(root, capsys, "--cro", DARCY.cro)["packages"]  # in `old` and in `recent`
    assert {(p["package"], p["status"]) for p in answer} == {(recent, "purged")}  # type: ignore[index]
    assert _found(root, capsys, "--cro", ODEGARD.cro) == {(kept, r) for r in RECIPIENTS}
    code, out = cli_output(root, capsys, "purge", "--dry-run", "--json")
    assert json.loads(out)["sar_entries"] == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "name the person one way"),
        (["--cro", QUENNELL.cro, "--surname", "Quennell", "--dob", QUENNELL.dob], "name the person one way"),
        (["--surname", "Quennell"], "--surname and --dob go together"),
        (["--dob", "14/03/1985"], "--surname and --dob go together"),
        (["--cro", "31000112"], "--cro must be a CRO number NNNNNN/YYC"),
        (["--cro", "ABC/12D"], "--cro must be a CRO number NNNNNN/YYC"),
        (["--cro", "  "], "--cro must be a CRO number NNNNNN/YYC"),
        (["--cro", QUENNELL.cro[:-1] + ("Z" if QUENNELL.cro[-1] != "Z" else "A")], "wrong check letter"),
        (["--surname", "Quennell", "--dob", "31/02/1985"], "--dob must be a real date written DD/MM/YYYY"),
        (["--surname", "Quennell", "--dob", "1985-03-14"], "--dob must be a real date written DD/MM/YYYY"),
        (["--surname", "Quennell", "--dob", "14/3/1985"], "--dob must be a real date written DD/MM/YYYY"),
        (["--surname", "'-.", "--dob", "14/03/1985"], "--surname is empty"),
    ],
)
def test_bad_input_is_a_usage_error_that_says_the_fix_and_audits_nothing(
    routed_template: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    before = len(audit_entries(routed_template))
    capsys.readouterr()
    assert cli(routed_template, "sar", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("iom-gateway: ") and says in err and "Traceback" not in err
    assert len(audit_entries(routed_template)) == before


def _sar_process(root: Path, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`iom-gateway sar` as its own process, the question on standard input: not in its command line."""
    argv = [sys.executable, "-m", "gateway", "--root", str(root), "sar", *args, "--json"]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120, check=False)


def test_the_question_can_come_on_standard_input_out_of_sight_of_ps(delivered: Delivered) -> None:
    expected = _holding(delivered, QUENNELL)
    assert expected
    by_name = _sar_process(delivered.root, f"{QUENNELL.surname}\n{QUENNELL.dob}\n", "--surname", "-", "--dob", "-")
    assert by_name.returncode == 0, by_name.stderr
    assert {(p["package"], p["recipient"]) for p in json.loads(by_name.stdout)["packages"]} == expected
    by_cro = _sar_process(delivered.root, QUENNELL.cro + "\n", "--cro", "-")
    assert by_cro.returncode == 0 and json.loads(by_cro.stdout)["count"] == len(expected)
    short = _sar_process(delivered.root, QUENNELL.surname + "\n", "--surname", "-", "--dob", "-")
    assert short.returncode == 2 and "one line for each" in short.stderr and "Traceback" not in short.stderr
    empty = _sar_process(delivered.root, "", "--cro", "-")
    assert empty.returncode == 2 and "it is empty" in empty.stderr
