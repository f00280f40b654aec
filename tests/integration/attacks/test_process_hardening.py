"""Issue 9, finding 6 (process hardening): a ZIP bomb, a full disk, core dumps, folder modes.

Each test reproduces what the attack did against the code before the fix: a real AES-256 ZIP
bomb that 7-Zip opens; a real 64 KiB tmpfs under an AES-ZIP agency's inbox and a real
`run --once`; a real daemon's /proc/PID/limits; real `init --demo` and daemon processes under a
hostile umask.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest
import pyzipper

from gateway.adapters.aeszip import read_aes_zip
from gateway.core.errors import CryptoError
from gateway.core.secret import Secret
from tests.conftest import REPO
from tests.integration.daemon_harness import (
    FAST,
    GOOD,
    INVALID,
    drop,
    outbox_clear,
    packages,
    remove_root,
    run_once_process,
    short_dir,
    temp_files,
    wait_until,
)
from tests.launcher import LAUNCHER

pytestmark = pytest.mark.both_journals

SEVEN = shutil.which("7z")
PASSWORD = Secret("Xq7#open-Sesame-2026")
MIB = 1 << 20
HEADER = b"forename,surname,gender,date_of_birth\r\n"


# -- 1. the AES-ZIP reader and a ZIP bomb --------------------------------------------------------


def _aes_zip_bomb(path: Path, member: str, size: int) -> None:
    """A genuine AES-256 (AE-2) ZIP made with pyzipper in the gateway's own layout: a CSV header, then
    `size` bytes of zeros, which Deflate shrinks about 1,030 times. Password and authentication code
    are valid: only its expansion gives it away."""
    info = pyzipper.zipfile_aes.AESZipInfo(member, date_time=time.localtime()[:6])
    info.compress_type = pyzipper.ZIP_DEFLATED
    info.create_system = 3  # Unix, with the gateway's 0600 file mode: the reader checks every header byte
    info.external_attr = 0o600 << 16
    zeros = bytes(MIB)
    with pyzipper.AESZipFile(path, "w", compression=pyzipper.ZIP_DEFLATED, allowZip64=False) as archive:
        archive.setpassword(PASSWORD.reveal().encode())
        archive.setencryption(pyzipper.WZ_AES, nbits=256, force_wz_aes_version=2)
        with archive.open(info, "w") as sink:
            sink.write(HEADER)
            for _ in range(size // MIB):
                sink.write(zeros)


def _seven(*args: str) -> subprocess.CompletedProcess[str]:
    if SEVEN is None:
        pytest.fail("7-Zip is missing: install p7zip-full (./scripts/test does)")
    return subprocess.run(
        [SEVEN, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300, check=False
    )


def test_an_aes_zip_bomb_is_refused_before_anything_is_unpacked(tmp_path: Path) -> None:
    size = len(HEADER) + 256 * MIB
    bomb = tmp_path / "PROTECT-PERSONAL__police__2026-10__bomb.zip"
    _aes_zip_bomb(bomb, "PROTECT-PERSONAL__police__2026-10__bomb.csv", size)
    assert bomb.stat().st_size < size // 1000, "a bomb: over 1,000 times smaller than what it holds"

    # A genuine archive: 7-Zip lists it as AES-256 Deflate and tests it (password and MAC) as sound.
    listing = _seven("l", "-slt", f"-p{PASSWORD.reveal()}", str(bomb)).stdout
    assert "Method = AES-256 Deflate" in listing and "Encrypted = +" in listing
    assert f"\nSize = {size}\n" in listing
    tested = _seven("t", f"-p{PASSWORD.reveal()}", str(bomb))
    assert tested.returncode == 0 and "Everything is Ok" in tested.stdout, tested.stdout + tested.stderr

    out = tmp_path / "out.csv"
    with bomb.open("rb") as source, out.open("wb") as target, pytest.raises(CryptoError) as raised:
        read_aes_zip(source, password=PASSWORD, target=target)
    message = raised.value.message
    assert out.stat().st_size == 0, f"{out.stat().st_size:,} bytes were unpacked before the refusal"
    assert f"{size:,} bytes" in message, message  # what: the size it claims
    assert "ZIP bomb" in message and "nothing was unpacked" in message, message  # why, and what happened


# -- 2. a full disk under an AES-ZIP inbox ---------------------------------------------------------


@contextmanager
def _full_tmpfs(folder: Path) -> Iterator[None]:
    """Mount a 64 KiB tmpfs on `folder` and fill it: the next write there fails with ENOSPC."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a real 64 KiB tmpfs")
    if shutil.which("mount") is None:  # a missing tool is a missing install step, never a skip
        pytest.fail("mount is missing: install mount (./scripts/test does)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(folder)], capture_output=True, check=False
    )
    assert mounted.returncode == 0, mounted.stderr
    try:
        fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with pytest.raises(OSError, match="No space left"):
                while True:
                    os.write(fd, bytes(4096))
        finally:
            os.close(fd)
        yield
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True, check=False)


