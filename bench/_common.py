"""What the benchmark scripts share: polling for an outcome, the machine line, the printed table.

Imported as `bench._common` (each script puts the repository on sys.path first, as for
`bench.validate`). No timing is asserted anywhere; these only help print numbers.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Callable

GPG = "/usr/bin/gpg"


def wait_until(condition: Callable[[], bool], timeout: float, what: str, step: float) -> float:
    """Poll `condition` every `step` s; return the perf_counter time it first held."""
    deadline = time.perf_counter() + timeout
    while True:
        if condition():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def platform_line() -> str:
    """CPUs, Python, the kernel and gpg's version: the start of every script's machine line."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpg = subprocess.run([GPG, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()
    return (
        f"nproc {cpus}, Python {platform.python_version()}, {platform.system()} {platform.release()} "
        f"{platform.machine()}, {gpg[0] if gpg else 'gpg ?'}"
    )


def render_table(rows: list[list[str]], markdown: bool, *, right: bool = False) -> str:
    """`rows` (a header row first) as a Markdown table, or as aligned columns of text."""
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    align = str.rjust if right else str.ljust
    return "\n".join("  ".join(align(c, w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
