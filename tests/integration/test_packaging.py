"""A wheel works on its own: built from this checkout, installed into a brand-new venv, and run from an
unrelated folder, `init --demo`, `demo` and `init` of a real root all work with nothing but the wheel's files.

Offline: the wheel is built with this venv's setuptools (no build isolation, no index), and the new venv
finds the runtime dependencies through a .pth line naming this venv's site-packages. A path a .pth adds
is not itself processed as a site folder, so this checkout's editable install is not visible there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.gpg_helpers import gpg, stop_agent

pytestmark = pytest.mark.slow


def run(argv: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    # the checkout must not leak in: no PYTHONPATH, no root from the environment
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "IOM_GATEWAY_ROOT", "VIRTUAL_ENV"}}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def stop_agents(root: Path) -> None:
    for home in [root / "keys" / "gnupg", *(root / "keys").glob("demo-*/*"), root / "keys" / "demo-forger"]:
        stop_agent(home)


@pytest.fixture(scope="module")
def installed() -> Iterator[tuple[Path, Path]]:
    """(the new venv, its `iom-gateway`) with only the wheel of this checkout installed in it."""
    # short: gpg-agent sockets live in the GnuPG homes made below, and a socket path has 108 bytes at most
    work = Path(tempfile.mkdtemp(prefix="iom", dir="/tmp"))
    source = work / "src"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(REPO / "gateway", source / "gateway", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    built = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-v",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            "dist",
            "./src",
        ],
        work,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    # -v shows the backend's output: setuptools warned that a `project.license` table is deprecated
    warnings = [line for line in (built.stdout + built.stderr).splitlines() if "Warning" in line or "deprecat" in line]
    assert warnings == [], "\n".join(warnings)
    (wheel,) = (work / "dist").glob("iom_gateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        "gateway/resources/gateway.toml",
        "gateway/resources/schemas/table1.schema.json",
        "gateway/resources/schemas/ownership.json",
        "gateway/resources/samples/police-good-2026-10.csv",
        "gateway/resources/systemd/iom-gateway.service",
        "gateway/resources/systemd/iom-gateway-purge.timer",
        "gateway/resources/systemd/iom-gateway.sysusers",
    }
    assert shipped <= names, sorted(shipped - names)
    venv = work / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], work)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    added = run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], work
    )
    assert added.returncode == 0, added.stdout + added.stderr
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], work).stdout.strip()
    (Path(purelib) / "iom-dev-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    yield venv, venv / "bin" / "iom-gateway"
    for root in (work / "elsewhere").glob("*"):
        stop_agents(root)
        stop_agents(root / "demo")
    shutil.rmtree(work)


def test_the_wheel_runs_from_its_own_venv_not_the_checkout(installed: tuple[Path, Path]) -> None:
    venv, _ = installed
    where = run(
        [str(venv / "bin" / "python"), "-c", "import gateway, gateway.resources as r; print(gateway.__file__)"], venv
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    assert not Path(where.stdout.strip()).is_relative_to(REPO)


def test_init_demo_demo_and_a_real_root_work_from_an_unrelated_folder(installed: tuple[Path, Path]) -> None:
    venv, command = installed
    elsewhere = venv.parent / "elsewhere"  # neither the checkout nor the venv: nothing to find beside it
    elsewhere.mkdir()

    demo_root = elsewhere / "d"
    result = run([str(command), "--root", str(demo_root), "init", "--demo"], elsewhere)
    assert result.returncode == 0, result.stderr
    assert f"gateway root ready at {demo_root}" in result.stdout
    assert sorted(p.name for p in (demo_root / "schemas").iterdir()) == ["ownership.json", "table1.schema.json"]
    assert (demo_root / "gateway.toml").read_bytes() == (REPO / "gateway" / "resources" / "gateway.toml").read_bytes()
    assert len(list((demo_root / "samples").glob("*.csv"))) == 6

    result = run([str(command), "--root", str(elsewhere / "p"), "demo"], elsewhere)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7. Look at:" in result.stdout
    assert (elsewhere / "p" / "demo" / "pulled" / "probation-do").is_dir()

    real = elsewhere / "r"
    real.mkdir(mode=0o700)
    result = run([str(command), "--root", str(real), "init"], elsewhere)
    assert result.returncode == 2  # no gateway.toml: the message points at the example the wheel ships
    example = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert f"shipped as {example / 'gateway' / 'resources' / 'gateway.toml'}" in result.stderr
    toml = (REPO / "gateway" / "resources" / "gateway.toml").read_text(encoding="utf-8")
    (real / "gateway.toml").write_text(toml.replace("Demo IOM Partnership", "Exeter IOM Partnership"), encoding="utf-8")
    (real / "keys").mkdir(mode=0o700)
    secret = real / "keys" / "vault-passphrase"
    secret.write_text("a passphrase of some length\n", encoding="utf-8")
    secret.chmod(0o600)
    result = run([str(command), "--root", str(real), "init"], elsewhere)
    assert result.returncode == 0, result.stderr
    assert (real / "schemas" / "table1.schema.json").is_file() and (real / "keys" / "vault.json").is_file()
    listing = gpg(real / "keys" / "gnupg", "--with-colons", "--list-secret-keys").stdout.decode()
    uids = [line.split(":")[9] for line in listing.splitlines() if line.startswith("uid:")]
    assert uids == ["Exeter IOM Partnership IOM gateway <gateway@exeter-iom-partnership.invalid>"]
    result = run([str(command), "--root", str(real), "audit", "verify"], elsewhere)
    assert result.returncode == 0, result.stdout + result.stderr


def test_setup_installs_every_tool_the_tests_and_the_units_run() -> None:
    """On a fresh machine ./scripts/test must install what a test or a unit runs: a missing one is a
    failed test (never a skip), so each must be checked, and installed when missing, by scripts/_setup.sh."""
    setup = (REPO / "scripts" / "_setup.sh").read_text(encoding="utf-8")
    tools = set()
    for source in (REPO / "tests").rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        tools |= set(re.findall(r"shutil\.which\(\"([^\"]+)\"\)", text))
        tools |= {Path(p).name for p in re.findall(r"\"(/usr/bin/[a-z0-9-]+)\"", text)}
    tools.add("systemd-analyze")  # test_systemd.py's tool() takes the name as an argument
    assert {"7z", "unzip", "mount", "gpg", "gpgconf"} <= tools  # the scan finds them
    missing = sorted(tool for tool in tools if not re.search(rf"command -v {re.escape(tool)}\b", setup))
    assert missing == [], f"scripts/_setup.sh never checks for {missing}"
    units = REPO / "gateway" / "resources" / "systemd"
    commands = set()
    for unit in units.glob("*.service"):
        commands |= set(re.findall(r"(?m)^Exec\w*=[-@:+!]*(/\S+)", unit.read_text(encoding="utf-8")))
    commands.discard("/opt/iom-gateway/.venv/bin/iom-gateway")  # the gateway itself
    assert commands == {"/bin/kill"}, commands  # a new one needs its check here and in _setup.sh
    assert all(f"[ -x {command} ]" in setup for command in commands), setup
