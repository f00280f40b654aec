"""`validate` loads only what validating needs: none of the OpenPGP, AES-ZIP, vault, daemon or e-mail
libraries (issue 13: they were most of its start-up time). Proved in a real process, by what is in
`sys.modules` once `main()` has returned; bench/startup.py measures the time itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, make_root

# libraries `validate` never runs (`cffi` and `Cryptodome` come with pyzipper, `aiosmtpd` with the
# e-mail notifier); `gateway.adapters.gpg` and `subprocess` would mean it could start gpg
NEVER = ("gnupg", "pyzipper", "Cryptodome", "cryptography", "cffi", "watchdog", "aiosmtpd")
_PROBE = """
import json, sys
from gateway.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
print(json.dumps({"exit": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _validate_in_a_process(root: Path, *args: str) -> tuple[int, str, list[str]]:
    """Run `iom-gateway --root ROOT validate ARGS` in a fresh interpreter; its exit, stdout and modules."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, "--root", str(root), "validate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    probe = json.loads(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr  # the probe itself ran to its end
    return probe["exit"], done.stdout, probe["modules"]


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in names)


@pytest.mark.parametrize(
    ("sample", "extra", "exit_code", "says"),
    [
        ("police-good-2026-10.csv", (), 0, "VALID: 7 row(s)"),
        ("police-good-2026-10.csv", ("--json",), 0, '"valid": true'),
        ("probation-invalid-rows-2026-10.csv", (), 1, "INVALID:"),
    ],
)
def test_validate_never_imports_the_crypto_daemon_or_mail_libraries(
    tmp_path: Path, sample: str, extra: tuple[str, ...], exit_code: int, says: str
) -> None:
    root = make_root(tmp_path / "root")
    agency = sample.split("-", maxsplit=1)[0]
    code, out, modules = _validate_in_a_process(root, str(REPO / "samples" / sample), "--agency", agency, *extra)
    assert code == exit_code
    assert says in out
    assert _loaded(modules, NEVER) == []
    assert "gateway.adapters.gpg" not in modules and "subprocess" not in modules


def test_the_probe_sees_a_library_that_a_command_loads(tmp_path: Path) -> None:
    """The check above can fail: `run --once` imports the daemon, and with it watchdog."""
    root = make_root(tmp_path / "root")
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, "--root", str(root), "run", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    modules = json.loads(done.stderr.strip().splitlines()[-1])["modules"]
    assert "watchdog" in _loaded(modules, NEVER)
