"""Benchmark sealing: `iom-gateway run --once` against the gpg and 7z CLIs doing the same work.

For each --sizes file (a realistic police CSV from bench/validate.py's generator, every row valid,
signed by the demo police DO), on a fresh copy of a demo root (police -> the demo's 5 recipients:
3 OpenPGP agencies, 2 AES-ZIP ones), alternating, median of --repeat:

- ours: `python -m gateway --root R run --once` as a whole process (verify, validate, seal,
  deliver: 5 packages, 5 signed manifests, journal, audit);
- the peer, serial, as the issue measured it: `gpg --verify` + per OpenPGP agency
  `gpg --encrypt --sign -z 1 --cipher-algo AES256` to its officers + per ZIP agency
  `7z a -tzip -mem=AES256 -mx1`. The peer validates nothing and writes no manifest.

Wall clock and peak RSS (`os.wait4` ru_maxrss) of each child; the peer's RSS is its largest process.
PYTHONDONTWRITEBYTECODE is removed from our child's environment and gateway/ is byte-compiled
first, so the start-up measured is an installed one (see bench/README.md).

    .venv/bin/python bench/seal.py [--sizes 20MiB,200MiB] [--repeat 3] [--markdown] [--keep]
    .venv/bin/python bench/seal.py --size 1GiB --repeat 1      # time and peak RSS at 1 GiB
    .venv/bin/python bench/seal.py --baseline /tmp/before      # also an older checkout, alternating

No timing is asserted anywhere; it prints numbers.
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import platform_line, render_table  # noqa: E402
from bench.validate import generate_csv  # noqa: E402
from gateway.admin.init import init_root  # noqa: E402
from gateway.core.model import Delivery  # noqa: E402
from gateway.state.root import Root  # noqa: E402

GPG, GPGCONF, SEVEN_ZIP = "/usr/bin/gpg", "/usr/bin/gpgconf", "/usr/bin/7z"
PYTHON = ROOT / ".venv" / "bin" / "python"
SENDER, SIGNER, PERIOD = "police", "police-do", "2026-10"
BYTES_PER_ROW = 437  # the generator's `typical` profile, about; the file is then cut to size by rows
UNITS = {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """'20MiB', '1GiB', '512KiB' or a byte count."""
    match = re.fullmatch(r"(\d+)\s*([KMG]iB)?", text.strip(), re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write e.g. 20MiB or 1GiB")
    return int(match[1]) * UNITS.get((match[2] or "").upper(), 1)


def shown_size(size: int) -> str:
    return f"{size / 2**30:g} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


@dataclass
class Plan:
    """Who the police file goes to: OpenPGP agencies with their officers, ZIP agencies."""

    gateway: str
    gpg: dict[str, list[str]]
    zips: list[str]

    @classmethod
    def of(cls, path: Path) -> Plan:
        root = Root.open(path)
        try:
            recipients = root.config.recipients(root.config.agencies[SENDER])
            officers = {
                a.id: [o.fingerprint for o in root.registry.all(a.id) if o.active]
                for a in recipients
                if a.delivery is Delivery.GPG
            }
            zips = [a.id for a in recipients if a.delivery is Delivery.AES_ZIP]
            return cls(str(root.gateway_key()), officers, zips)
        finally:
            root.close()


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(self.seconds)


def run(argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, int]:
    """Run argv to completion (output discarded, a failure raised); wall seconds and ru_maxrss KiB."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd
    )
    err = proc.stderr.read() if proc.stderr is not None else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{argv[0]} {' '.join(argv[1:4])} ... exited {code}: {err.decode(errors='replace')[-800:]}")
    return seconds, usage.ru_maxrss


def gpg(home: Path, *args: str) -> tuple[float, int]:
    return run([GPG, "--homedir", str(home), "--batch", "--no-tty", "--yes", *args])


