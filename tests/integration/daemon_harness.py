"""Drive the real daemon as a subprocess: a demo root, signed drops, start/stop/kill, and the invariants."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.adapters.db import writing
from gateway.admin.init import init_root
from gateway.cli import main
from gateway.state.root import Root
from tests.conftest import REPO
from tests.integration.gpg_helpers import gpg, new_officer, stop_agent

SAMPLES = REPO / "samples"
GOOD = SAMPLES / "police-good-2026-10.csv"
INVALID = SAMPLES / "probation-invalid-rows-2026-10.csv"
# police sends to one OpenPGP agency and one AES-ZIP agency: both sealing paths, few gpg calls
ROUTE = ("probation", "housing")
FAST = {"settle_seconds": 1, "poll_seconds": 1, "rescan_seconds": 2, "pairing_timeout_seconds": 3}


def short_dir() -> Path:
    # gpg-agent sockets live in each GnuPG home here; a Unix socket path may not exceed 108 bytes
    return Path(tempfile.mkdtemp(prefix="iom", dir="/tmp"))


def make_template(extra_toml: str = "") -> Path:
    """A demo root where police routes to probation and housing, and the daemon settles in 1 s."""
    path = short_dir() / "root"
    init_root(path, demo=True)
    toml = path / "gateway.toml"
    text = toml.read_text()
    for key, value in FAST.items():
        text = re.sub(rf"(?m)^{key} = [0-9]+", f"{key} = {value}", text)
    text = text.replace(
        'kind = "police"\ndelivery = "gpg"', 'kind = "police"\ndelivery = "gpg"\nroute = ["probation", "housing"]'
    )
    toml.write_text(text + extra_toml)
    return path


def make_demo_template() -> Path:
    """A demo root as `init --demo` makes it (every shipped route), where a CSV pairs with its
    signature without waiting for one (`pairing_timeout_seconds = 0`): for `run --once` tests."""
    path = short_dir() / "root"
    init_root(path, demo=True)
    toml = path / "gateway.toml"
    toml.write_text(toml.read_text().replace("pairing_timeout_seconds = 300", "pairing_timeout_seconds = 0"))
    return path


def journal_rows(root: Path, sql: str, parameters: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run `sql` (`?` placeholders) on the root's journal, whichever it is ([journal] url), as the gateway opens
    it; return the rows as tuples (a write commits at once)."""
    with Root.open(root) as opened:
        return [tuple(row) for row in opened.db.execute(sql, parameters).fetchall()]


def journal_write(root: Path, sql: str, parameters: tuple[object, ...] = ()) -> None:
    """Run `sql` on the root's journal in a transaction of its own (a test that plays the attacker, or moves time)."""
    with Root.open(root) as opened, writing(opened.db) as db:
        db.execute(sql, parameters)


def homes(root: Path) -> list[Path]:
    return [root / "keys" / "gnupg", *(root / "keys" / "demo-officers").iterdir()]


def remove_root(root: Path) -> None:
    for home in homes(root):
        stop_agent(home)
    shutil.rmtree(root.parent, ignore_errors=True)


@contextmanager
def copy_of(template: Path) -> Iterator[Path]:
    path = short_dir() / "r"
    shutil.copytree(template, path, symlinks=True, ignore=shutil.ignore_patterns("S.gpg-agent*"))
    try:
        yield path
    finally:
        remove_root(path)


def home(root: Path, officer: str) -> Path:
    return root / "keys" / "demo-officers" / officer


def drop(root: Path, agency: str, source: Path | bytes, name: str, officer: str | None) -> Path:
    """Put a CSV and a plain `gpg --detach-sign` signature into an outbox: signature first, each by rename."""
    outbox = root / "outbox" / agency
    outbox.mkdir(mode=0o700, exist_ok=True)
    data = source if isinstance(source, bytes) else source.read_bytes()
    staging = root / "staging"
    staging.mkdir(exist_ok=True)
    (staging / name).write_bytes(data)
    if officer is not None:
        gpg(
            home(root, officer),
            "--yes",
            "--output",
            str(staging / (name + ".sig")),
            "--detach-sign",
            str(staging / name),
        )
        os.replace(staging / (name + ".sig"), outbox / (name + ".sig"))
    os.replace(staging / name, outbox / name)
    return outbox / name


