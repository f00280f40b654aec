"""Plain-gpg helpers for tests: an officer's own GnuPG home, driven the way an officer would drive it."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

GPG = "/usr/bin/gpg"
GPGCONF = "/usr/bin/gpgconf"


def gpg(home: Path, *args: str, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run plain `gpg --homedir HOME --batch ARGS` (list argv, no shell); raise on failure if `check`."""
    argv = [GPG, "--homedir", str(home), "--batch", "--no-tty", "--status-fd", "2", *args]
    result = subprocess.run(argv, input=stdin, capture_output=True, check=False, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} exited {result.returncode}: {result.stderr.decode(errors='replace')}")
    return result


def statuses(stderr: bytes) -> list[list[str]]:
    """gpg's `[GNUPG:]` status lines from `stderr`, split into words."""
    lines = stderr.decode("utf-8", "replace").splitlines()
    return [line.split()[1:] for line in lines if line.startswith("[GNUPG:] ")]


def primary_fingerprint(home: Path, user: str) -> str:
    """The primary key's fingerprint for `user` in `home`."""
    listing = gpg(home, "--with-colons", "--list-keys", user).stdout.decode()
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def subkey_fingerprints(home: Path, fingerprint: str) -> list[str]:
    """Fingerprints of the subkeys of `fingerprint` in `home`."""
    listing = gpg(home, "--with-colons", "--list-keys", fingerprint).stdout.decode().splitlines()
    return [line.split(":")[9] for prev, line in itertools.pairwise(listing) if prev.startswith("sub:")]


def new_officer(
    home: Path,
    name: str,
    email: str,
    *,
    expire: str = "2y",
    signing_subkey: bool = False,
    faked_time: str | None = None,
    preferences: str | None = None,
) -> str:
    """Create `home` (0700) with an ed25519 key + cv25519 encryption subkey made by plain gpg; return its fingerprint.

    `signing_subkey` adds an ed25519 signing subkey, which gpg then prefers for signatures;
    `faked_time` (e.g. 20200101T000000) makes the key as if on that date; `preferences` replaces
    gpg's default algorithm preferences (e.g. "AES SHA256 ZLIB", so AES-256 is not what it would pick).
    """
    home.mkdir(mode=0o700, parents=True)
    # each gpg starts its faked clock afresh: a key made in a slow second looks "in the future" to the
    # next command, which would refuse to add a subkey to it ("Time conflict") on a loaded machine;
    # and the clock is frozen ("!"), or a slow key generation makes the key a second younger than asked
    frozen = faked_time if faked_time is None or faked_time.endswith("!") else f"{faked_time}!"
    clock: tuple[str, ...] = ("--faked-system-time", frozen, "--ignore-time-conflict") if frozen else ()
    clock = (*clock, "--default-preference-list", preferences) if preferences else clock
    nopass = ("--passphrase", "", "--pinentry-mode", "loopback")
    gpg(home, *clock, *nopass, "--quick-gen-key", f"{name} <{email}>", "ed25519", "sign,cert", expire)
    fingerprint = primary_fingerprint(home, email)
    gpg(home, *clock, *nopass, "--quick-add-key", fingerprint, "cv25519", "encr", expire)
    if signing_subkey:
        gpg(home, *clock, *nopass, "--quick-add-key", fingerprint, "ed25519", "sign", expire)
    return fingerprint


def revocation_certificate(home: Path, fingerprint: str, output: Path) -> Path:
    """Make a revocation certificate with `gpg --gen-revoke` (it refuses --batch, so answer its questions)."""
    argv = [GPG, "--homedir", str(home), "--no-tty", "--command-fd", "0", "--yes", "--armor"]
    argv += ["--output", str(output), "--gen-revoke", fingerprint]
    answers = b"y\n0\nkey compromised in test\n\ny\n"  # confirm, reason 0, description, blank line ends it, confirm
    result = subprocess.run(argv, input=answers, capture_output=True, check=False, timeout=60)
    if result.returncode != 0 or not output.exists():
        raise AssertionError(f"gen-revoke failed: {result.stderr.decode(errors='replace')}")
    return output


def stop_agent(home: Path) -> None:
    """Stop the gpg-agent that gpg started for `home`, so tests leave no daemons behind."""
    subprocess.run([GPGCONF, "--homedir", str(home), "--kill", "all"], capture_output=True, check=False, timeout=30)
