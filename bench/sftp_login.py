"""Benchmark an officer's SFTP session through `access sync`'s key command against a fixed key script.

Root only (it makes a system account, a chroot with bind mounts and runs its own sshd on 127.0.0.1, all
removed afterwards). In one run, alternating in rounds on the same sshd, account and key: whole `sftp -b`
sessions (connect, log in, `ls /`, quit) where sshd's AuthorizedKeysCommand is

1. the one `access sync` installs (`python -I -m gateway.access.keys ROOT ACCOUNT UID`: the register), and
2. the peer: a shell script that prints the same `restrict` line (what a static authorized_keys costs).

    .venv/bin/python bench/sftp_login.py [--rounds 8] [--per-round 3]

No timing is asserted; it prints medians and their ratio. See bench/README.md.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.daemon_harness import cli, make_template, remove_root
from tests.integration.sshd_harness import (
    Sshd,
    free_port,
    make_base,
    remove_base,
    sftp,
    ssh_key,
    write_sshd_config,
)

TAG = "iombench"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="alternations of the two key commands")
    parser.add_argument("--per-round", type=int, default=3, help="sessions per key command per round")
    args = parser.parse_args()
    base, root = make_base("bench"), make_template()
    try:
        toml = root / "gateway.toml"
        text = re.sub(
            r"(?m)^\[agencies\.([a-z]+)\]$", lambda m: f'{m.group(0)}\ngroup = "{TAG}-{m.group(1)}"', toml.read_text()
        )
        toml.write_text(
            text + f'\n[access]\naccount_prefix = "{TAG}-"\nsshd_dir = "{base}/ssh"\n'
            f'chroot_dir = "{base}/chroot"\nsystemd_dir = "{base}/systemd"\n'
        )
        public = ssh_key(base / "key")
        if cli(root, "officers", "ssh-key", "police-do", str(public)) != 0:
            raise SystemExit("officers ssh-key failed")
        port = free_port()
        config = write_sshd_config(base / "ssh", port)
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "--root", str(root), "access", "sync", "--yes"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"access sync failed:\n{done.stderr}")
        command = base / "ssh" / "iom-gateway-authorized-keys"
        ours = command.read_text()
        kind, blob = public.read_text().split()[:2]
        peer = f"#!/bin/sh\nprintf 'restrict %s\\n' '{kind} {blob}'\n"
        times: dict[str, list[float]] = {"gateway": [], "fixed script": []}
        with Sshd(config, port):
            for _ in range(args.rounds):
                for name, script in (("gateway", ours), ("fixed script", peer)):
                    command.write_text(script)
                    for _ in range(args.per_round):
                        start = time.perf_counter()
                        session = sftp(f"{TAG}-police-do", base / "key", port, ["ls /"], base / "known_hosts")
                        times[name].append(time.perf_counter() - start)
                        if session.returncode != 0:
                            raise SystemExit(f"the {name} session failed:\n{session.stderr}")
        command.write_text(ours)
        gateway, fixed = (statistics.median(times[n]) for n in ("gateway", "fixed script"))
        print(f"{platform.node()}, Python {platform.python_version()}, {len(times['gateway'])} sessions each")
        print("| sftp session (connect, login, ls /, quit) | median |")
        print("| --- | --- |")
        print(f"| key from the register (`gateway.access.keys`) | {gateway * 1000:.0f} ms |")
        print(f"| fixed key script (the peer) | {fixed * 1000:.0f} ms |")
        print(f"| ratio | {gateway / fixed:.2f}x |")
    finally:
        remove_base(base)
        remove_root(root)
        for table, tool in (("/etc/passwd", "userdel"), ("/etc/group", "groupdel")):
            for line in Path(table).read_text().splitlines():
                if line.startswith(TAG):
                    subprocess.run([tool, line.split(":")[0]], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
