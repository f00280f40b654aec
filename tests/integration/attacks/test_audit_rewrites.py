"""Issue 9, finding 4: someone who can write `state/` rewrites the audit log; `audit verify` must say so.

Each test runs a real root (demo officers, real gpg) that really delivered police's file to probation
(OpenPGP) and housing (AES-ZIP) with `run --once`, then rewrites the log the way a careful forger
would: renumbered, rechained, the head fixed. Plain `audit verify` must catch it from what the forger
cannot change (signed checkpoints and genesis, the gateway-signed manifests in inbox/), and
`audit verify --witness DIR` must catch it from a recipient's copy of their inbox alone, even when
the forger also controls inbox/ and the journal and holds the gateway's public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.state.audit import GENESIS, canonical
from tests.integration.daemon_harness import GOOD, cli, copy_of, drop, journal_rows, journal_write
from tests.integration.gpg_helpers import gpg, new_officer, stop_agent
from tests.integration.pg_harness import on_journal

pytestmark = pytest.mark.both_journals
Entry = dict[str, Any]
HIDDEN = ("audit.checkpoint", "package.delivered")


@pytest.fixture(scope="module")
def delivered(routed_template: Path) -> Iterator[Path]:
    """The routed demo root after police-do's file went to probation and housing with `run --once`."""
    with copy_of(routed_template) as path:
        drop(path, "police", GOOD, GOOD.name, "police-do")
        assert cli(path, "run", "--once") == 0
        yield path


@pytest.fixture
def root(delivered: Path, journal: str, request: pytest.FixtureRequest) -> Iterator[Path]:
    with copy_of(delivered) as path:
        yield on_journal(journal, path, request)


@pytest.fixture
def download(root: Path) -> Path:
    """What probation's officer downloaded from inbox/probation/ before the attack: their own copy."""
    target = root.parent / "probation-download"
    shutil.copytree(root / "inbox" / "probation", target)
    return target


@dataclass(frozen=True)
class Forger:
    """Someone with their own OpenPGP key who also holds the gateway's public key."""

    home: Path
    fingerprint: str
    gateway: str  # the gateway key's fingerprint, which the forger's signatures claim

    def sign(self, data: bytes) -> str:
        signature = gpg(self.home, "--local-user", self.fingerprint, "--detach-sign", "--output", "-", stdin=data)
        return base64.b64encode(signature.stdout).decode("ascii")


@pytest.fixture
def forger(root: Path) -> Iterator[Forger]:
    home = root.parent / "forger-home"
    fingerprint = new_officer(home, "Mallory", "mallory@example.invalid")
    gateway_home = root / "keys" / "gnupg"
    gateway = _gateway_fingerprint(root)
    gpg(home, "--import", stdin=gpg(gateway_home, "--armor", "--export", gateway).stdout)
    try:
        yield Forger(home, fingerprint, gateway)
    finally:
        stop_agent(home)


# ----------------------------------------------------------------------------------------- the forger's tools


