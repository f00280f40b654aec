"""Benchmark a burst: --files signed small submissions dropped at once into one outbox.

In one run, alternating (median of --repeat rounds), on scratch copies of one demo root where
police sends to all five partners (3 OpenPGP, 2 AES-ZIP):

1. the daemon (`iom-gateway run`) with `[daemon] workers = 1` (files taken in turn, in the daemon);
2. the daemon with `workers = 2` (the default on this 2-core machine);
3. the CLI peer doing the same cryptographic work on 2 processes: per file `gpg --verify`,
   3 x `gpg --encrypt --sign -z 1` (one per OpenPGP agency, to its officers), 2 x
   `7z a -tzip -mem=AES256 -mx1` (one per AES-ZIP agency; a throwaway password, not the vault's).

Files/s from the rename of the first file until every recipient holds every signed manifest and
the outbox is empty; the daemon's CPU use in cores (user + system time of the daemon, its workers
and their reaped gpg children, over the burst's wall time; gpg-agent, shared by both sides, is
not counted). Prints our figures and the peer's side by side, with ratios; `--markdown` for the
README table.

    .venv/bin/python bench/burst.py [--files 100,200] [--repeat 3] [--markdown] [--keep]

PYTHONDONTWRITEBYTECODE: the daemon and each worker start once per round, before the burst is
timed, so start-up is outside the figure; the bench unsets the variable for the daemon anyway so
an editable install does not recompile on every worker start. No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_daemon", HERE / "daemon.py")
if _spec is None or _spec.loader is None:
    raise RuntimeError("bench/daemon.py is missing")
house = importlib.util.module_from_spec(_spec)
sys.modules["bench_daemon"] = house
_spec.loader.exec_module(house)

from gateway.admin.init import init_root  # noqa: E402
from gateway.core.model import Delivery  # noqa: E402
from gateway.state.root import Root  # noqa: E402

SEVEN_ZIP = "/usr/bin/7z"
ROWS_REPEAT = 3  # the sample's 7 data rows, 3 times: a 21-row file
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Route:
    gateway: str
    gpg: dict[str, list[str]]  # OpenPGP agency -> its officers' fingerprints
    zip: list[str]  # AES-ZIP agencies

    @property
    def recipients(self) -> list[str]:
        return [*self.gpg, *self.zip]

    @classmethod
    def of(cls, path: Path) -> Route:
        root = Root.open(path)
        try:
            sender = root.config.agencies[house.SENDER]
            gpg, zips = {}, []
            for agency in root.config.recipients(sender):
                if agency.delivery is Delivery.AES_ZIP:
                    zips.append(agency.id)
                else:
                    gpg[agency.id] = [o.fingerprint for o in root.registry.all(agency.id) if o.active]
            return cls(str(root.gateway_key()), gpg, zips)
        finally:
            root.close()


def template() -> Path:
    """A demo root: police sends to every other partner (the shipped default route)."""
    path = house.short_dir() / "root"
    init_root(path, demo=True)
    text = (path / "gateway.toml").read_text()
    (path / "gateway.toml").write_text(text.replace("[vault]", "workers = 1\n\n[vault]", 1))
    return path


def tree_cpu(pid: int) -> float:
    """User + system seconds of `pid` and its descendants alive now (each with its reaped children)."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15]) / CLK_TCK  # utime stime cutime cstime
        todo += [int(c) for c in children]
    return total


def agent_cpu(root: Path) -> float:
    """User + system seconds of the gpg-agent serving the root's own GnuPG home (it makes every signature)."""
    home = str(root / "keys" / "gnupg").encode()
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            if not command[0].endswith(b"gpg-agent") or home not in command:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:13]) / CLK_TCK
    return total


def daemon_round(
    base: Path, workers: int, files: int, sample: house.Sample, route: Route, keep: bool
) -> tuple[float, float]:
    """One burst into a daemon with `workers`; (files/s, cores used)."""
    with house.copy_of(base, keep) as root:
        toml = root / "gateway.toml"
        toml.write_text(re.sub(r"(?m)^workers = [0-9]+", f"workers = {workers}", toml.read_text()))
        drops = house.prepare(root, sample, [f"b{workers}x{i:05d}" for i in range(files)], ROWS_REPEAT)
        subs = {d.submission for d in drops}
        outbox = root / "outbox" / house.SENDER
        anomalies: list[str] = []
        env = os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        try:
            with house.running(root, root.parent / "burst.log", anomalies, f"workers={workers}") as daemon:
                time.sleep(1.0)  # the workers' start-up is not the burst
                cpu, agent = tree_cpu(daemon.process.pid), agent_cpu(root)
                start = time.perf_counter()
                for drop in drops:
                    drop.rename_into(outbox)
                done = house.delivered_everywhere(root, route.recipients, subs)
                end = house.wait_until(lambda: done() and not house.outbox_csvs(root), 60 + files * 3, "the burst")
                cpu, agent = tree_cpu(daemon.process.pid) - cpu, agent_cpu(root) - agent
        finally:
            if env is not None:
                os.environ["PYTHONDONTWRITEBYTECODE"] = env
        if anomalies:
            raise RuntimeError("; ".join(anomalies))
        seconds = end - start
        print(f"  workers={workers} files={files}: {seconds:.1f} s, gpg-agent {agent / seconds:.2f} cores", flush=True)
        return files / seconds, cpu / seconds


