"""Benchmark drop-to-inbox latency under the daemon: early takes against the settle wait as before.

One signed 1,000-row police submission at a time is renamed into the outbox of a running
`iom-gateway run` (inotify), and timed until every recipient's signed manifest is in its inbox.
Side by side, alternating drop by drop in one run: this checkout's daemon (a pair whose signature
verifies is taken as soon as both files are closed) and the daemon of --baseline (default
eafb73c, the commit before early takes: every file waits `settle_seconds`), each on a demo root
of its own made by its own code, with the same [daemon] settings. The split (settle, verify,
validate, seal, deliver) comes from this checkout's `event=timing` log line for each drop.

    .venv/bin/python bench/latency.py [--drops 20] [--rows 1000] [--baseline REV|none]
        [--route probation,housing] [--markdown] [--keep]

No timing is asserted; it prints numbers. See bench/README.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import _common  # noqa: E402
from bench._common import platform_line, render_table  # noqa: E402

GPG = "/usr/bin/gpg"
GPGCONF = "/usr/bin/gpgconf"
SAMPLE = ROOT / "samples" / "police-good-2026-10.csv"
SENDER, SIGNER, PERIOD = "police", "police-do", "2026-10"
MARKER = "Attends weekly appointments"  # a free-text cell of the sample, varied per file
POLL = 0.002  # seconds between looks at the inboxes
wait_until = partial(_common.wait_until, step=POLL)
STAGES = ("settle", "verify", "validate", "seal", "deliver")
PROBLEMS = ("Traceback", "level=ERROR", "level=CRITICAL", "outcome=rejected", "outcome=duplicate", "outcome=deferred")
INIT = (
    "import sys; from pathlib import Path; from gateway.admin.init import init_root; "
    "init_root(Path(sys.argv[1]), demo=True)"
)


# ---------------------------------------------------------------- data
def rows_file(rows: int, tag: str) -> bytes:
    """`rows` data rows cycled from the sample (its header first), the first row's free text tagged."""
    with SAMPLE.open(newline="", encoding="utf-8") as handle:
        header, *data = list(csv.reader(handle))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for n in range(rows):
        row = list(data[n % len(data)])
        if n == 0:
            row = [cell.replace(MARKER, f"{MARKER} (ref {tag})", 1) for cell in row]
        writer.writerow(row)
    return out.getvalue().encode("utf-8")


def submission_id(data: bytes) -> str:
    """The id the pipeline derives from the bytes (`process._submission_id`): it names every package."""
    digest = hashlib.sha256(data).hexdigest()
    return hashlib.sha256(f"{SENDER}\0{digest}".encode()).hexdigest()[:20]


# ---------------------------------------------------------------- code under test and roots
@dataclass
class Side:
    """One daemon under test: the code it runs (a folder holding `gateway/`), its root, its log."""

    label: str
    code: Path
    root: Path = field(default=Path())
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(default=Path())
    seconds: list[float] = field(default_factory=list)
    splits: list[dict[str, float]] = field(default_factory=list)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def baseline_code(rev: str, into: Path) -> Path:
    """`gateway/` as of `rev`, extracted from this repository's history (git archive) into `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "gateway"], capture_output=True, check=False)
    if archive.returncode != 0:
        raise RuntimeError(f"git archive {rev} failed: {archive.stderr.decode(errors='replace').strip()}")
    into.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def make_root(side: Side, base: Path, route: Sequence[str]) -> None:
    """A demo root made by the side's own code (`init_root(demo=True)`), police routed to `route`."""
    side.root = base / "r"
    env = os.environ | {"PYTHONPATH": str(side.code)}
    argv = [sys.executable, "-c", INIT, str(side.root)]
    made = subprocess.run(argv, cwd=side.code, env=env, capture_output=True, check=False)
    if made.returncode != 0:
        raise RuntimeError(f"{side.label}: init_root failed: {made.stderr.decode(errors='replace')[-2000:]}")
    toml = side.root / "gateway.toml"
    text = toml.read_text()
    old = f'[agencies.{SENDER}]\nname = "Demo Police"\nkind = "police"\ndelivery = "gpg"'
    if old not in text:
        raise RuntimeError("gateway.toml: cannot find [agencies.police] to give it a route")
    toml.write_text(text.replace(old, old + "\nroute = " + json.dumps(list(route))))


