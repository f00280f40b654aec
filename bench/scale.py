"""Benchmark scale-out: a burst of --files signed submissions cleared by 1, 2 and 4 nodes sharing one root and one
PostgreSQL journal, against one node on the SQLite journal, side by side in one run.

Each node is `iom-gateway run` with `[daemon] workers = 1` (a node is one process: the nodes are the parallelism),
all on this machine. Police sends to every other partner (3 OpenPGP, 2 AES-ZIP), as in bench/burst.py. The
PostgreSQL server is a throw-away cluster (tests/integration/pg_harness.py: Debian's binaries, 127.0.0.1,
fsync on), one database per round, the root's journal moved there by the real `journal migrate --to`.

Per round: files/s from the rename of the first file until every recipient holds every signed manifest and the
outbox is empty; CPU seconds per file (user + system of every node and its reaped gpg children, plus the root's
gpg-agent, over the burst); for PostgreSQL also the server's CPU seconds per file (its processes' times).
Then claims/s: a claim taken and released (two transactions, as a node does per file) by 1 and by 4 threads,
each with its own connection, on distinct submissions. Medians of --repeat rounds, alternating. Prints the
table with ratios against the SQLite node; `--markdown` for bench/README.md.

    .venv/bin/python bench/scale.py [--files 200] [--nodes 1,2,4] [--repeat 3] [--markdown]

No timing is asserted anywhere; this is the place speed is measured.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
_spec = importlib.util.spec_from_file_location("bench_burst", HERE / "burst.py")
if _spec is None or _spec.loader is None:
    raise RuntimeError("bench/burst.py is missing")
burst = importlib.util.module_from_spec(_spec)
sys.modules["bench_burst"] = burst
_spec.loader.exec_module(burst)
house = burst.house

from gateway.adapters import pg  # noqa: E402
from gateway.adapters.db import writing  # noqa: E402
from gateway.adapters.store import PackageStore  # noqa: E402
from gateway.core.secret import Secret  # noqa: E402
from gateway.state.journal import Journal  # noqa: E402
from tests.integration.pg_harness import Cluster, cluster, move_journal  # noqa: E402

ROWS_REPEAT = burst.ROWS_REPEAT
RECIPIENTS = ("probation", "council", "housing", "treatment", "yos")  # police's, in the demo root


def _postmaster(server: Cluster) -> int:
    """The postgres postmaster's pid (the harness starts it, as nobody, under setpriv when run as root)."""
    pid_file = server.base / "data" / "postmaster.pid"
    return int(pid_file.read_text().split()[0])


def postgres_cpu(server: Cluster) -> float:
    """User + system seconds of the cluster's postmaster and its children alive now (with their reaped ones)."""
    postmaster = _postmaster(server)
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(proc.name) == postmaster or int(fields[1]) == postmaster:
            total += sum(int(v) for v in fields[11:15]) / burst.CLK_TCK
    return total


def nodes_round(
    base: Path, nodes: int, files: int, sample: house.Sample, route: burst.Route, server: Cluster | None
) -> tuple[float, float, float, float]:
    """One burst cleared by `nodes` nodes (on PostgreSQL when `server`): files/s, CPU s/file (nodes and gpg-agent),
    the server's CPU s/file, and the transactions committed per file."""
    label = f"{'postgresql' if server else 'sqlite'}x{nodes}"
    with house.copy_of(base, False) as root:
        if server is not None:
            with open(os.devnull, "w") as quiet:
                saved, sys.stdout = sys.stdout, quiet
                try:
                    move_journal(root, server)
                finally:
                    sys.stdout = saved
        drops = house.prepare(root, sample, [f"{label}-{i:05d}" for i in range(files)], ROWS_REPEAT)
        subs = {d.submission for d in drops}
        outbox = root / "outbox" / house.SENDER
        anomalies: list[str] = []
        env = os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        daemons = []
        try:
            for n in range(nodes):
                daemons.append(house.Daemon(root, root.parent / f"node{n}.log").ready())
            time.sleep(1.0)
            cpu = sum(burst.tree_cpu(d.process.pid) for d in daemons) + burst.agent_cpu(root)
            db_cpu = postgres_cpu(server) if server else 0.0
            committed = commits(server) if server else 0
            start = time.perf_counter()
            for drop in drops:
                drop.rename_into(outbox)
            done = house.delivered_everywhere(root, route.recipients, subs)
            end = house.wait_until(lambda: done() and not house.outbox_csvs(root), 120 + files * 3, label)
            cpu = sum(burst.tree_cpu(d.process.pid) for d in daemons) + burst.agent_cpu(root) - cpu
            db_cpu = (postgres_cpu(server) - db_cpu) if server else 0.0
            committed = (commits(server) - committed) if server else 0
        finally:
            for daemon in daemons:
                if daemon.stop() != 0:
                    anomalies.append(f"{label}: a node exited {daemon.process.returncode}")
                if "Traceback" in daemon.text():
                    anomalies.append(f"{label}: a traceback in {daemon.log}")
            if env is not None:
                os.environ["PYTHONDONTWRITEBYTECODE"] = env
        if anomalies:
            raise RuntimeError("; ".join(anomalies))
        seconds = end - start
        print(f"  {label} files={files}: {seconds:.1f} s, {committed / files:.1f} commits/file", flush=True)
        return files / seconds, cpu / files, db_cpu / files, committed / files


