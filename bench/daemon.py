"""Benchmark the daemon (`iom-gateway run`) against the gpg CLI alone.

Measures, in one run, on scratch demo roots (`init_root(demo=True)`, police routed to
--route, the repository's [daemon] defaults unless a row says otherwise):

1. drop-to-inbox latency: one signed submission renamed into the outbox of a running
   daemon, until every recipient's `.manifest.json.sig` exists (median and p90);
2. a burst of --files distinct small submissions: files/s, against the same
   cryptographic work done by sequential `gpg` processes;
3. sealing throughput on a --size-mb MiB file: `gateway.exchange.process.process_once`
   in-process, against `gpg --encrypt --sign -z 1` to the same recipients;
4. the daemon's peak RSS (/proc/PID/status VmHWM) idle, after a small file and after
   the big one.

    .venv/bin/python bench/daemon.py [--files 200] [--latency-runs 10] [--size-mb 20]
        [--repeat 3] [--route probation,housing] [--keep]

No timing is asserted; it prints numbers. See bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import _common  # noqa: E402
from gateway.admin.init import init_root  # noqa: E402
from gateway.exchange.outcome import Delivered  # noqa: E402
from gateway.exchange.process import check_file, process_once  # noqa: E402
from gateway.state.root import Root  # noqa: E402

GPG = "/usr/bin/gpg"
GPGCONF = "/usr/bin/gpgconf"
SAMPLE = ROOT / "samples" / "police-good-2026-10.csv"
SENDER = "police"
SIGNER = "police-do"
PERIOD = "2026-10"
MARKER = b"Attends weekly appointments"  # a free-text cell of the sample's first data row, varied per file
POLL = 0.005  # seconds between looks at the inboxes
wait_until = partial(_common.wait_until, step=POLL)
MAX_FILE_BYTES = 256 * 1024 * 1024  # the default [limits] max_file_bytes
PROBLEMS = ("Traceback", "level=ERROR", "level=CRITICAL", "outcome=rejected", "outcome=duplicate", "outcome=deferred")


# ---------------------------------------------------------------- data
@dataclass(frozen=True)
class Sample:
    """The sample submission split into its header line and its data rows (bytes, as written)."""

    header: bytes
    data: bytes

    @classmethod
    def load(cls, path: Path = SAMPLE) -> Sample:
        raw = path.read_bytes()
        header, data = raw.split(b"\n", 1)
        if data.count(MARKER) != 1:
            raise RuntimeError(f"{path}: expected {MARKER!r} exactly once in its data rows")
        return cls(header + b"\n", data)

    def variant(self, tag: str, repeats: int = 1) -> bytes:
        """Header plus the data rows `repeats` times; the first row's Engagement cell carries `tag`."""
        first = self.data.replace(MARKER, MARKER + f" (ref {tag})".encode(), 1)
        return self.header + first + self.data * (repeats - 1)

    def repeats_for(self, size: int) -> int:
        """How many copies of the data rows make a file of at least `size` bytes."""
        return max(1, -(-(size - len(self.header)) // len(self.data)))


def submission_id(data: bytes, agency: str = SENDER) -> str:
    """The id the pipeline derives from the bytes (`process._submission_id`): it names every package."""
    digest = hashlib.sha256(data).hexdigest()
    return hashlib.sha256(f"{agency}\0{digest}".encode()).hexdigest()[:20]


# ---------------------------------------------------------------- roots
def short_dir() -> Path:
    """A folder under /tmp: gpg-agent's socket path in each GnuPG home must stay under 108 bytes."""
    return Path(tempfile.mkdtemp(prefix="iom", dir="/tmp"))


def make_template(route: Sequence[str]) -> Path:
    """A demo root where police routes to `route`; the repository's [daemon] settings otherwise."""
    path = short_dir() / "root"
    init_root(path, demo=True)
    toml = path / "gateway.toml"
    text = toml.read_text()
    old = f'[agencies.{SENDER}]\nname = "Demo Police"\nkind = "police"\ndelivery = "gpg"'
    if old not in text:
        raise RuntimeError("gateway.toml: cannot find [agencies.police] to give it a route")
    toml.write_text(text.replace(old, old + "\nroute = " + json.dumps(list(route))))
    return path


def daemon_settings(root: Path) -> dict[str, str]:
    """The [daemon] table's values as written in gateway.toml."""
    text = (root / "gateway.toml").read_text()
    table = text.split("[daemon]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'(?m)^(\w+)\s*=\s*"?([\w.]+)"?', table))


def set_daemon(root: Path, **values: object) -> None:
    """Rewrite keys of the [daemon] table in place (the root must not have a daemon running)."""
    toml = root / "gateway.toml"
    text = toml.read_text()
    for key, value in values.items():
        literal = f'"{value}"' if isinstance(value, str) else str(value)
        text, n = re.subn(rf"(?m)^{key}\s*=\s*\S+", f"{key} = {literal}", text)
        if n != 1:
            raise RuntimeError(f"gateway.toml: cannot set daemon.{key}")
    toml.write_text(text)


def homes(root: Path) -> list[Path]:
    """Every GnuPG home of a demo root: the gateway's and each demo officer's."""
    officers = root / "keys" / "demo-officers"
    return [root / "keys" / "gnupg", *(sorted(officers.iterdir()) if officers.is_dir() else [])]


def stop_agents(root: Path) -> None:
    """Stop the gpg-agent that gpg started in each GnuPG home of `root`."""
    for home in homes(root):
        subprocess.run([GPGCONF, "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)


@contextmanager
def copy_of(template: Path, keep: bool) -> Iterator[Path]:
    """A fresh copy of the template root (without agent sockets); its agents stopped afterwards."""
    path = short_dir() / "r"
    shutil.copytree(template, path, symlinks=True, ignore=shutil.ignore_patterns("S.gpg-agent*"))
    try:
        yield path
    finally:
        stop_agents(path)
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path.parent, ignore_errors=True)


# ---------------------------------------------------------------- gpg
def gpg(home: Path, *args: str) -> None:
    """Plain `gpg --homedir HOME --batch --no-tty --yes ARGS`; raise RuntimeError on failure."""
    argv = [GPG, "--homedir", str(home), "--batch", "--no-tty", "--yes", *args]
    result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.decode(errors='replace')}")


def sign(root: Path, path: Path) -> Path:
    """A detached signature by the police DO, made with the officer's own GnuPG home."""
    home = root / "keys" / "demo-officers" / SIGNER
    gpg(home, "--output", str(path) + ".sig", "--detach-sign", str(path))
    return Path(str(path) + ".sig")


@dataclass
class Recipients:
    """Who a police submission goes to, and the officers' fingerprints the gpg peer encrypts to."""

    gateway: str
    officers: dict[str, list[str]]

    @classmethod
    def of(cls, root_path: Path) -> Recipients:
        root = Root.open(root_path)
        try:
            sender = root.config.agencies[SENDER]
            officers = {
                a.id: [o.fingerprint for o in root.registry.all(a.id) if o.active]
                for a in root.config.recipients(sender)
            }
            return cls(str(root.gateway_key()), officers)
        finally:
            root.close()


def peer_seal(root: Path, csv_path: Path, signature: Path, out: Path, recipients: Recipients) -> None:
    """What the pipeline does for one file, with the gpg CLI alone, as sequential processes.

    Verify the sender's signature; per recipient agency, encrypt and sign to its officers'
    keys, write a small manifest and sign it detached. Uses the gateway's keyring.
    """
    home = root / "keys" / "gnupg"
    gpg(home, "--verify", str(signature), str(csv_path))
    for agency, fingerprints in recipients.officers.items():
        payload = out / f"{csv_path.name}.{agency}.gpg"
        args = ["--trust-model", "always", "-z", "1", "--cipher-algo", "AES256", "--local-user", recipients.gateway]
        for fingerprint in fingerprints:
            args += ["--recipient", fingerprint]
        gpg(home, *args, "--output", str(payload), "--encrypt", "--sign", str(csv_path))
        manifest = out / f"{csv_path.name}.{agency}.manifest.json"
        digest = hashlib.sha256(payload.read_bytes()).hexdigest()
        manifest.write_text(json.dumps({"payload": payload.name, "payload_sha256": digest, "recipient": agency}))
        gpg(
            home,
            "--local-user",
            recipients.gateway,
            "--output",
            str(manifest) + ".sig",
            "--detach-sign",
            str(manifest),
        )


# ---------------------------------------------------------------- daemon
class Daemon:
    """`python -m gateway --root R run` as a subprocess, its stderr (key=value lines) in a file."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root = root
        self.log = log
        env = {k: v for k, v in os.environ.items() if k != "IOM_GATEWAY_UNSAFE_FAULT"}
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "--root", str(root), "run"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=ROOT,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def ready(self, timeout: float = 60) -> Daemon:
        """Wait for `event=watching` (recovered, signal handlers in place, watcher started)."""
        wait_until(lambda: "event=watching" in self.text() or self.process.poll() is not None, timeout, "watching")
        if self.process.poll() is not None:
            raise RuntimeError(f"the daemon exited {self.process.returncode}:\n{self.text()[-3000:]}")
        return self

    def vmhwm_kib(self) -> int:
        """Peak resident set size so far (the daemon's Python process; its gpg children not counted)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"(?m)^VmHWM:\s+(\d+) kB", status)
        if match is None:
            raise RuntimeError("no VmHWM in /proc/PID/status")
        return int(match[1])

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise RuntimeError(
                f"the daemon did not stop within {timeout} s after SIGTERM:\n{self.text()[-3000:]}"
            ) from None


@contextmanager
def running(root: Path, log: Path, anomalies: list[str], label: str) -> Iterator[Daemon]:
    """A ready daemon on `root`; stopped afterwards, its log checked for problems."""
    daemon = Daemon(root, log).ready()
    try:
        yield daemon
    finally:
        code = daemon.stop()
        text = daemon.text()
        if code != 0:
            anomalies.append(f"{label}: the daemon exited {code} after SIGTERM (log {log})")
        for needle in PROBLEMS:
            hits = [line for line in text.splitlines() if needle in line]
            if hits:
                anomalies.append(f"{label}: {len(hits)} log line(s) with {needle!r}, e.g. {hits[0][:300]}")


def signed_manifests(inbox: Path) -> set[str]:
    """Submission ids with a `.manifest.json.sig` in one recipient's inbox."""
    suffix = ".manifest.json.sig"
    return {n[: -len(suffix)].rsplit("__", 1)[-1] for n in os.listdir(inbox) if n.endswith(suffix)}


def outbox_csvs(root: Path) -> list[str]:
    return [n for n in os.listdir(root / "outbox" / SENDER) if n.lower().endswith(".csv")]


@dataclass
class Drop:
    """A submission written and signed in the root's staging folder, ready to be renamed into the outbox."""

    csv: Path
    signature: Path
    submission: str

    def rename_into(self, outbox: Path) -> None:
        """Signature first, then the CSV, each by rename (as an agency's export should)."""
        os.replace(self.signature, outbox / self.signature.name)
        os.replace(self.csv, outbox / self.csv.name)


def prepare(root: Path, sample: Sample, tags: Iterable[str], repeats: int = 1, workers: int = 4) -> list[Drop]:
    """Write one variant per tag into root/staging and sign each (in parallel: not timed)."""
    staging = root / "staging"
    staging.mkdir(exist_ok=True)

    def one(tag: str) -> Drop:
        data = sample.variant(tag, repeats)
        path = staging / f"{SENDER}-bench-{tag}-{PERIOD}.csv"
        path.write_bytes(data)
        return Drop(path, sign(root, path), submission_id(data))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, list(tags)))


def delivered_everywhere(root: Path, recipients: Sequence[str], subs: set[str]) -> Callable[[], bool]:
    inboxes = [root / "inbox" / r for r in recipients]
    return lambda: all(subs <= signed_manifests(i) for i in inboxes)


def settle_after(root: Path) -> None:
    """Wait until the daemon removed the delivered CSV from the outbox, then a moment more."""
    wait_until(lambda: not outbox_csvs(root), 30, "the outbox to be cleared", step=0.02)
    time.sleep(0.2)


# ---------------------------------------------------------------- measurements
@dataclass
class Results:
    """Everything measured, for the table."""

    latency: list[tuple[str, list[float]]] = field(default_factory=list)
    burst: dict[str, float] = field(default_factory=dict)
    seal: dict[str, list[float]] = field(default_factory=dict)
    big_bytes: int = 0
    big_rows: int = 0
    memory: dict[str, float] = field(default_factory=dict)
    anomalies: list[str] = field(default_factory=list)


def measure_latency(
    root: Path, sample: Sample, recipients: Sequence[str], runs: int, label: str, counter: Iterator[int]
) -> list[float]:
    """Drop `runs` signed files one at a time into the running daemon's outbox; seconds each."""
    outbox = root / "outbox" / SENDER
    seconds = []
    for drop in prepare(root, sample, [f"lat{next(counter)}" for _ in range(runs)]):
        done = delivered_everywhere(root, recipients, {drop.submission})
        start = time.perf_counter()
        drop.rename_into(outbox)
        end = wait_until(done, 60, f"{label}: delivery of {drop.csv.name}")
        seconds.append(end - start)
        settle_after(root)
    return seconds


def latency_phase(
    template: Path, sample: Sample, recipients: Sequence[str], args: argparse.Namespace, results: Results
) -> None:
    """Latency under four daemon settings, then the daemon's memory on a small and a big file."""
    counter = iter(range(1_000_000))
    with copy_of(template, args.keep) as root:
        configured = daemon_settings(root)
        settle, poll = int(configured["settle_seconds"]), configured["poll_seconds"]
        variants: list[tuple[str, dict[str, object]]] = [
            (f"inotify, settle {settle} s (configured)", {"watcher": "inotify", "settle_seconds": settle}),
            ("inotify, settle 1 s (lowest allowed)", {"watcher": "inotify", "settle_seconds": 1}),
            (f"polling every {poll} s, settle {settle} s", {"watcher": "polling", "settle_seconds": settle}),
            (f"polling every {poll} s, settle 1 s", {"watcher": "polling", "settle_seconds": 1}),
        ]
        for n, (label, values) in enumerate(variants):
            set_daemon(root, **values)
            with running(root, root.parent / f"latency-{n}.log", results.anomalies, f"latency {label}"):
                times = measure_latency(root, sample, recipients, args.latency_runs, label, counter)
            results.latency.append((label, times))
            print(f"latency {label}: median {statistics.median(times):.3f} s over {len(times)}", flush=True)
        set_daemon(root, watcher="inotify", settle_seconds=settle)
        memory_phase(root, sample, recipients, args, results, settle)
        check_inboxes(root, recipients, results, "latency root")


def memory_phase(
    root: Path, sample: Sample, recipients: Sequence[str], args: argparse.Namespace, results: Results, settle: int
) -> None:
    """A fresh daemon: VmHWM idle, after one small file, after the --size-mb file."""
    outbox = root / "outbox" / SENDER
    small = prepare(root, sample, ["mem-small"])[0]
    big = prepare(root, sample, ["mem-big"], sample.repeats_for(args.size_mb * 2**20))[0]
    big_bytes = big.csv.stat().st_size
    with running(root, root.parent / "memory.log", results.anomalies, "memory") as daemon:
        results.memory["idle"] = daemon.vmhwm_kib() / 1024
        small.rename_into(outbox)
        wait_until(delivered_everywhere(root, recipients, {small.submission}), 60, "the small file")
        settle_after(root)
        results.memory["small"] = daemon.vmhwm_kib() / 1024
        start = time.perf_counter()
        big.rename_into(outbox)
        end = wait_until(delivered_everywhere(root, recipients, {big.submission}), 600, "the big file")
        settle_after(root)
        results.memory["big"] = daemon.vmhwm_kib() / 1024
    results.memory["big_seconds"] = end - start
    results.memory["big_mib"] = big_bytes / 2**20
    results.memory["settle"] = settle
    print(f"daemon VmHWM MiB: {results.memory}", flush=True)


def burst_phase(
    template: Path, sample: Sample, recipients: Recipients, args: argparse.Namespace, results: Results
) -> None:
    """--files distinct small files renamed into the outbox at once; then the gpg CLI on the same files."""
    names = list(recipients.officers)
    with copy_of(template, args.keep) as root:
        outbox = root / "outbox" / SENDER
        drops = prepare(root, sample, [f"burst{i:05d}" for i in range(args.files)])
        peer_in = root.parent / "peer-in"
        peer_in.mkdir()
        for drop in drops:  # the peer's copies: the daemon deletes what it delivered
            shutil.copyfile(drop.csv, peer_in / drop.csv.name)
            shutil.copyfile(drop.signature, peer_in / drop.signature.name)
        subs = {d.submission for d in drops}
        inboxes = [root / "inbox" / r for r in names]
        with running(root, root.parent / "burst.log", results.anomalies, "burst") as daemon:
            start = time.perf_counter()
            for drop in drops:
                drop.rename_into(outbox)
            renamed = time.perf_counter()
            first: float | None = None
            deadline = start + 60 + args.files * 2
            while True:
                got = [signed_manifests(i) & subs for i in inboxes]
                now = time.perf_counter()
                if first is None and any(got):
                    first = now
                if all(len(g) == len(subs) for g in got) and not outbox_csvs(root):
                    break
                if now > deadline:
                    raise RuntimeError(
                        f"burst: {min(len(g) for g in got)}/{len(subs)} delivered after {now - start:.0f} s"
                    )
                time.sleep(POLL)
            end = now
        delivered = daemon.text().count("outcome=delivered")  # once stopped: the last line follows the removal
        if delivered != args.files:
            results.anomalies.append(f"burst: {delivered} 'outcome=delivered' log lines for {args.files} files")
        check_inboxes(root, names, results, "burst root")
        results.burst.update(
            seconds=end - start,
            rename_seconds=renamed - start,
            first=(first or end) - start,
            rate=args.files / (end - start),
            steady=(args.files - 1) / (end - (first or start)) if args.files > 1 else float("nan"),
        )
        print(f"burst: {args.files} files in {end - start:.2f} s (first delivered at {first and first - start:.2f} s)")
        peer_out = root.parent / "peer-out"
        peer_out.mkdir()
        start = time.perf_counter()
        for drop in drops:
            csv_path = peer_in / drop.csv.name
            peer_seal(root, csv_path, peer_in / drop.signature.name, peer_out, recipients)
        seconds = time.perf_counter() - start
        results.burst.update(peer_seconds=seconds, peer_rate=args.files / seconds)
        print(f"burst peer (gpg CLI): {args.files} files in {seconds:.2f} s", flush=True)


def seal_phase(
    template: Path, sample: Sample, recipients: Recipients, args: argparse.Namespace, results: Results
) -> None:
    """The --size-mb file: process_once in this process vs the gpg CLI, median of --repeat, interleaved."""
    repeats = sample.repeats_for(args.size_mb * 2**20)
    ours, validate, peer = [], [], []
    with copy_of(template, args.keep) as path:
        outbox = path / "outbox" / SENDER
        peer_out = path.parent / "peer-out"
        peer_out.mkdir()
        root = Root.open(path)
        try:
            for n in range(args.repeat):
                drop = prepare(path, sample, [f"big{n}"], repeats)[0]
                results.big_bytes = drop.csv.stat().st_size
                if results.big_bytes > MAX_FILE_BYTES:
                    raise RuntimeError(f"--size-mb {args.size_mb} is over limits.max_file_bytes (256 MiB)")
                # the peer first, while the files are still in staging (the pipeline deletes what it delivers)
                start = time.perf_counter()
                peer_seal(path, drop.csv, drop.signature, peer_out, recipients)
                peer.append(time.perf_counter() - start)
                start = time.perf_counter()
                report = check_file(root, drop.csv, SENDER, None, datetime.now(UTC).date())
                validate.append(time.perf_counter() - start)
                if not report.valid:
                    raise RuntimeError(f"{drop.csv.name} is not valid: {dict(report.counts)}")
                results.big_rows = report.rows
                drop.rename_into(outbox)
                start = time.perf_counter()
                outcomes = process_once(root, datetime.now(UTC))
                ours.append(time.perf_counter() - start)
                if [type(o).__name__ for o in outcomes] != ["Delivered"] or not isinstance(outcomes[0], Delivered):
                    raise RuntimeError(f"process_once: {[o.summary for o in outcomes]}")
                for p in peer_out.iterdir():
                    p.unlink()
                print(f"seal {n}: ours {ours[-1]:.2f} s, validate {validate[-1]:.2f} s, gpg {peer[-1]:.2f} s")
        finally:
            root.close()
        check_inboxes(path, list(recipients.officers), results, "seal root")
    results.seal = {"ours": ours, "validate": validate, "peer": peer}


def check_inboxes(root: Path, recipients: Sequence[str], results: Results, label: str) -> None:
    """Every submission delivered at most once per recipient: one payload, one manifest, one signature."""
    for recipient in recipients:
        names = os.listdir(root / "inbox" / recipient)
        for suffix in (".manifest.json.sig", ".manifest.json", ".csv.gpg", ".zip"):
            subs = [n[: -len(suffix)].rsplit("__", 1)[-1] for n in names if n.endswith(suffix)]
            doubled = {s for s in subs if subs.count(s) > 1}
            if doubled:
                results.anomalies.append(f"{label}: {recipient} has {suffix} twice for {sorted(doubled)[:3]}")
        stray = [n for n in names if n.startswith(".") or n.endswith(".tmp")]
        if stray:
            results.anomalies.append(f"{label}: temp files left in inbox/{recipient}: {stray[:3]}")


# ---------------------------------------------------------------- report
def machine_info() -> str:
    """CPUs, Python, platform, gpg and libgcrypt versions, iom-gateway version."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = subprocess.run([GPG, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()
    gcrypt = next((line for line in lines if line.startswith("libgcrypt")), "libgcrypt ?")
    try:
        ours = metadata.version("iom-gateway")
    except metadata.PackageNotFoundError:
        ours = "?"
    return (
        f"nproc {cpus}, Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()} {platform.machine()}, {lines[0] if lines else 'gpg ?'}, "
        f"{gcrypt}, iom-gateway {ours}"
    )


def p90(values: Sequence[float]) -> float:
    if len(values) < 2:
        return max(values)
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def render(results: Results, args: argparse.Namespace, route: Sequence[str]) -> str:
    """The Markdown table."""
    rows = [["measure", "iom-gateway", "gpg CLI alone", "notes"]]
    for label, times in results.latency:
        rows.append(
            [
                f"drop-to-inbox latency, {label}",
                f"median {statistics.median(times):.2f} s, p90 {p90(times):.2f} s",
                "-",
                f"{len(times)} drops, daemon; min {min(times):.2f} s",
            ]
        )
    b = results.burst
    rows.append(
        [
            f"burst of {args.files} small files (7 rows)",
            f"{b['rate']:.1f} files/s ({b['seconds']:.1f} s)",
            f"{b['peer_rate']:.1f} files/s ({b['peer_seconds']:.1f} s)",
            f"daemon, from first rename to all delivered; first delivery at {b['first']:.2f} s "
            f"(settle); renames took {b['rename_seconds'] * 1000:.0f} ms",
        ]
    )
    rows.append(
        [
            f"burst of {args.files}, after the first delivery",
            f"{b['steady']:.1f} files/s",
            f"{b['peer_rate']:.1f} files/s",
            "the daemon's rate once the settle wait is over",
        ]
    )
    mib = results.big_bytes / 2**20
    seal = results.seal
    rows.append(
        [
            f"sealing a {mib:.0f} MiB file ({results.big_rows:,} rows)",
            f"{mib / statistics.median(seal['ours']):.1f} MiB/s ({statistics.median(seal['ours']):.2f} s)",
            f"{mib / statistics.median(seal['peer']):.1f} MiB/s ({statistics.median(seal['peer']):.2f} s)",
            f"`process_once` in-process (verify, validate, seal, manifests), median of {args.repeat}",
        ]
    )
    rows.append(
        [
            "  of which: validation alone",
            f"{mib / statistics.median(seal['validate']):.1f} MiB/s ({statistics.median(seal['validate']):.2f} s)",
            "-",
            "`check_file` in-process, same file",
        ]
    )
    m = results.memory
    rows.append(
        [
            f"daemon, {m['big_mib']:.0f} MiB file drop-to-inbox",
            f"{m['big_seconds']:.2f} s ({m['big_mib'] / max(m['big_seconds'] - m['settle'], 1e-9):.1f} MiB/s "
            f"net of the {m['settle']:.0f} s settle)",
            "-",
            "inotify",
        ]
    )
    rows.append(
        [
            "daemon peak RSS (VmHWM)",
            f"{m['idle']:.0f} MiB idle, {m['small']:.0f} after a 7-row file, {m['big']:.0f} after the "
            f"{m['big_mib']:.0f} MiB file",
            "-",
            "the daemon's Python process; its gpg children not counted",
        ]
    )
    out = [
        "| " + " | ".join(rows[0]) + " |",
        "|---|---:|---:|---|",
        *("| " + " | ".join(r) + " |" for r in rows[1:]),
    ]
    notes = [
        "",
        f"Route: police -> {', '.join(route)}. The gpg CLI does, per file, sequentially: `gpg --verify` of the "
        f"sender's signature, then per recipient `gpg --encrypt --sign -z 1 --cipher-algo AES256 --trust-model "
        f"always` to its officers' keys and a detached signature of a small manifest "
        f"({1 + 2 * len(route)} gpg processes). Where a recipient takes AES-ZIP, the gateway writes the ZIP "
        f"in-process instead of a gpg encryption.",
    ]
    return "\n".join(out + notes)


# ---------------------------------------------------------------- main
def preflight(template: Path, sample: Sample) -> None:
    """A varied small file must be valid Table 1 data for police (else every drop would be rejected)."""
    path = template.parent / f"{SENDER}-check-{PERIOD}.csv"
    path.write_bytes(sample.variant("check"))
    root = Root.open(template)
    try:
        report = check_file(root, path, SENDER, None, datetime.now(UTC).date())
    finally:
        root.close()
    if not report.valid:
        raise RuntimeError(f"the varied sample is not valid Table 1 data: {dict(report.counts)}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=200, help="small files in the burst (200)")
    p.add_argument("--latency-runs", type=int, default=10, help="drops per latency setting (10)")
    p.add_argument("--size-mb", type=int, default=20, help="the big file, MiB (20; at most 255)")
    p.add_argument("--repeat", type=int, default=3, help="runs of the big-file sealing, median (3)")
    p.add_argument("--route", default="probation,housing", help="police's recipients (probation,housing)")
    p.add_argument("--keep", action="store_true", help="keep the scratch roots and daemon logs")
    args = p.parse_args(argv)
    if args.files < 1 or args.latency_runs < 1 or args.repeat < 1 or not 1 <= args.size_mb <= 255:
        p.error("--files, --latency-runs and --repeat must be 1 or more, --size-mb 1 to 255")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 done (anomalies are printed, not fatal), 2 a step failed."""
    args = parse_args(argv)
    route = [r.strip() for r in args.route.split(",") if r.strip()]
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    print(machine_info(), flush=True)
    sample = Sample.load()
    template = make_template(route)
    results = Results()
    try:
        preflight(template, sample)
        recipients = Recipients.of(template)
        stop_agents(template)
        latency_phase(template, sample, route, args, results)
        burst_phase(template, sample, recipients, args, results)
        seal_phase(template, sample, recipients, args, results)
    except RuntimeError as exc:
        print(f"bench/daemon.py: {exc}", file=sys.stderr)
        return 2
    finally:
        stop_agents(template)
        if args.keep:
            print(f"kept {template}")
        else:
            shutil.rmtree(template.parent, ignore_errors=True)
    print(f"\n{machine_info()}")
    load = f"1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after"
    print(f"{datetime.now(UTC):%Y-%m-%d}, total {time.perf_counter() - started:.0f} s, {load}\n")
    print(render(results, args, route))
    for line in results.anomalies:
        print(f"ANOMALY: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