def daemon_settings(root: Path) -> dict[str, str]:
    text = (root / "gateway.toml").read_text()
    table = text.split("[daemon]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'(?m)^(\w+)\s*=\s*"?([\w.]+)"?', table))


def stop_agents(root: Path) -> None:
    officers = root / "keys" / "demo-officers"
    for home in [root / "keys" / "gnupg", *(sorted(officers.iterdir()) if officers.is_dir() else [])]:
        subprocess.run([GPGCONF, "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)


@contextmanager
def running(side: Side) -> Iterator[None]:
    """The side's daemon (`python -m gateway --root R run`, from its code's folder), until stopped."""
    side.log = side.root.parent / "daemon.log"
    env = {k: v for k, v in os.environ.items() if k != "IOM_GATEWAY_UNSAFE_FAULT"} | {"PYTHONPATH": str(side.code)}
    with side.log.open("wb") as stderr:
        process = side.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--root", str(side.root), "run"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=side.code,
        )
    try:
        wait_until(lambda: "event=watching" in side.text() or process.poll() is not None, 60, "watching")
        if process.poll() is not None:
            raise RuntimeError(f"{side.label}: the daemon exited:\n{side.text()[-3000:]}")
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------- drops
@dataclass(frozen=True)
class Drop:
    csv: Path
    signature: Path
    submission: str


def prepare(side: Side, rows: int, tag: str) -> Drop:
    """A varied file written and signed by the police DO (plain gpg, own home) in the root's staging/."""
    staging = side.root / "staging"
    staging.mkdir(exist_ok=True)
    data = rows_file(rows, tag)
    path = staging / f"{SENDER}-lat-{tag}-{PERIOD}.csv"
    path.write_bytes(data)
    home = side.root / "keys" / "demo-officers" / SIGNER
    argv = [GPG, "--homedir", str(home), "--batch", "--no-tty", "--yes", "--output", f"{path}.sig", "--detach-sign"]
    signed = subprocess.run([*argv, str(path)], capture_output=True, check=False)
    if signed.returncode != 0:
        raise RuntimeError(f"gpg --detach-sign failed: {signed.stderr.decode(errors='replace')}")
    return Drop(path, Path(f"{path}.sig"), submission_id(data))


def one_drop(side: Side, drop: Drop, route: Sequence[str]) -> float:
    """Signature, then CSV, each by rename into the outbox; seconds from the CSV's rename until every
    recipient holds its signed manifest. Then wait for the outbox to be cleared, and a moment more."""
    outbox = side.root / "outbox" / SENDER
    manifests = [side.root / "inbox" / r for r in route]

    def delivered() -> bool:
        return all(any(n.endswith(f"{drop.submission}.manifest.json.sig") for n in os.listdir(i)) for i in manifests)

    os.replace(drop.signature, outbox / drop.signature.name)
    start = time.perf_counter()
    os.replace(drop.csv, outbox / drop.csv.name)
    end = wait_until(delivered, 60, f"{side.label}: delivery of {drop.csv.name}")
    wait_until(lambda: not (outbox / drop.csv.name).exists(), 30, "the outbox to be cleared", step=0.02)
    time.sleep(0.2)
    return end - start


def split_of(side: Side, name: str) -> dict[str, float] | None:
    """The stage times (ms) of the timing line for `name`, if the side's code writes one."""
    match = re.search(rf"event=timing agency={SENDER} file={re.escape(repr(name))} outcome=delivered (.*)", side.text())
    return {k: float(v) for k, v in re.findall(r"(\w+)_ms=(\d+)", match[1])} if match else None


def measure(sides: Sequence[Side], args: argparse.Namespace, route: Sequence[str]) -> None:
    """One untimed warm-up drop per side, then --drops drops, alternating sides drop by drop."""
    for side in sides:
        side.seconds.append(one_drop(side, prepare(side, args.rows, f"{side.label[:4]}-warm"), route))
        side.seconds.clear()
    for n in range(args.drops):
        for side in sides if n % 2 == 0 else list(reversed(sides)):
            drop = prepare(side, args.rows, f"{side.label[:4]}-{n}")
            side.seconds.append(one_drop(side, drop, route))
            split = split_of(side, drop.csv.name)
            if split is not None:
                side.splits.append(split)
            elif side.code == ROOT:
                raise RuntimeError(f"{side.label}: no event=timing line for {drop.csv.name}")
        print(f"drop {n + 1}/{args.drops}: " + ", ".join(f"{s.label} {s.seconds[-1]:.3f} s" for s in sides), flush=True)


def anomalies(side: Side, route: Sequence[str], expected: int) -> list[str]:
    """Problems in the side's log, and any submission with other than one package in an inbox."""
    found = []
    for needle in PROBLEMS:
        hits = [line for line in side.text().splitlines() if needle in line]
        if hits:
            found.append(f"{side.label}: {len(hits)} log line(s) with {needle!r}, e.g. {hits[0][:300]}")
    for recipient in route:
        names = [n for n in os.listdir(side.root / "inbox" / recipient) if n.endswith(".manifest.json.sig")]
        if len(names) != expected or len(set(names)) != expected:
            found.append(f"{side.label}: {recipient} holds {len(names)} signed manifests, not {expected}")
    if side.process is not None and side.process.returncode != 0:
        found.append(f"{side.label}: the daemon exited {side.process.returncode} after SIGTERM")
    return found


# ---------------------------------------------------------------- report
def p95(values: Sequence[float]) -> float:
    if len(values) < 2:
        return max(values)
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def render(sides: Sequence[Side], args: argparse.Namespace, settle: str) -> str:
    ours, before = sides[0], sides[1] if len(sides) > 1 else None
    head = ["drop-to-inbox", ours.label] + ([before.label, "ratio (before / ours)"] if before else [])
    rows = [head]
    for name, pick in (("p50", statistics.median), ("p95", p95), ("min", min), ("max", max)):
        row = [name, f"{pick(ours.seconds):.3f} s"]
        if before:
            row += [f"{pick(before.seconds):.3f} s", f"{pick(before.seconds) / pick(ours.seconds):.1f}x"]
        rows.append(row)
    out = [render_table(rows, args.markdown), ""]
    if ours.splits:
        split = [["stage (ours, from `event=timing`)", "median ms", "p95 ms", "share of p50 latency"]]
        p50 = statistics.median(ours.seconds) * 1000
        for stage in STAGES:
            values = [s.get(stage, 0.0) for s in ours.splits]
            median = statistics.median(values)
            share = f"{median / p50:.0%}" if stage != "deliver" else "after: not in the latency"
            split.append([stage, f"{median:.0f}", f"{p95(values):.0f}", share])
        out += [render_table(split, args.markdown), ""]
    if before:
        processing = [s - float(settle) for s in before.seconds]
        out.append(
            f"{before.label}: every drop waits settle_seconds = {settle}; latency minus that wait: median "
            f"{statistics.median(processing) * 1000:.0f} ms (it writes no timing line)."
        )
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--drops", type=int, default=20, help="timed drops per daemon, alternating (20)")
    p.add_argument("--rows", type=int, default=1000, help="data rows per file (1000)")
    p.add_argument("--baseline", default="eafb73c", help="git revision to compare with, or none (eafb73c)")
    p.add_argument("--route", default="probation,housing", help="police's recipients (probation,housing)")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--keep", action="store_true", help="keep the scratch roots and daemon logs")
    args = p.parse_args(argv)
    if args.drops < 1 or args.rows < 1:
        p.error("--drops and --rows must be 1 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    route = [r for r in args.route.split(",") if r]
    load_before = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="iomlat", dir="/tmp"))  # gpg-agent socket paths stay short
    sides = [Side("ours (early takes)", ROOT)]
    try:
        if args.baseline != "none":
            sides.append(Side(f"before ({args.baseline}, settle)", baseline_code(args.baseline, scratch / "code")))
        for n, side in enumerate(sides):
            make_root(side, scratch / f"s{n}", route)
        settle = daemon_settings(sides[0].root).get("settle_seconds", "?")
        with ExitStack() as stack:
            for side in sides:
                stack.enter_context(running(side))
            measure(sides, args, route)
        problems = [line for side in sides for line in anomalies(side, route, args.drops + 1)]
    except RuntimeError as exc:
        print(f"bench/latency.py: {exc}", file=sys.stderr)
        return 2
    finally:
        for side in sides:
            if side.root != Path():
                stop_agents(side.root)
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{platform_line()}")
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {args.drops} drops each of {args.rows} rows, route "
        f"{SENDER} -> {', '.join(route)}, inotify, settle_seconds = {settle}; 1-minute load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    bytecode = os.environ.get("PYTHONDONTWRITEBYTECODE")
    print(
        f"PYTHONDONTWRITEBYTECODE={bytecode or '(unset)'}: no start-up is timed (each daemon is up, and has taken "
        "one untimed warm-up drop, before the first timed drop)\n"
    )
    print(render(sides, args, settle))
    for line in problems:
        print(f"ANOMALY: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
