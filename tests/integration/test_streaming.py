"""Validation streams: peak memory does not grow with the number of rows."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SCRIPT = Path(sys.executable).with_name("iom-gateway")
HEADER = ["forename", "surname", "gender", "date_of_birth", "postcode", "criminal_history", "victim_consent"]


def _write(path: Path, rows: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(rows):
            gender = "X" if i % 100 == 0 else "M"  # 1% invalid rows: errors are counted, details capped
            writer.writerow(["Ann", "Lee", gender, "01/01/1990", "BH11AA", f"Note {i}, some text\nsecond line", "N"])


def _peak_kib(path: Path) -> int:
    process = subprocess.Popen(
        [str(SCRIPT), "--root", str(REPO), "validate", str(path), "--agency", "police", "--period", "2026-10"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1
    return usage.ru_maxrss


def test_peak_memory_does_not_grow_with_rows(tmp_path: Path) -> None:
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    _write(small, 10_000)
    _write(large, 200_000)
    assert large.stat().st_size > 15 * small.stat().st_size
    small_kib, large_kib = _peak_kib(small), _peak_kib(large)
    assert large_kib < small_kib + 4096, (small_kib, large_kib)
