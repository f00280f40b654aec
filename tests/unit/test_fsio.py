"""fsio's process hardening: what this process leaves behind is its own."""

from __future__ import annotations

import subprocess
import sys

# In a child: lowering the hard core limit is for good, and the integration tests need this
# process able to start a daemon that may dump core, to show the daemon turns that off.
CORE_LIMITS = """
import resource
from gateway.fsio import disable_core_dumps
disable_core_dumps()
once = resource.getrlimit(resource.RLIMIT_CORE)
disable_core_dumps()  # already 0: nothing to do (as under systemd's LimitCORE=0)
print(once, resource.getrlimit(resource.RLIMIT_CORE))
"""


def test_disable_core_dumps_sets_soft_and_hard_to_zero_and_may_be_called_again() -> None:
    child = subprocess.run([sys.executable, "-c", CORE_LIMITS], capture_output=True, text=True, check=True, timeout=60)
    assert child.stdout.strip() == "(0, 0) (0, 0)", child.stdout
