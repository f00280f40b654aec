"""fsio's process hardening: what this process leaves behind is its own, whatever the umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.adapters.fsio import private_dirs, private_umask

# In a child: lowering the hard core limit is for good, and the integration tests need this
# process able to start a daemon that may dump core, to show the daemon turns that off.
CORE_LIMITS = """
import resource
from gateway.adapters.fsio import disable_core_dumps
disable_core_dumps()
once = resource.getrlimit(resource.RLIMIT_CORE)
disable_core_dumps()  # already 0: nothing to do (as under systemd's LimitCORE=0)
print(once, resource.getrlimit(resource.RLIMIT_CORE))
"""


def test_disable_core_dumps_sets_soft_and_hard_to_zero_and_may_be_called_again() -> None:
    child = subprocess.run([sys.executable, "-c", CORE_LIMITS], capture_output=True, text=True, check=True, timeout=60)
    assert child.stdout.strip() == "(0, 0) (0, 0)", child.stdout


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Run the test under umask 000, the worst an admin's shell or a cron job can hand the gateway."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_private_dirs_makes_every_missing_folder_0700(tmp_path: Path) -> None:
    made = private_dirs(tmp_path / "a" / "b" / "c")
    assert made == tmp_path / "a" / "b" / "c"
    assert [_mode(p) for p in (tmp_path / "a", tmp_path / "a" / "b", made)] == [0o700, 0o700, 0o700]


@pytest.mark.usefixtures("open_umask")
def test_private_dirs_leaves_an_existing_folder_alone_and_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir(mode=0o750)  # e.g. an agency's ACL shows in the group bits
    assert private_dirs(tmp_path / "shared") == tmp_path / "shared"
    assert _mode(tmp_path / "shared") == 0o750
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileExistsError):
        private_dirs(tmp_path / "file")
    with pytest.raises(NotADirectoryError):
        private_dirs(tmp_path / "file" / "below")


@pytest.mark.usefixtures("open_umask")
def test_private_umask_makes_what_is_created_private_and_gives_the_umask_back(tmp_path: Path) -> None:
    with private_umask():
        (tmp_path / "made").mkdir()
        (tmp_path / "file").write_bytes(b"")
    assert (_mode(tmp_path / "made"), _mode(tmp_path / "file")) == (0o700, 0o600)
    assert os.umask(0) == 0, "the caller's umask is given back"