def entries(root: Path) -> list[Entry]:
    path = root / "state" / "audit.jsonl"
    return [json.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def rewrite(root: Path, forged: list[Entry], sign: Callable[[bytes], str] | None = None) -> list[Entry]:
    """Write `forged` as the whole log, renumbered and rechained, and fix the head: what a careful forger does.

    With `sign`, each audit.checkpoint in `forged` is made to cover the entry before it and signed with it.
    """
    lines: list[bytes] = []
    for seq, original in enumerate(forged, start=1):
        entry = {**original, "seq": seq, "prev": _sha(lines[-1]) if lines else GENESIS}
        if sign is not None and entry["event"] == "audit.checkpoint":
            covered = {"covers_hash": _sha(lines[-1]), "covers_seq": seq - 1}
            entry |= covered | {"signature": sign(canonical(covered))}
        lines.append(canonical(entry))
    state = root / "state"
    (state / "audit.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    head = {"hash": _sha(lines[-1]), "seq": len(lines)} if lines else None
    if head is not None:
        (state / "audit.head").write_bytes(canonical(head) + b"\n")
    return [json.loads(line) for line in lines]


def fresh_entries(count: int, gateway: str) -> list[Entry]:
    """Plausible entries made up from scratch, as if the gateway had only ever registered officers."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    made = [{"time": now, "event": "gateway.key.created", "actor": "admin", "agency": None, "fingerprint": gateway}]
    for number in range(count - 1):
        officer = {"officer": f"police-extra-{number}", "fingerprint": "AB" * 20}
        made.append({"time": now, "event": "officer.added", "actor": "admin", "agency": "police", **officer})
    return made


def take_over_the_box(root: Path) -> None:
    """The forger who also controls inbox/ and the journal: no manifest, no delivery, no gateway key record left."""
    for path in (root / "inbox").rglob("*.manifest.json*"):
        path.unlink()
    journal_write(root, "DELETE FROM deliveries")
    journal_write(root, "DELETE FROM gateway_keys")


def verify(root: Path, capsys: pytest.CaptureFixture[str], *witnesses: Path) -> tuple[int, str]:
    """`audit verify` (with `--witness DIR` for each of `witnesses`): its exit status and what it printed."""
    capsys.readouterr()
    extra = [argument for folder in witnesses for argument in ("--witness", str(folder))]
    code = cli(root, "audit", "verify", *extra)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out + captured.err


def sealed_at(manifest: Path) -> int:
    """The audit sequence number the manifest was sealed at (its signed witness)."""
    return int(json.loads(manifest.read_bytes())["audit"]["seq"])


def problem(out: str) -> str:
    """The verdict line of `audit verify`'s output."""
    return next((line for line in out.splitlines() if line.startswith("audit log ")), out)


def _manifest(folder: Path) -> Path:
    return next(folder.glob("*.manifest.json"))


def _earliest(root: Path) -> Path:
    """The root's own manifest sealed first: the witness verify must name first."""
    return min((root / "inbox").rglob("*.manifest.json"), key=lambda path: (sealed_at(path), str(path)))


def _sha(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _gateway_fingerprint(root: Path) -> str:
    return str(journal_rows(root, "SELECT fingerprint FROM gateway_keys WHERE status = 'current'")[0][0])


# ----------------------------------------------------------------------------------------- the attacks


def test_dropping_checkpoints_and_every_delivery_then_rechaining_is_caught(
    root: Path, download: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    genuine = entries(root)
    assert [e["event"] for e in genuine].count("package.delivered") == 2
    rewrite(root, [e for e in genuine if e["event"] not in HIDDEN])

    code, out = verify(root, capsys)
    assert code == 1, out
    first = _earliest(root)
    assert "BROKEN (step 9)" in problem(out) and str(first.relative_to(root)) in problem(out), out
    assert f"entry {sealed_at(first)}" in problem(out) and "rewritten" in problem(out), out

    take_over_the_box(root)
    code, out = verify(root, capsys, download)
    assert code == 1, out
    assert "BROKEN (step 9)" in problem(out) and str(_manifest(download)) in problem(out), out
    assert f"entry {sealed_at(_manifest(download))}" in problem(out), out


def test_truncating_the_log_to_ten_entries_and_fixing_the_head_is_caught(
    root: Path, download: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rewrite(root, entries(root)[:10])

    code, out = verify(root, capsys)
    assert code == 1, out
    first = _earliest(root)
    assert "BROKEN (step 9)" in problem(out) and str(first.relative_to(root)) in problem(out), out
    assert f"sealed when the log ended at entry {sealed_at(first)}" in problem(out), out
    assert "the log ends at entry 10" in problem(out), out

    take_over_the_box(root)
    code, out = verify(root, capsys, download)
    assert code == 1, out
    assert "BROKEN (step 9)" in problem(out) and str(_manifest(download)) in problem(out), out
    assert f"entry {sealed_at(_manifest(download))}" in problem(out), out
    assert "the log ends at entry 10" in problem(out), out


def test_deleting_the_log_and_its_head_is_caught(
    root: Path, download: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (root / "state" / "audit.jsonl").unlink()
    (root / "state" / "audit.head").unlink()

    code, out = verify(root, capsys)
    assert code == 1, out
    assert "BROKEN (step 7)" in problem(out) and "the log is empty" in problem(out), out
    assert "inbox/" in problem(out), out

    take_over_the_box(root)  # no manifest left in inbox/, no delivery nor gateway key in the journal
    code, out = verify(root, capsys, download)
    assert code == 1, out
    assert "BROKEN (step 7)" in problem(out) and "the log is empty" in problem(out), out
    assert str(_manifest(download)) in problem(out), out


def test_a_chain_rebuilt_from_scratch_is_caught_even_with_checkpoints_the_forger_signed(
    root: Path, download: Path, forger: Forger, capsys: pytest.CaptureFixture[str]
) -> None:
    genuine = entries(root)
    now = datetime.now(UTC).isoformat(timespec="seconds")

    # 1. all fresh, starting with a genesis the forger signed in the gateway key's name
    genesis = {"time": now, "event": "audit.genesis", "actor": "gateway", "agency": None, "key": forger.gateway}
    genesis["signature"] = forger.sign(canonical({"event": "audit.genesis", "seq": 1, "time": now}))
    rewrite(root, [genesis, *fresh_entries(5, forger.gateway)])
    code, out = verify(root, capsys)
    assert code == 1, out
    assert "BROKEN (step 7)" in problem(out) and "does not verify with a gateway key" in problem(out), out

    # 2. the genuine first line kept, everything after it made up: chain and head are valid
    rewrite(root, [genuine[0], *fresh_entries(5, forger.gateway)])
    code, out = verify(root, capsys)
    assert code == 1, out
    assert "BROKEN (step 9)" in problem(out) and "the log ends at entry 6" in problem(out), out

    # 3. with checkpoints, signed by the forger's own key in the gateway key's name
    checkpoint = {"time": now, "event": "audit.checkpoint", "actor": "gateway", "agency": None, "key": forger.gateway}
    made_up = [genuine[0], *fresh_entries(3, forger.gateway), checkpoint, *fresh_entries(2, forger.gateway)]
    rewrite(root, [*made_up, checkpoint], forger.sign)
    code, out = verify(root, capsys)
    assert code == 1, out
    assert "BROKEN (step 4)" in problem(out) and "entry 5 (line 5)" in problem(out), out
    assert "does not verify with a gateway key" in problem(out), out

    # 4. the forger controls the whole box and plants a manifest of their own that vouches for their log
    forged = rewrite(root, [genuine[0], *fresh_entries(5, forger.gateway)])
    take_over_the_box(root)
    real = _manifest(download)
    planted = download / "PROTECT-PERSONAL__police__2026-10__planted.manifest.json"
    document = json.loads(real.read_bytes()) | {"audit": {"seq": 6, "head": _sha(canonical(forged[-1]))}}
    planted.write_bytes(json.dumps(document, sort_keys=True, indent=2).encode() + b"\n")
    planted.with_name(planted.name + ".sig").write_bytes(base64.b64decode(forger.sign(planted.read_bytes())))
    code, out = verify(root, capsys, download)
    assert code == 1, out
    assert "BROKEN (step 9)" in problem(out) and str(real) in problem(out), out
    assert f"entry {sealed_at(real)}" in problem(out) and "planted" not in problem(out), out
