"""Markings that do not break data: the CSV `pull` writes reads as Table 1 in any CSV reader, and the
marking travels beside it (file name, manifest, NAME.marking.txt); banner lines only on request."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.validate.schema import load_standard
from tests.conftest import REPO
from tests.integration.daemon_harness import GOOD, cli, drop, packages, run_once_process

NAME = "police-2026-10.csv"
MARKING = "PROTECT - PERSONAL"


def _deliver(root: Path) -> None:
    drop(root, "police", GOOD, NAME, "police-do")
    result = run_once_process(root)
    assert result.returncode == 0, result.stderr


def _pull_args(root: Path, agency: str, to: Path) -> list[str]:
    to.mkdir(mode=0o700, parents=True, exist_ok=True)
    if agency == "housing":
        secret = root.parent / "housing-password"
        if not secret.exists():
            assert cli(root, "keys", "export", "--agency", "housing", "--password", "--to", str(secret)) == 0
        return ["pull", "--agency", agency, "--to", str(to), "--password-file", str(secret)]
    return ["pull", "--agency", agency, "--to", str(to), "--officer", f"{agency}-do"]


def _sidecar(csv_file: Path) -> Path:
    return csv_file.with_name(csv_file.name.removesuffix(".csv") + ".marking.txt")


@pytest.mark.slow
@pytest.mark.parametrize("agency", ["probation", "housing"])  # OpenPGP and AES-ZIP
def test_the_default_pulled_csv_reads_as_table_1_with_csv_dictreader(routed_root: Path, agency: str) -> None:
    _deliver(routed_root)
    out = routed_root.parent / "pulled"
    assert cli(routed_root, *_pull_args(routed_root, agency, out)) == 0
    [written] = out.glob("*.csv")
    with GOOD.open(newline="", encoding="utf-8") as handle:
        expected = list(csv.DictReader(handle))
    with written.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    header = GOOD.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert reader.fieldnames == header
    standard = load_standard(REPO)
    assert all(standard.column_for(name) is not None for name in header)  # every one a Table 1 column
    assert rows == expected
    # the marking is kept, just not inside the data: the file name, the manifest and the sidecar
    assert written.name.startswith("PROTECT-PERSONAL__police__2026-10__")
    [manifest] = (routed_root / "inbox" / agency).glob("*.manifest.json")
    assert json.loads(manifest.read_text())["marking"] == MARKING
    sidecar = _sidecar(written)
    assert sidecar.read_text(encoding="utf-8") == MARKING + "\n"
    assert sidecar.stat().st_mode & 0o777 == 0o600 and written.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in out.iterdir()) == sorted([written.name, sidecar.name])


@pytest.mark.slow
def test_banner_true_puts_the_marking_first_and_last_but_never_into_raw(routed_root: Path) -> None:
    toml = routed_root / "gateway.toml"
    text = toml.read_text()
    assert "\nbanner = false" in text  # the shipped default
    toml.write_text(text.replace("\nbanner = false", "\nbanner = true", 1))
    _deliver(routed_root)
    banner, raw = routed_root.parent / "banner", routed_root.parent / "raw"
    assert cli(routed_root, *_pull_args(routed_root, "probation", banner)) == 0
    raw.mkdir()
    raw_pull = ["pull", "--agency", "probation", "--to", str(raw), "--officer", "probation-pdo", "--raw"]
    assert cli(routed_root, *raw_pull) == 0
    [with_banner] = banner.glob("*.csv")
    lines = with_banner.read_text(encoding="utf-8").splitlines()
    assert lines[0] == lines[-1] == MARKING
    assert lines[1:-1] == GOOD.read_text(encoding="utf-8").splitlines()
    [exact] = raw.glob("*.csv")
    assert exact.read_bytes() == GOOD.read_bytes()
    assert _sidecar(exact).read_text(encoding="utf-8") == MARKING + "\n"  # --raw too: its bytes stay the sender's
    assert _sidecar(with_banner).read_text(encoding="utf-8") == MARKING + "\n"


@pytest.mark.slow
def test_a_pull_killed_between_the_csv_and_its_sidecar_leaves_it_marked_and_the_next_pull_completes(
    routed_root: Path,
) -> None:
    _deliver(routed_root)
    out = routed_root.parent / "pulled"
    args = ["--root", str(routed_root), *_pull_args(routed_root, "probation", out)]
    script = (
        "import sys\nfrom gateway.core import faults\nfrom gateway.cli import main\n"
        "faults.arm('pull.published')\nsys.exit(main(sys.argv[1:]))\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=REPO, capture_output=True, timeout=120, check=False
    )
    assert killed.returncode == -9, killed.stderr.decode(errors="replace")
    # the verified CSV is there, still marked by its name; no sidecar, no temp file; the pull is not recorded
    [written] = out.iterdir()
    assert written.name.startswith("PROTECT-PERSONAL__") and written.name.endswith(".csv")
    assert written.read_bytes() == GOOD.read_bytes()
    assert cli(routed_root, *_pull_args(routed_root, "probation", out)) == 0  # not "already pulled"
    assert sorted(p.name for p in out.iterdir()) == sorted([written.name, _sidecar(written).name])
    assert _sidecar(written).read_text(encoding="utf-8") == MARKING + "\n"
    assert written.read_bytes() == GOOD.read_bytes()
    assert len(packages(routed_root, "probation")) == 1