def stop_agents(root: Path) -> None:
    officers = root / "keys" / "demo-officers"
    for home in [root / "keys" / "gnupg", *(officers.iterdir() if officers.is_dir() else [])]:
        subprocess.run([GPGCONF, "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)


def make_template(work: Path, max_bytes: int) -> Path:
    """A demo root (police routes to every other agency) whose file and row limits admit `max_bytes`."""
    path = work / "template"
    init_root(path, demo=True)
    toml = path / "gateway.toml"
    text = toml.read_text()
    text = text.replace("pairing_timeout_seconds = 300", "pairing_timeout_seconds = 0")
    for key, value in (("max_file_bytes", max(max_bytes, 2**28)), ("max_rows", max(max_bytes // 200, 10**6))):
        text, n = re.subn(rf"(?m)^{key}\s*=\s*\d+", f"{key} = {value}", text)
        if n != 1:
            raise RuntimeError(f"gateway.toml: cannot set limits.{key}")
    toml.write_text(text)
    return path


@contextmanager
def copy_of(template: Path, work: Path, keep: bool) -> Iterator[Path]:
    """A fresh copy of the template (no agent sockets), so every run seals a first submission."""
    path = Path(tempfile.mkdtemp(prefix="r", dir=work)) / "r"
    shutil.copytree(template, path, symlinks=True, ignore=shutil.ignore_patterns("S.gpg-agent*"))
    try:
        yield path
    finally:
        stop_agents(path)
        if not keep:
            shutil.rmtree(path.parent, ignore_errors=True)


def make_csv(work: Path, size: int, seed: int) -> Path:
    """A valid police CSV of about `size` bytes, signed detached by the police DO (made once per size)."""
    path = work / f"police-bench-{size}-{PERIOD}.csv"
    rows = max(10, size // BYTES_PER_ROW)
    generate_csv(path, rows, seed, invalid_rate=0.0)
    return path


def ours_once(
    template: Path, work: Path, csv: Path, signature: Path, keep: bool, tree: Path | None = None
) -> tuple[float, int]:
    """`run --once` on a fresh root; with `tree`, the gateway of that checkout (another commit) instead."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    with copy_of(template, work, keep) as root:
        outbox = root / "outbox" / SENDER
        shutil.copyfile(csv, outbox / csv.name)
        shutil.copyfile(signature, outbox / signature.name)
        gpg(root / "keys" / "gnupg", "--list-secret-keys")  # its agent up, as in a running gateway
        argv = [str(PYTHON), "-m", "gateway", "--root", str(root), "run", "--once"]
        result = run(argv, env=env, cwd=tree)
        made = sorted(p.name.rsplit(".", 2)[0][-24:] for p in (root / "inbox").rglob("*.manifest.json.sig"))
        if len(made) != 5 or any((root / "outbox" / SENDER).glob("*.csv")):
            raise RuntimeError(f"run --once did not deliver to all 5 recipients: {made}")
        return result


def peer_once(template: Path, work: Path, csv: Path, signature: Path, plan: Plan, keep: bool) -> tuple[float, int]:
    """The CLI peer, serial: verify, 3 x gpg --encrypt --sign -z1, 2 x 7z AES-256 -mx1."""
    with copy_of(template, work, keep) as root:
        home = root / "keys" / "gnupg"
        out = root.parent / "peer"
        out.mkdir()
        gpg(home, "--list-secret-keys")
        passwords = {agency: secrets.token_urlsafe(18) for agency in plan.zips}  # throwaway, bench only
        start = time.perf_counter()
        peak = gpg(home, "--verify", str(signature), str(csv))[1]
        for agency, officers in plan.gpg.items():
            args = ["--trust-model", "always", "-z", "1", "--cipher-algo", "AES256", "--local-user", plan.gateway]
            for officer in officers:
                args += ["--recipient", officer]
            target = out / f"{csv.name}.{agency}.gpg"
            peak = max(peak, gpg(home, *args, "--output", str(target), "--encrypt", "--sign", str(csv))[1])
        for agency in plan.zips:
            target = out / f"{csv.name}.{agency}.zip"
            argv = [SEVEN_ZIP, "a", "-tzip", "-mem=AES256", "-mx1", f"-p{passwords[agency]}", str(target), str(csv)]
            peak = max(peak, run(argv)[1])
        return time.perf_counter() - start, peak


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def machine_info() -> str:
    seven = subprocess.run([SEVEN_ZIP], capture_output=True, text=True, check=False).stdout.strip().split("\n")[0]
    return f"{platform_line()}, {seven[:60]}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20MiB,200MiB", help="comma-separated file sizes (default 20MiB,200MiB)")
    parser.add_argument("--size", type=parse_size, help="one size instead of --sizes (e.g. 1GiB: time and peak RSS)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side, alternating (default 3)")
    parser.add_argument("--seed", type=int, default=20261121, help="the generator's seed")
    parser.add_argument("--no-peer", action="store_true", help="time ours only (e.g. at 1 GiB)")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also time the gateway of this checkout (e.g. `git worktree add --detach DIR COMMIT`), alternating",
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (CSVs, roots, outputs)")
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, template: Path, work: Path, plan: Plan, size: int) -> list[str]:
    """One size: make and sign the file, time every side alternating; the table row."""
    csv = make_csv(work, size, args.seed)
    signer = template / "keys" / "demo-officers" / SIGNER
    signature = Path(f"{csv}.sig")
    gpg(signer, "--output", str(signature), "--detach-sign", str(csv))
    mib = csv.stat().st_size / 2**20
    timings = {"ours": Timing(), "peer": Timing(), "baseline": Timing()}
    sides = ["ours", *([] if args.no_peer else ["peer"]), *(["baseline"] if args.baseline else [])]
    for n in range(args.repeat):
        for side in sides if n % 2 == 0 else sides[::-1]:  # alternating
            if side == "peer":
                seconds, rss = peer_once(template, work, csv, signature, plan, args.keep)
            else:
                tree = args.baseline.resolve() if side == "baseline" else None
                seconds, rss = ours_once(template, work, csv, signature, args.keep, tree)
            timings[side].seconds.append(seconds)
            timings[side].rss_kib.append(rss)
            line = f"{shown_size(size)} run {n} {side}: {seconds:.2f} s, peak RSS {rss / 1024:.0f} MiB"
            print(line, flush=True)
    ours, peer, baseline = timings["ours"], timings["peer"], timings["baseline"]
    row = [f"{mib:.0f} MiB", f"{ours.median():.2f}", f"{mib / ours.median():.1f}"]
    if peer.seconds:
        row += [f"{peer.median():.2f}", f"{mib / peer.median():.1f}", f"{ours.median() / peer.median():.2f}x"]
    else:
        row += ["-", "-", "-"]
    row.append(f"{max(ours.rss_kib) / 1024:.0f}")
    if args.baseline:
        ratio = f" ({baseline.median() / peer.median():.2f}x)" if peer.seconds else ""
        row.append(f"{baseline.median():.2f}{ratio}")
    csv.unlink()
    signature.unlink()
    return row


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [args.size] if args.size else [parse_size(s) for s in args.sizes.split(",")]
    compileall.compile_dir(ROOT / "gateway", quiet=1)  # so our child does not compile at start-up
    work = Path(tempfile.mkdtemp(prefix="iomseal", dir="/tmp"))  # short: gpg-agent socket paths
    table = [["size", "ours s", "ours MiB/s", "peer s", "peer MiB/s", "ours/peer", "ours peak RSS MiB"]]
    if args.baseline:
        table[0].append("baseline s (/peer)")
        compileall.compile_dir(args.baseline / "gateway", quiet=1)
    try:
        template = make_template(work, max(sizes) + 2**20)
        plan = Plan.of(template)
        print(f"recipients: OpenPGP {', '.join(plan.gpg)}; AES-ZIP {', '.join(plan.zips)}", flush=True)
        for size in sizes:
            table.append(measure(args, template, work, plan, size))
        stop_agents(template)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(render_table(table, args.markdown, right=True))
    print(f"\nmedian of {args.repeat}, alternating; {machine_info()}")
    print(f"load: {uptime()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
