"""Benchmark the start-up of `iom-gateway validate` against the interpreter's own.

Times whole processes, alternating, median of --runs (20): `iom-gateway validate` of a 10-row
file, `python -c pass` and `python -c "import csv"`, and the same validate with
PYTHONDONTWRITEBYTECODE set in an editable checkout that has no bytecode cache yet; then prints
the largest imports from `python -X importtime`.

    .venv/bin/python bench/startup.py [--runs 20] [--markdown]

See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
DONT_WRITE = "PYTHONDONTWRITEBYTECODE"
# what `validate` must never load (tests/integration/test_startup.py proves it; this only reports it)
HEAVY = ("gnupg", "pyzipper", "Cryptodome", "cryptography", "cffi", "watchdog", "aiosmtpd")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from validate import generate_csv  # noqa: E402  (bench/validate.py's generator: the same realistic rows)


@dataclass
class Command:
    """One command line and its environment, with the wall and CPU seconds of each run."""

    name: str
    argv: list[str]
    env: dict[str, str]
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def run(self) -> None:
        """Run once to completion (output discarded); record wall and user + system time."""
        start = time.perf_counter()
        child = subprocess.Popen(
            self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        errors = child.stderr.read() if child.stderr is not None else b""
        _, status, usage = os.wait4(child.pid, 0)
        self.wall.append(time.perf_counter() - start)
        self.cpu.append(usage.ru_utime + usage.ru_stime)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{self.name} exited {os.waitstatus_to_exitcode(status)}: {errors.decode()[-2000:]}")


def validate_argv(csv_path: Path) -> list[str]:
    """`iom-gateway --root ROOT validate FILE --agency police --period 2026-10`."""
    command = [str(BIN / "iom-gateway"), "--root", str(ROOT), "validate", str(csv_path)]
    return [*command, "--agency", "police", "--period", "2026-10"]


def commands(csv_path: Path, cold_copy: Path) -> list[Command]:
    """The four commands; every one but the last runs without PYTHONDONTWRITEBYTECODE."""
    env = {k: v for k, v in os.environ.items() if k != DONT_WRITE}
    cold = env | {DONT_WRITE: "1", "PYTHONPATH": str(cold_copy)}  # imported from a copy with no __pycache__
    python = sys.executable
    return [
        Command("iom-gateway validate, 10 rows", validate_argv(csv_path), env),
        Command("python -c pass", [python, "-c", "pass"], env),
        Command('python -c "import csv"', [python, "-c", "import csv"], env),
        Command(f"iom-gateway validate, {DONT_WRITE}=1, no bytecode cache", validate_argv(csv_path), cold),
    ]


def imports(csv_path: Path, top: int) -> tuple[list[tuple[int, int, str]], list[str]]:
    """The `top` largest imports (cumulative µs, self µs, indented name) of one validate, and any HEAVY one."""
    env = {k: v for k, v in os.environ.items() if k != DONT_WRITE}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(BIN / "iom-gateway"), *validate_argv(csv_path)[1:]],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    found = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (.*)$", line)
        if match:
            found.append((int(match[2]), int(match[1]), match[3]))
    heavy = sorted({name.strip() for _, _, name in found if name.strip().split(".")[0] in HEAVY})
    return sorted(found, reverse=True)[:top], heavy


def table(rows: list[list[str]], markdown: bool) -> str:
    """Plain aligned text or a Markdown table; the first row is the header."""
    if markdown:
        lines = [
            "| " + " | ".join(rows[0]) + " |",
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(rows[0]))) + "|",
        ]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    )


def main(argv: list[str] | None = None) -> int:
    """Time the commands, alternating; print medians, ratios and the largest imports."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each command, alternating (median)")
    parser.add_argument("--top", type=int, default=15, help="how many imports to list")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="iom-startup-") as tmp:
        folder = Path(tmp)
        csv_path = folder / "police-2026-10.csv"
        generate_csv(csv_path, 10, seed=20261121, invalid_rate=0.0)
        shutil.copytree(ROOT / "gateway", folder / "cold" / "gateway", ignore=shutil.ignore_patterns("__pycache__"))
        todo = commands(csv_path, folder / "cold")
        print(
            f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
            f"load average {os.getloadavg()[0]:.2f} at the start"
        )
        for command in todo:  # once untimed: writes the bytecode cache where it may be written
            command.run()
        for command in todo:
            command.wall.clear()
            command.cpu.clear()
        for _ in range(args.runs):
            for command in todo:
                command.run()
        top, heavy = imports(csv_path, args.top)
    ours, bare = todo[0], todo[1]
    rows = [["command", "median wall ms", "median CPU ms", "wall vs python -c pass"]]
    for command in todo:
        wall, cpu = statistics.median(command.wall), statistics.median(command.cpu)
        rows.append(
            [command.name, f"{wall * 1000:.0f}", f"{cpu * 1000:.0f}", f"{wall / statistics.median(bare.wall):.1f}x"]
        )
    print(f"\nmedian of {args.runs} alternating runs; load average {os.getloadavg()[0]:.2f} at the end\n")
    print(table(rows, args.markdown))
    print(f"\ngoal: iom-gateway validate <= 250 ms; measured {statistics.median(ours.wall) * 1000:.0f} ms wall")
    print(
        f"children run without {DONT_WRITE} (here it is {'set' if DONT_WRITE in os.environ else 'not set'}), "
        "except the last row: that one imports gateway from a copy of the source with no __pycache__, "
        f"with {DONT_WRITE}=1, so every gateway module is compiled again at every start"
    )
    print("\nlargest imports of one `iom-gateway validate` (python -X importtime, µs):\n")
    print(
        table(
            [["module", "cumulative", "self"]] + [[name, f"{cum:,}", f"{own:,}"] for cum, own, name in top],
            args.markdown,
        )
    )
    print(f"\nlibraries validate must not load: {', '.join(heavy) if heavy else 'none loaded'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
