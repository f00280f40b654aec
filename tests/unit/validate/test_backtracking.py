"""No row can make the validator backtrack catastrophically (a regular-expression denial of service).

Near misses of every pattern, at their maximum lengths, in every column at once: the file must be
checked in about the time a normal one takes. The subprocess timeout is a hang detector, far above
the milliseconds this takes; speed itself is measured in bench/, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, csv_bytes
from tests.unit.validate.test_gate import HELD

SCRIPT = Path(sys.executable).with_name("iom-gateway")
NEAR_MISSES = {
    "title": "A" * 19 + "1",
    "forename": "A" * 49 + "1",
    "surname": "Zoe\u0308" * 12 + "1",
    "postcode": "BH1A1AAA",
    "cro_number": "123456/21GG",
    "date_of_birth": "01/01/19900",
    "gender": "MF",
    "ethnicity": "White - British ",
    "victim_consent": "YN",
}


def test_near_misses_everywhere_do_not_hang(tmp_path: Path) -> None:
    header = sorted(HELD)
    row = [NEAR_MISSES.get(column, "x" * 3999 + "\x0b") for column in header]
    path = tmp_path / "evil.csv"
    path.write_bytes(csv_bytes([header, *([row] * 50)]))
    result = subprocess.run(
        [
            str(SCRIPT),
            "--root",
            str(REPO),
            "validate",
            str(path),
            "--agency",
            "police",
            "--period",
            "2026-10",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = json.loads(result.stdout)
    assert result.returncode == 1
    # every cell is wrong, and victims_details is filled without consent: one more per row
    assert report["counts"]["victim-consent"] == 50
    assert sum(report["counts"].values()) == 50 * (len(header) + 1)