def peer_round(base: Path, files: int, sample: house.Sample, route: Route, keep: bool) -> float:
    """The same files sealed by the gpg and 7z CLIs, two pipelines at once; files/s."""
    with house.copy_of(base, keep) as root:
        drops = house.prepare(root, sample, [f"peer{i:05d}" for i in range(files)], ROWS_REPEAT)
        out = root.parent / "peer-out"
        out.mkdir()
        home = root / "keys" / "gnupg"
        password = secrets.token_urlsafe(24)  # the peer's own: the vault's password never leaves the gateway

        def seal(drop: house.Drop) -> None:
            house.gpg(home, "--verify", str(drop.signature), str(drop.csv))
            for agency, fingerprints in route.gpg.items():
                args = ["--trust-model", "always", "-z", "1", "--local-user", route.gateway]
                for fingerprint in fingerprints:
                    args += ["--recipient", fingerprint]
                payload = out / f"{drop.csv.name}.{agency}.gpg"
                house.gpg(home, *args, "--output", str(payload), "--encrypt", "--sign", str(drop.csv))
            for agency in route.zip:
                archive = out / f"{drop.csv.name}.{agency}.zip"
                subprocess.run(
                    [SEVEN_ZIP, "a", "-tzip", "-mem=AES256", "-mx1", f"-p{password}", str(archive), str(drop.csv)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=True,
                )

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(seal, drops))
        return files / (time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", default="100,200", help="burst sizes, comma-separated (100,200)")
    p.add_argument("--repeat", type=int, default=3, help="alternating rounds per size; medians (3)")
    p.add_argument("--markdown", action="store_true", help="print the README table")
    p.add_argument("--keep", action="store_true", help="keep the scratch roots")
    args = p.parse_args(argv)
    sizes = [int(n) for n in args.files.split(",")]
    sample = house.Sample.load()
    base = template()
    try:
        route = Route.of(base)
        rows = []
        for files in sizes:
            one, two, peer, cores1, cores2 = [], [], [], [], []
            for round_ in range(args.repeat):
                rate, cores = daemon_round(base, 1, files, sample, route, args.keep)
                one.append(rate)
                cores1.append(cores)
                peer.append(peer_round(base, files, sample, route, args.keep))
                rate, cores = daemon_round(base, 2, files, sample, route, args.keep)
                two.append(rate)
                cores2.append(cores)
                print(
                    f"files={files} round={round_ + 1}: workers=1 {one[-1]:.2f}/s ({cores1[-1]:.2f} cores), "
                    f"workers=2 {two[-1]:.2f}/s ({cores2[-1]:.2f} cores), peer {peer[-1]:.2f}/s",
                    flush=True,
                )
            rows.append((files, *(statistics.median(v) for v in (one, two, peer, cores1, cores2))))
    finally:
        house.stop_agents(base)
        shutil.rmtree(base.parent, ignore_errors=True)
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\n{house.machine_info()}; load average before the table: {' '.join(load)}; medians of {args.repeat}")
    if args.markdown:
        print("\n| burst | daemon, workers = 1 | daemon, workers = 2 | CLI peer, 2 processes | w2 / peer | w2 / w1 |")
        print("|---|---|---|---|---|---|")
        for files, one, two, peer, c1, c2 in rows:
            print(
                f"| {files} files | {one:.2f} files/s ({c1:.2f} cores) | {two:.2f} files/s ({c2:.2f} cores) "
                f"| {peer:.2f} files/s | {two / peer:.2f}x | {two / one:.2f}x |"
            )
    else:
        print(f"{'files':>6} {'workers=1':>16} {'workers=2':>16} {'peer (2 procs)':>15} {'w2/peer':>8} {'w2/w1':>6}")
        for files, one, two, peer, c1, c2 in rows:
            print(
                f"{files:>6} {one:>7.2f}/s {c1:>4.2f}c {two:>7.2f}/s {c2:>4.2f}c {peer:>13.2f}/s "
                f"{two / peer:>7.2f}x {two / one:>5.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
