"""The data-quality scorecard (Solihull 2.2): its numbers for a fixture month of good, bad, unsigned, late and
corrected files, checked against counts made by hand from the sample files; its HTML parsed (and, in a slow
test, rendered by headless Chromium); an empty month; bad months; and no personal data anywhere in it.

Hand counts, from the samples (rows are data rows, the header not counted):
- police-good: 7 rows, all valid; CRO Number filled in 5, Address Locality in 4; its last row (Marcus Bell)
  fills both, its first (Daniel Ashcroft) fills both.
- probation-invalid-rows: 5 rows, every one with an error, 12 errors: postcode-format rows 2 and 3,
  real-date rows 3 and 6, formula-injection rows 4 and 6, and one each of cro-check-letter (3), required (4),
  gender-value (4), ethnicity-value (4), age-range (5), victim-consent (5); 44 non-empty cells.
- housing-good-windows-1252: 2 rows, valid; family_details filled in 1.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import time
import zlib
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.integration.daemon_harness import GOOD, INVALID, SAMPLES, cli, cli_output, drop

HOUSING = SAMPLES / "housing-good-windows-1252-2026-10.csv"
SURNAMES = ["Ashcroft", "O'Connell", "Bell", "Whitfield", "Mistry", "Morgan", "Cole"]


def _lines(path: Path) -> list[bytes]:
    """The sample's records (a quoted cell may span lines: the police sample's records end in CRLF)."""
    return path.read_bytes().split(b"\r\n")


def _without(path: Path, index: int) -> bytes:
    """The sample less one record (1 = its first data row, -1 its last)."""
    records = [r for r in _lines(path) if r]
    del records[index if index > 0 else len(records) + index]
    return b"\r\n".join(records) + b"\r\n"


def _month(root: Path, tmp_path: Path) -> None:
    """September: police's file less its first row. October: police's file, then a correction of it (less its
    last row); probation's invalid file, signed (the gateway refuses it at validation); housing's file; and a
    file from treatment that nobody signed (refused before validation)."""
    drop(root, "police", _without(GOOD, 1), "police-2026-09.csv", "police-do")
    drop(root, "police", GOOD, "police-2026-10.csv", "police-do")
    drop(root, "probation", INVALID, "probation-2026-10.csv", "probation-do")
    drop(root, "housing", HOUSING, "housing-2026-10.csv", "housing-do")
    unsigned = drop(root, "treatment", GOOD, "treatment-2026-10.csv", None)
    os.utime(unsigned, (time.time() - 3600, time.time() - 3600))  # long past the pairing timeout
    assert cli(root, "run", "--once") == 1  # two files refused
    corrected = tmp_path / "police-fixed-2026-10.csv"
    corrected.write_bytes(_without(GOOD, -1))
    earlier = _package(root, "police", "2026-10")
    assert (
        cli(root, "submit", str(corrected), "--agency", "police", "--officer", "police-do", "--corrects", earlier) == 0
    )
    assert cli(root, "run", "--once") == 0


def _package(root: Path, sender: str, period: str) -> str:
    """The name of the first package `sender` had delivered for `period`."""
    lines = (root / "state" / "audit.jsonl").read_text().splitlines()
    for entry in map(json.loads, lines):
        if entry["event"] == "package.delivered" and f"__{sender}__{period}__" in str(entry["package"]):
            return str(entry["package"])
    raise AssertionError(f"no package of {sender} for {period}")


@pytest.fixture
def month_root(routed_root: Path, tmp_path: Path) -> Path:
    _month(routed_root, tmp_path)
    return routed_root


def _card(root: Path, capsys: pytest.CaptureFixture[str], month: str) -> dict[str, object]:
    code, text = cli_output(root, capsys, "report", "quality", "--month", month, "--format", "json")
    assert code == 0
    return json.loads(text)


def test_the_scorecard_counts_match_the_hand_counts_of_the_fixture_month(
    month_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = _card(month_root, capsys, "2026-10")
    scopes = {s["name"]: s for s in card["agencies"]}
    police, probation, housing, treatment = (scopes[a] for a in ("police", "probation", "housing", "treatment"))
    # validity
    assert (police["submissions"], police["accepted"], police["refused"]) == (2, 2, 0)
    assert (police["rows_checked"], police["rows_valid"], police["error_rate"]) == (13, 13, 0.0)
    assert (probation["submissions"], probation["accepted"], probation["refused"]) == (1, 0, 1)
    assert (probation["rows_checked"], probation["rows_valid"], probation["error_rate"]) == (5, 0, 100.0)
    assert probation["rules"] == {
        "age-range": {"errors": 1, "rows": 1},
        "cro-check-letter": {"errors": 1, "rows": 1},
        "ethnicity-value": {"errors": 1, "rows": 1},
        "formula-injection": {"errors": 2, "rows": 2},
        "gender-value": {"errors": 1, "rows": 1},
        "postcode-format": {"errors": 2, "rows": 2},
        "real-date": {"errors": 2, "rows": 2},
        "required": {"errors": 1, "rows": 1},
        "victim-consent": {"errors": 1, "rows": 1},
    }
    assert (probation["cells_checked"], probation["cells_failing"]) == (44, 12)
    assert (treatment["submissions"], treatment["refused"], treatment["refused_before_validation"]) == (1, 1, 1)
    assert treatment["rows_checked"] == 0 and treatment["error_rate"] is None
    # completeness: delivered rows only, so probation's refused rows count for nothing
    assert police["completeness"]["cro_number"] == pytest.approx(100 * 9 / 13)
    assert police["completeness"]["address_locality"] == pytest.approx(100 * 7 / 13)
    assert housing["completeness"]["family_details"] == pytest.approx(50.0)
    assert all(share is None for share in probation["completeness"].values())
    assert "licence_conditions" not in police["completeness"]  # probation's column: police may not send it
    # timeliness: October's files were due on 2026-10-10 (due_day 10) and came in today
    late = (datetime.now(UTC).date() - date(2026, 10, 10)).days
    assert police["timeliness"]["due"] == "2026-10-10" and police["timeliness"]["days_late"] == late
    assert probation["timeliness"]["first_accepted"] is None and probation["timeliness"]["days_late"] is None
    # accuracy and reliability: one correction; 13 rows against September's 6
    assert (police["corrections"], housing["corrections"]) == (1, 0)
    assert police["rows_change"] == pytest.approx(100 * (13 - 6) / 6)
    assert police["error_rate_change"] == 0.0 and probation["rows_change"] is None
    # the partnership
    whole = card["partnership"]
    assert (whole["submissions"], whole["accepted"], whole["refused"]) == (5, 3, 2)
    assert (whole["rows_checked"], whole["rows_valid"], whole["error_rate"]) == (20, 15, 25.0)
    assert whole["corrections"] == 1
    assert sorted(whole["timeliness"]["late_agencies"]) == sorted(s["name"] for s in card["agencies"])
    assert card["empty"] is False
    history = {p["month"]: p for p in card["history"]["police"]}
    assert list(history) == [f"2025-{m}" for m in ("11", "12")] + [f"2026-{m:02d}" for m in range(1, 11)]
    assert history["2026-09"]["error_rate"] == 0.0 and history["2026-08"]["error_rate"] is None
    assert card["history"]["probation"][-1]["error_rate"] == 100.0


class _Page(HTMLParser):
    """What a reader of the page gets: tables by id with their rows' cells, SVG charts, and anything fetched."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.svgs: list[str] = []
        self.fetches: list[str] = []
        self.tags: set[str] = set()
        self.text: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        given = dict(attrs)
        self.tags.add(tag)
        if tag == "table":
            self._table = given.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
            self.tables[self._table].append(self._row)
        elif tag == "svg":
            self.svgs.append(given.get("class") or "")
        for name in ("src", "href"):
            if given.get(name):
                self.fetches.append(str(given[name]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._row is not None and data.strip():
            self._row.append(data.strip())


def test_the_html_scorecard_is_one_offline_page_with_the_summary_table_and_charts_for_every_scope(
    month_root: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "scorecard.html"
    code, printed = cli_output(month_root, capsys, "report", "quality", "--month", "2026-10", "--to", str(out))
    assert code == 0 and f"to {out}" in printed and out.stat().st_mode & 0o777 == 0o600
    page = _Page()
    page.feed(out.read_text())
    assert not page.fetches and "script" not in page.tags and "link" not in page.tags
    summary = page.tables["summary"]
    agencies = ["council", "housing", "police", "probation", "treatment", "yos"]
    assert [row[0] for row in summary[1:]] == [*agencies, "partnership"]
    police = dict(zip(summary[0], summary[1 + agencies.index("police")], strict=True))
    assert (police["Files"], police["Rows checked"], police["Error rate"], police["Corrections"]) == (
        "2",
        "13",
        "0.0 %",
        "1",
    )
    rules = {row[0]: row for row in page.tables["rules"][1:]}
    assert rules["postcode-format"][1 + agencies.index("probation")].startswith("2 row(s), 2 error(s) (60.0 % pass)")
    timely = {row[0]: row[1:] for row in page.tables["timeliness"][1:]}
    today = datetime.now(UTC).date()
    assert timely["police"][-2:] == [str((today - date(2026, m, 10)).days) for m in (9, 10)]  # both came in today
    assert timely["probation"] == ["–"] * 12
    completeness = {row[0]: row for row in page.tables["completeness"][1:]}
    assert completeness["family_details"][1 + agencies.index("housing")] == "50.0 %"
    # two charts a scope: error rate and completeness over 12 months
    assert sorted(page.svgs) == sorted(["chart error_rate", "chart completeness"] * (len(agencies) + 1))
    assert not [name for name in SURNAMES if name in out.read_text()]


def test_the_csv_scorecard_has_one_measure_a_line_for_every_scope(
    month_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = cli_output(month_root, capsys, "report", "quality", "--month", "2026-10", "--format", "csv")
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == "month,scope,element,measure,item,value"
    assert "2026-10,probation,validity,rows_failing,real-date,2" in lines
    assert "2026-10,police,accuracy,corrections,,1" in lines
    assert "2026-10,partnership,validity,error_rate_percent,,25.0" in lines
    assert not [name for name in SURNAMES if name in text]


def test_a_month_with_no_data_is_an_empty_labelled_report_and_a_bad_month_is_misuse(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = _card(routed_root, capsys, "2025-01")
    assert card["empty"] is True and card["partnership"]["submissions"] == 0
    code, html = cli_output(routed_root, capsys, "report", "quality", "--month", "2025-01")
    assert code == 0 and "No submissions were recorded for 2025-01." in html
    for month in ("2026-13", "26-10", "2026-1", "october"):
        capsys.readouterr()
        assert cli(routed_root, "report", "quality", "--month", month) == 2
        err = capsys.readouterr().err
        assert "YYYY-MM" in err or "not a real month" in err
        assert "Traceback" not in err


def test_the_scorecard_will_not_write_over_a_file(
    month_root: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    there = tmp_path / "kept.html"
    there.write_text("the admin's own file")
    assert cli(month_root, "report", "quality", "--month", "2026-10", "--to", str(there)) == 2
    assert "already exists" in capsys.readouterr().err and there.read_text() == "the admin's own file"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test installs it)")
def test_headless_chromium_renders_the_scorecard_with_its_table_and_charts(
    month_root: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    page = tmp_path / "scorecard.html"
    assert cli(month_root, "report", "quality", "--month", "2026-10", "--to", str(page)) == 0
    profile = tmp_path / "profile"
    common = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"]
    dom = subprocess.run(
        [*common, "--dump-dom", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
        env=_chromium_env(tmp_path),
    ).stdout.decode()
    assert '<table id="summary">' in dom and dom.count("<svg") == 14 and "<rect" in dom
    png = tmp_path / "scorecard.png"
    subprocess.run(
        [*common, "--window-size=1400,1800", f"--screenshot={png}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
        env=_chromium_env(tmp_path),
    )
    width, height, inked = _png_ink(png.read_bytes())
    assert (width, height) == (1400, 1800)
    assert inked > 0.01  # text, table rules and bars: well over 1% of the rows' bytes are not white


def _chromium_env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}


def _png_ink(data: bytes) -> tuple[int, int, float]:
    """A PNG's size and the share of its (unfiltered-enough) pixel bytes that are not white."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, idat, width, height = 8, b"", 0, 0
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        offset += 12 + length
    raw = zlib.decompress(idat)
    stride = len(raw) // height
    # each row starts with a filter byte; rows filtered with None (0) or Sub/Up keep white as 0xff or 0x00:
    # count bytes that are neither, a fair sign of drawn pixels whatever the filters
    rows = [raw[r * stride + 1 : (r + 1) * stride] for r in range(height)]
    inked = sum(len(row) - row.count(0xFF) - row.count(0) for row in rows)
    return width, height, inked / max(len(raw), 1)


def test_a_refused_copy_of_bytes_delivered_before_counts_as_a_refusal(
    routed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = routed_root
    drop(root, "police", GOOD, "police-2026-10.csv", "police-do")
    assert cli(root, "run", "--once") == 0
    drop(root, "police", GOOD, "police-again-2026-10.csv", "probation-do")  # the same bytes, another agency's DO
    assert cli(root, "run", "--once") == 1
    (police,) = (s for s in _card(root, capsys, "2026-10")["agencies"] if s["name"] == "police")
    assert (police["submissions"], police["accepted"], police["refused"]) == (2, 1, 1)
    assert police["refused_before_validation"] == 1 and police["rows_checked"] == 7