def test_a_full_disk_under_an_aes_zip_inbox_defers_once_without_a_traceback(routed_root: Path) -> None:
    root = routed_root
    housing = root / "inbox" / "housing"  # police's route: probation by OpenPGP, housing by AES-ZIP
    with _full_tmpfs(housing):
        drop(root, "police", GOOD, GOOD.name, "police-do")
        result = run_once_process(root)
        assert "Exception ignored" not in result.stderr, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        deferrals = [line for line in result.stderr.splitlines() if "errno=ENOSPC" in line]
        assert len(deferrals) == 1, result.stderr
        assert f"deferred agency=police file='{GOOD.name}'" in deferrals[0]
        assert (root / "outbox" / "police" / GOOD.name).exists(), "the submission stays to be tried again"
        assert [p.name for p in housing.iterdir()] == ["filler"], "no partial package is left behind"
        (housing / "filler").unlink()
        again = run_once_process(root)
        assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
        assert len(packages(root, "housing")) == 1 and outbox_clear(root, "police")
    assert temp_files(root) == []


# -- 3. core dumps ----------------------------------------------------------------------------------


def _core_limit(limits: str) -> list[str]:
    """The soft and hard values of /proc/PID/limits' "Max core file size" line."""
    line = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    return line.split()[4:6]


def test_the_daemon_runs_with_core_dumps_disabled(routed_root: Path) -> None:
    log = routed_root.parent / "daemon.log"
    control = routed_root.parent / "control.log"
    LAUNCHER.spawn(["/bin/sh", "-c", "ulimit -c >&2"], routed_root, control)
    assert LAUNCHER.wait(30) == 0
    assert control.read_text().strip() not in ("", "0"), "this host allows no core dumps at all: nothing to prove"
    pid = LAUNCHER.spawn([sys.executable, "-m", "gateway", "--root", str(routed_root), "run"], REPO, log)
    try:
        wait_until(lambda: "event=watching" in log.read_text() or not Path(f"/proc/{pid}").exists(), 30, "the daemon")
        assert Path(f"/proc/{pid}/exe").resolve().name.startswith("python"), log.read_text()
        limits = Path(f"/proc/{pid}/limits").read_text()
        assert _core_limit(limits) == ["0", "0"], f"the daemon's soft and hard core limits:\n{limits}"
    finally:
        os.kill(pid, signal.SIGTERM)
        assert LAUNCHER.wait(30) == 0, log.read_text()


# -- 4. folder and gateway.toml modes under a hostile umask ----------------------------------------

PUBLIC = ("schemas", "samples", "staging")  # copies of the repository's own files; the test's staging


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _gateway(argv: list[str], umask: int, stderr: IO[bytes] | int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", *argv], stdout=subprocess.DEVNULL, stderr=stderr, cwd=REPO, umask=umask
    )


def _open_to_others(root: Path) -> dict[str, str]:
    """Every folder under `root` (the root too) that is not 0700, and gateway.toml unless it is 0600.

    inbox/ and outbox/ are passages, 0711 (the access model: officers pass through to their agency's folder,
    none can list them); the agencies' groups are not on this host, so their folders stay 0700 (fail closed).
    """
    folders = [root, *(p for p in root.rglob("*") if p.is_dir() and p.relative_to(root).parts[0] not in PUBLIC)]
    passages = {"inbox", "outbox"}
    found = {
        str(f.relative_to(root)): oct(_mode(f))
        for f in folders
        if _mode(f) != (0o711 if str(f.relative_to(root)) in passages else 0o700)
    }
    if _mode(root / "gateway.toml") != 0o600:
        found["gateway.toml"] = oct(_mode(root / "gateway.toml"))
    return found


def _fast_police_route(root: Path) -> None:
    """As the harness's template: settle in 1 s, police routed to probation (OpenPGP) and housing (AES-ZIP)."""
    toml = root / "gateway.toml"
    text = toml.read_text()
    for key, value in FAST.items():
        text = re.sub(rf"(?m)^{key} = [0-9]+", f"{key} = {value}", text)
    police = 'kind = "police"\ndelivery = "gpg"'
    toml.write_text(text.replace(police, police + '\nroute = ["probation", "housing"]'))


@pytest.mark.parametrize("umask", [0o000, 0o022], ids=["umask-000", "umask-022"])
def test_every_folder_is_private_and_gateway_toml_unreadable_to_others_whatever_the_umask(umask: int) -> None:
    root = short_dir() / "root"
    try:
        assert _gateway(["--root", str(root), "init", "--demo"], umask).wait(timeout=120) == 0
        assert (root / "outbox" / "police").is_dir() and (root / "keys" / "demo-officers").is_dir()
        assert _open_to_others(root) == {}, "after init --demo"

        # A root whose exchange folders the daemon makes itself (as on a hand-written root).
        for folder in ("outbox", "inbox", "quarantine"):
            shutil.rmtree(root / folder)
        _fast_police_route(root)
        log = root.parent / "daemon.log"
        with log.open("wb") as stderr:
            daemon = _gateway(["--root", str(root), "run"], umask, stderr)
        try:
            wait_until(lambda: "event=watching" in log.read_text() or daemon.poll() is not None, 30, "the daemon")
            drop(root, "police", GOOD, GOOD.name, "police-do")
            drop(root, "probation", INVALID, INVALID.name, "probation-do")
            report = root / "outbox" / "probation" / "rejected" / INVALID.name.replace(".csv", ".report.txt")
            wait_until(
                lambda: (
                    all((root / "inbox" / r).is_dir() and packages(root, r) for r in ("probation", "housing"))
                    and report.exists()
                ),
                60,
                "the delivery and the rejection",
            )
        finally:
            daemon.terminate()
            assert daemon.wait(timeout=30) == 0, log.read_text()
        assert (root / "quarantine" / "probation").is_dir()
        assert _open_to_others(root) == {}, "after the daemon made the exchange folders"
    finally:
        remove_root(root)
