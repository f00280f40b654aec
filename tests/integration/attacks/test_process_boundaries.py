"""Finding 6, the process side: the vault passphrase stays out of every child's environment, the
gpg-agents a command started end with it, and `run --once` leaves a file still being written alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.daemon_harness import GOOD, Daemon, cli, drop, home, wait_until
from tests.integration.gpg_helpers import gpg, stop_agent

pytestmark = pytest.mark.both_journals


def _agents_of(root: Path) -> dict[int, bytes]:
    """The gpg-agent processes serving a GnuPG home under `root`: pid -> environment."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if not argv or not argv[0].endswith(b"gpg-agent"):
                continue
            if os.fsencode(root) not in b" ".join(argv) and not _serves(entry, root):
                continue
            found[int(entry.name)] = (entry / "environ").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def _serves(process: Path, root: Path) -> bool:
    """Whether the agent's working folder or open sockets lie under `root` (agents started without --homedir)."""
    try:
        return str(root) in os.readlink(process / "cwd") or any(
            str(root) in os.readlink(fd) for fd in (process / "fd").iterdir()
        )
    except OSError:
        return False


def _passphrase(root: Path) -> str:
    return (root / "keys" / "vault-passphrase").read_text().strip()


@pytest.mark.slow
def test_the_vault_passphrase_is_in_no_gpg_child_or_agent_environment(routed_root: Path) -> None:
    secret = _passphrase(routed_root)
    daemon = Daemon(routed_root, env={"IOM_GATEWAY_VAULT_PASSPHRASE": secret}).ready()
    try:
        drop(routed_root, "police", GOOD.read_bytes(), "env-2026-10.csv", "police-do")
        stop_agent(home(routed_root, "police-do"))  # the officer's own, started by this test's plain gpg
        wait_until(lambda: any((routed_root / "inbox" / "housing").glob("*.zip")), 30, "the AES-ZIP delivery")
        agents = _agents_of(routed_root)
        assert agents, "expected the gateway's gpg-agent while the daemon runs"
        for pid, environment in agents.items():
            assert secret.encode() not in environment, f"gpg-agent {pid} holds the vault passphrase"
            assert b"IOM_GATEWAY_VAULT_PASSPHRASE" not in environment
    finally:
        assert daemon.stop() == 0, daemon.text()
    wait_until(lambda: _agents_of(routed_root) == {}, 10, "the gpg-agents the daemon started to stop")


def test_a_command_stops_the_gpg_agents_it_started(routed_root: Path, tmp_path: Path) -> None:
    drop(routed_root, "police", GOOD.read_bytes(), "agents-2026-10.csv", "police-do")
    stop_agent(home(routed_root, "police-do"))  # the officer's own, started by this test's plain gpg
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--root", str(routed_root), "run", "--once"],
        cwd=REPO,
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, "IOM_GATEWAY_VAULT_PASSPHRASE": _passphrase(routed_root)},
    )
    assert result.returncode == 0, result.stderr
    to = tmp_path / "to"
    to.mkdir()
    assert cli(routed_root, "pull", "--agency", "probation", "--officer", "probation-do", "--to", str(to)) == 0
    # gpgconf --kill asks the agent to stop and returns; the agent exits a moment later (longer under load)
    wait_until(lambda: _agents_of(routed_root) == {}, 10, "the gpg-agents the commands started to stop")


def test_run_once_leaves_a_file_still_being_written_alone(routed_root: Path) -> None:
    data = GOOD.read_bytes()
    staging = routed_root.parent / "whole.csv"
    staging.write_bytes(data)
    gpg(home(routed_root, "police-do"), "--yes", "--output", str(staging) + ".sig", "--detach-sign", str(staging))
    outbox = routed_root / "outbox" / "police"
    outbox.mkdir(mode=0o700, exist_ok=True)
    os.replace(str(staging) + ".sig", outbox / "slow-2026-10.csv.sig")
    with (outbox / "slow-2026-10.csv").open("wb") as writer:
        writer.write(data[: len(data) // 2])
        writer.flush()
        assert cli(routed_root, "run", "--once") == 0
        assert (outbox / "slow-2026-10.csv").exists(), "the half-written file was taken"
        assert not list((outbox / "rejected").glob("*")) if (outbox / "rejected").exists() else True
        writer.write(data[len(data) // 2 :])
    assert cli(routed_root, "run", "--once") == 0
    assert len(list((routed_root / "inbox" / "probation").glob("*.csv.gpg"))) == 1