def commits(server: Cluster) -> int:
    """Transactions committed so far in the cluster's databases (pg_stat_database)."""
    with server.connect(dbname="postgres") as connection:
        return int(connection.execute("SELECT SUM(xact_commit) FROM pg_stat_database").fetchone()[0])  # type: ignore[index]


def writes_per_second(server: Cluster, threads: int, count: int = 400) -> float:
    """Durable journal write transactions per second from `threads` threads (each its own connection): every one
    takes the journal's one-writer lock, so this is the ceiling on journal writes across all nodes."""
    url, root_id = server.database(f"writes_{secrets.token_hex(4)}"), secrets.token_hex(16)
    connections = [pg.connect(url, Secret(server.password), root_id=root_id, root_path="bench") for _ in range(threads)]

    def work(db: pg.Connection) -> None:
        for _ in range(count // threads):
            with writing(db) as tx:
                tx.execute("UPDATE journal_meta SET value = value WHERE key = 'version'")

    workers = [threading.Thread(target=work, args=(c,)) for c in connections]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    rate = (count // threads) * threads / (time.perf_counter() - start)
    for connection in connections:
        connection.close()
    return rate


def claims_per_second(server: Cluster, threads: int, claims: int = 400) -> float:
    """Claims taken and released per second by `threads` threads, each a process's journal of its own."""
    url, root_id = server.database(f"claims_{secrets.token_hex(4)}"), secrets.token_hex(16)
    root = Path(tempfile.mkdtemp(prefix="claims-"))  # for the fence folders: one per claim in each recipient's inbox
    journals = []
    for _ in range(threads):
        journal = Journal(
            pg.connect(url, Secret(server.password), root_id=root_id, root_path="bench"),
            claims=Path("/nonexistent"),
            fences=PackageStore(root, recipients=lambda _: RECIPIENTS).fences,
        )
        journal.claiming = True
        journals.append(journal)

    def work(journal: Journal, offset: int) -> None:
        for n in range(claims // threads):
            journal.claim(f"bench-{offset}-{n}", "police")
            journal.unclaim()

    workers = [threading.Thread(target=work, args=(j, i)) for i, j in enumerate(journals)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    rate = (claims // threads) * threads / (time.perf_counter() - start)
    for journal in journals:
        journal.db.close()
    shutil.rmtree(root)
    return rate


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=200, help="the burst (200)")
    p.add_argument("--nodes", default="1,2,4", help="node counts on PostgreSQL, comma-separated (1,2,4)")
    p.add_argument("--repeat", type=int, default=3, help="alternating rounds; medians (3)")
    p.add_argument("--markdown", action="store_true", help="print the README table")
    args = p.parse_args(argv)
    counts = [int(n) for n in args.nodes.split(",")]
    sample = house.Sample.load()
    base = burst.template()
    results: dict[str, list[tuple[float, float, float, float]]] = {}
    try:
        route = burst.Route.of(base)
        with cluster() as server:
            for round_ in range(args.repeat):
                results.setdefault("sqlite x1", []).append(nodes_round(base, 1, args.files, sample, route, None))
                for nodes in counts:
                    key = f"postgresql x{nodes}"
                    results.setdefault(key, []).append(nodes_round(base, nodes, args.files, sample, route, server))
                print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1][0]:.1f}/s" for k, v in results.items()))
            claims = {t: statistics.median(claims_per_second(server, t) for _ in range(3)) for t in (1, 4)}
            writes = {t: statistics.median(writes_per_second(server, t) for _ in range(3)) for t in (1, 4)}
    finally:
        house.stop_agents(base)
        shutil.rmtree(base.parent, ignore_errors=True)
    medians = {k: tuple(statistics.median(r[i] for r in v) for i in range(4)) for k, v in results.items()}
    baseline = medians["sqlite x1"][0]
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\n{house.machine_info()}; load average after: {' '.join(load)}; medians of {args.repeat}")
    if args.markdown:
        columns = "files/s | vs SQLite, 1 node | CPU s/file (nodes) | server CPU s/file | commits/file"
        print(f"\n| {args.files} files | {columns} |")
        print("|---|---|---|---|---|---|")
        for key, (rate, cpu, db, tx) in medians.items():
            print(f"| {key} | {rate:.2f} | {rate / baseline:.2f}x | {cpu:.3f} | {db:.3f} | {tx:.1f} |")
    else:
        for key, (rate, cpu, db, tx) in medians.items():
            ratio = rate / baseline
            print(
                f"{key:>15} {rate:>7.2f} files/s {ratio:>5.2f}x cpu {cpu:.3f} s/file server {db:.3f} s/file {tx:.1f} tx"
            )
    print(f"claims/s (take + release): 1 thread {claims[1]:.0f}, 4 threads {claims[4]:.0f}")
    print(f"durable journal writes/s (one-writer lock): 1 thread {writes[1]:.0f}, 4 threads {writes[4]:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