class Daemon:
    """`iom-gateway run` in a subprocess, its stderr in a file."""

    def __init__(self, root: Path, fault: str | None = None, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.log = root.parent / f"daemon-{time.monotonic_ns()}.log"
        environment = {k: v for k, v in os.environ.items() if k != "IOM_GATEWAY_UNSAFE_FAULT"}
        environment |= env or {}
        if fault:
            environment["IOM_GATEWAY_UNSAFE_FAULT"] = fault
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "--root", str(root), "run"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=environment,
                cwd=REPO,
            )

    def ready(self) -> Daemon:
        """Wait until it has recovered and watches (its signal handlers are in place by then)."""
        self.wait_log("event=watching")
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 30) -> None:
        wait_until(lambda: needle in self.text() or self.process.poll() is not None, timeout, f"log line {needle!r}")
        assert needle in self.text(), f"{needle!r} not logged before exit:\n{self.text()}"

    def exited(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the daemon did not exit within {timeout} s:\n{self.text()}") from None

    def stop(self, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.exited(timeout)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def outbox_clear(root: Path, agency: str) -> bool:
    return not [p for p in (root / "outbox" / agency).iterdir() if p.is_file()]


def cli(root: Path, *args: str) -> int:
    return main(["--root", str(root), *args])


def cli_output(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run one command in-process; its exit code and stdout (and never a traceback on stderr)."""
    capsys.readouterr()
    code = cli(root, *args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out


def audit_entries(root: Path) -> list[dict[str, object]]:
    path = root / "state" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def temp_files(root: Path) -> list[Path]:
    """Our writers' temp files anywhere under the root (agencies' outbox roots excluded: their own)."""
    return [p for p in root.rglob(".*.tmp") if p.parent.parent != root / "outbox"]


def pull_raw(root: Path, agency: str, into: Path) -> list[bytes]:
    """Pull every package for `agency` as a real recipient would; return the plaintexts."""
    into.mkdir(mode=0o700, parents=True, exist_ok=True)
    if agency == "housing":
        secret = root.parent / "housing-password"
        secret.unlink(missing_ok=True)
        assert cli(root, "keys", "export", "--agency", "housing", "--password", "--to", str(secret)) == 0
        assert cli(root, "pull", "--agency", agency, "--to", str(into), "--raw", "--password-file", str(secret)) == 0
    else:
        assert cli(root, "pull", "--agency", agency, "--to", str(into), "--raw", "--officer", f"{agency}-do") == 0
    return [p.read_bytes() for p in sorted(into.glob("*.csv"))]  # each beside its NAME.marking.txt


def packages(root: Path, agency: str) -> list[Path]:
    return sorted(p for p in (root / "inbox" / agency).iterdir() if p.name.endswith((".csv.gpg", ".zip")))


def run_once_process(root: Path) -> subprocess.CompletedProcess[str]:
    """`iom-gateway run --once` as a real process (the console script's way), its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "--root", str(root), "run", "--once"],
        capture_output=True,
        text=True,
        errors="replace",
        cwd=REPO,
        timeout=120,
        check=False,
    )


@contextmanager
def short_lived_officer(root: Path, days: int = 10) -> Iterator[str]:
    """council-short, a council DO whose key (made by plain gpg) expires in `days` days, registered in
    `root`; yields its fingerprint and stops its home's gpg-agent after."""
    keys = root.parent / "home-short"
    fingerprint = new_officer(keys, "Short Key", "short@example.invalid", expire=f"{days}d")
    public = root.parent / "short.asc"
    public.write_bytes(gpg(keys, "--armor", "--export", fingerprint).stdout)
    added = ("officers", "add", "--agency", "council", "--role", "DO", "--name", "Short Key", "--id", "council-short")
    try:
        assert cli(root, *added, "--email", "short@example.invalid", "--key", str(public)) == 0
        yield fingerprint
    finally:
        stop_agent(keys)
