"""The real console script, as a user runs it: exit codes, output, no traceback, nothing written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from tests.conftest import REPO, csv_bytes, make_root

SCRIPT = Path(sys.executable).with_name("iom-gateway")
SAMPLES = REPO / "samples"
EXPECTED = {
    "police-good-2026-10.csv": {},
    "housing-good-windows-1252-2026-10.csv": {},
    "probation-invalid-rows-2026-10.csv": {
        "postcode-format": 2,
        "real-date": 2,
        "cro-check-letter": 1,
        "required": 1,
        "gender-value": 1,
        "ethnicity-value": 1,
        "formula-injection": 2,
        "age-range": 1,
        "victim-consent": 1,
    },
    "council-unowned-column-2026-10.csv": {"not-held": 2},
    "treatment-bad-encoding-2026-10.csv": {"encoding": 1},
    "yos-bad-header-2026-10.csv": {"unknown-column": 1, "duplicate-column": 1, "missing-column": 1},
}


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_every_sample_is_covered() -> None:
    assert {p.name for p in SAMPLES.glob("*.csv")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_samples(name: str) -> None:
    agency = name.split("-", maxsplit=1)[0]
    result = _run(
        "--root", str(REPO), "validate", str(SAMPLES / name), "--agency", agency, "--period", "2026-10", "--json"
    )
    report = json.loads(result.stdout)
    assert report["counts"] == EXPECTED[name]
    assert result.returncode == (0 if not EXPECTED[name] else 1)
    assert report["valid"] is (not EXPECTED[name])
    assert set(report) >= {"file", "agency", "valid", "rows", "errors", "counts"}
    assert "Traceback" not in result.stderr


def test_text_report_names_row_column_rule_and_fix() -> None:
    result = _run(
        "validate", "samples/probation-invalid-rows-2026-10.csv", "--agency", "probation", "--period", "2026-10"
    )
    assert result.returncode == 1
    line = next(x for x in result.stdout.splitlines() if "[postcode-format]" in x)
    assert line.startswith("  row 2, postcode:") and "remove any space" in line and "'A99 9AA'" in line
    assert "B91 1AA" not in result.stdout


def test_demo_plays_the_whole_exchange() -> None:
    result = _run("demo")
    assert result.returncode == 0, result.stderr
    assert (
        "delivered police/police-good-2026-10.csv from police-do: 7 rows, PROTECT-PERSONAL, "
        "to probation, council, housing, treatment, yos"
    ) in result.stdout
    assert "rejected  police/police-forged-2026-10.csv at authenticate" in result.stdout
    assert "rejected  probation/probation-invalid-rows-2026-10.csv at validate" in result.stdout
    assert "pulled/housing/PROTECT-PERSONAL__police__2026-10__" in result.stdout
    pulled = sorted((REPO / "demo" / "pulled").rglob("*.csv"))
    assert len(pulled) == 3 and all(p.stat().st_mode & 0o777 == 0o600 for p in pulled)
    assert "counts 4 files, 2 accepted, 2 refused" in result.stdout  # the forged copy of police's file too
    assert "(`sar --cro 265416/21G`) finds the 5 package(s)" in result.stdout
    page = REPO / "demo" / "quality-2026-10.html"
    assert '<table id="summary">' in page.read_text() and page.stat().st_mode & 0o777 == 0o600


def test_help_lists_only_built_commands() -> None:
    result = _run("--help")
    assert result.returncode == 0
    commands = result.stdout.split("commands:")[1]
    built = ["validate", "init", "demo", "run", "submit", "pull", "officers", "keys", "audit", "report", "purge"]
    built += ["status", "sar"]
    built += ["smtp", "check", "access", "request", "journal"]
    assert re.findall(r"^ {4}(\S+)", commands, re.MULTILINE) == built


def test_python_dash_m_works() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0 and result.stdout.startswith("iom-gateway ")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "required: COMMAND"),
        (["explode"], "invalid choice"),
        (["validate", "samples/police-good-2026-10.csv"], "--agency"),
        (["validate", "samples/police-good-2026-10.csv", "--agency", "police", "--period", "2026-13"], "not a real"),
        (["validate", "samples/police-good-2026-10.csv", "--agency", "fire"], "council, housing, police"),
        (["validate", "samples/nothing-here.csv", "--agency", "police"], "does not exist"),
    ],
)
def test_usage_errors_exit_2_without_traceback(args: list[str], words: str) -> None:
    result = _run(*args)
    assert result.returncode == 2
    assert words in result.stderr and "Traceback" not in result.stderr


def test_refused_inputs_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "link.csv"
    link.symlink_to(SAMPLES / "police-good-2026-10.csv")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    for path, words in [(link, "symbolic link"), (tmp_path, "not a regular file"), (fifo, "not a regular file")]:
        assert main(["--root", str(REPO), "validate", str(path), "--agency", "police"]) == 1
        assert words in capsys.readouterr().err


def test_config_mistake_stops_with_its_line(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    toml = root / "gateway.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace("max_rows = 1000000", "max_rows = 0"), encoding="utf-8")
    result = _run("--root", str(root), "validate", str(SAMPLES / "police-good-2026-10.csv"), "--agency", "police")
    assert result.returncode == 1
    assert "line" in result.stderr and "max_rows" in result.stderr and "Traceback" not in result.stderr


def _tree(*folders: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for f in folders for p in f.rglob("*")}


def test_validate_writes_nothing_anywhere(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root")
    work = tmp_path / "cwd"
    work.mkdir()
    bad = work / "bad.csv"
    bad.write_bytes(csv_bytes([["forename", "surname", "gender", "date_of_birth"], ["Ann", "", "X", "31/02/1990"]]))
    before = _tree(root, work)
    result = _run("--root", str(root), "validate", str(bad), "--agency", "police", cwd=work)
    assert result.returncode == 1
    assert _tree(root, work) == before
