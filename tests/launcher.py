"""Start commands from a process that keeps the test session's original resource limits.

An in-process `cli.main()` sets this process's hard core-file limit to 0 for good (raising it again
needs CAP_SYS_RESOURCE, which even root lacks here), and every child inherits that. A test that
proves the daemon disables core dumps *itself* needs a parent that still allows them: this one,
started when the test session starts, before any `main()`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_CODE = r"""
import json, resource, subprocess, sys
hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))  # core dumps as allowed as this host allows them
child = None
for line in sys.stdin:
    request = json.loads(line)
    if "argv" in request:
        with open(request["log"], "wb") as log:
            child = subprocess.Popen(request["argv"], cwd=request["cwd"], stdout=subprocess.DEVNULL, stderr=log)
        print(child.pid, flush=True)
    else:
        print(child.wait(timeout=request["timeout"]), flush=True)
"""


class Launcher:
    """One child at a time, with core dumps allowed: `spawn` starts it, `wait` returns its exit status."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def _ask(self, request: dict[str, object]) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def spawn(self, argv: list[str], cwd: Path, log: Path) -> int:
        """Start `argv` (stderr to `log`); return its pid."""
        return self._ask({"argv": argv, "cwd": str(cwd), "log": str(log)})

    def wait(self, timeout: float) -> int:
        """The exit status of the last child started."""
        return self._ask({"timeout": timeout})


LAUNCHER = Launcher()
