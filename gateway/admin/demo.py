"""The demo: a fresh demo root, good and bad submissions, one gateway run, two recipients pulling."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from gateway.adapters.fsio import atomic_write_bytes, private_dirs
from gateway.adapters.gpg import Fingerprint, Keyring
from gateway.admin.init import init_root, refuse_real_root
from gateway.admin.keys import export_password
from gateway.admin.oversight import disclosure_report, verify_audit
from gateway.core.errors import UsageError
from gateway.core.model import Period
from gateway.exchange.intake import OUTBOX, period_in
from gateway.exchange.outcome import Delivered, Rejected
from gateway.exchange.process import process_once
from gateway.exchange.recipient import pull
from gateway.exchange.submit import submit
from gateway.governance.quality import scorecard
from gateway.governance.quality_report import to_html
from gateway.governance.sar import by_cro, lookup
from gateway.state.root import SAMPLES, Root

MARKER = ".iom-gateway-demo-root"
SCORECARD = "quality-{month}.html"
DEMO_CRO = "265416/21G"  # the first person in police's sample file (and in probation's invalid one)


def run_demo(folder: Path, say: Callable[[str], None]) -> int:
    """Play the whole exchange in `folder` (recreated); return the number of surprises (0 is success)."""
    refuse_real_root(
        folder.parent, "the demo makes demo keys and sample data; run it with --root in a folder of its own"
    )
    if folder.exists():
        if not (folder / MARKER).exists():
            raise UsageError(f"{str(folder)!r} exists and is not a demo root: remove it or run elsewhere")
        _stop_agents(folder)
        shutil.rmtree(folder)
    folder.mkdir(mode=0o700, parents=True)
    (folder / MARKER).write_text("made by iom-gateway demo; deleted by the next demo run\n", encoding="utf-8")
    result = init_root(folder, demo=True)
    root = Root.open(folder)
    samples = folder / SAMPLES
    say(
        f"1. Created a demo root at {folder}: {len(root.config.agencies)} agencies, {len(result.officers)} officers "
        f"with their own GnuPG homes under keys/demo-officers/, gateway key {result.gateway_key[-16:]}."
    )
    today = datetime.now(UTC).date()
    submit(
        root,
        samples / "police-good-2026-10.csv",
        agency_id="police",
        officer_id="police-do",
        marking=None,
        gnupghome=None,
        today=today,
    )
    submit(
        root,
        samples / "housing-good-windows-1252-2026-10.csv",
        agency_id="housing",
        officer_id="housing-pdo",
        marking="RESTRICTED",
        gnupghome=None,
        today=today,
    )
    _drop_signed(root, samples / "probation-invalid-rows-2026-10.csv", "probation", "probation-do")
    forger = Keyring(folder / "keys" / "demo-forger")
    forged = forger.generate("Not An Officer", "forger@demo.invalid", comment="DEMO KEY, never for real data")
    _drop_signed(
        root,
        samples / "police-good-2026-10.csv",
        "police",
        None,
        name="police-forged-2026-10.csv",
        keyring=forger,
        fingerprint=forged,
    )
    say(
        "2. Submitted: police-do's good file, housing-pdo's Windows-1252 file (marked RESTRICTED), a probation "
        "file with invalid rows, and a police file signed by a key nobody registered."
    )
    outcomes = process_once(root, datetime.now(UTC))
    say("3. Ran the gateway once:")
    surprises = 0
    for outcome in outcomes:
        say(f"   {outcome.summary}")
        if isinstance(outcome, Rejected) and outcome.report is not None:
            say(f"             report: {outcome.report.relative_to(folder)}")
    delivered = sum(isinstance(o, Delivered) for o in outcomes)
    rejected = sum(isinstance(o, Rejected) for o in outcomes)
    surprises += (delivered != 2) + (rejected != 2)
    pulled = folder / "pulled"
    private_dirs(pulled / "probation-do")
    private_dirs(pulled / "housing")
    got = pull(
        root,
        "probation",
        pulled / "probation-do",
        officer="probation-do",
        gnupghome=None,
        password_file=None,
        raw=False,
        again=False,
    )
    export_password(root, "housing", folder / "keys" / "housing-password.txt")
    got_zip = pull(
        root,
        "housing",
        pulled / "housing",
        officer="housing-pdo",
        gnupghome=None,
        password_file=folder / "keys" / "housing-password.txt",
        raw=False,
        again=False,
    )
    say(
        f"4. probation-do pulled {sum(p.written is not None for p in got)} file(s) with their own key; housing "
        f"pulled {sum(p.written is not None for p in got_zip)} AES-256 ZIP package(s) with the password the admin "
        "exported to keys/housing-password.txt:"
    )
    for item in [*got, *got_zip]:
        if item.written is not None:
            say(f"   {item.written.relative_to(folder)}")
    # probation receives both good files; housing receives police's (its own is not routed back to it)
    surprises += (sum(p.written is not None for p in got) != 2) + (sum(p.written is not None for p in got_zip) != 1)
    month = period_in("police-good-2026-10.csv") or Period.of(today)  # the register goes by the data's period
    surprises += _governance(root, folder, month, say)
    verdict = verify_audit(root).verdict
    register = disclosure_report(root, month, "csv").splitlines()[1:]
    say(
        f"6. The audit log verifies ({verdict.entries} hash-chained entries, checked by `audit verify`); "
        f"the disclosure register of the data for {month} (`audit report --month {month}`) lists "
        f"{len(register)} disclosure(s), one per package, with purpose and legal basis."
    )
    surprises += (not verdict.ok) + (len(register) != 10)  # two files, five recipients each
    say(
        f"7. Look at: inbox/ (encrypted packages and signed manifests), quarantine/ (rejected files, encrypted), "
        f"outbox/*/rejected/ (reports), state/audit.jsonl (every step), {SCORECARD.format(month=month)} (the "
        f"scorecard, offline in any browser). All under {folder}."
    )
    root.close()  # the log at rest ends with a signed checkpoint
    _stop_agents(folder)
    return surprises


def _governance(root: Root, folder: Path, month: Period, say: Callable[[str], None]) -> int:
    """Step 5: the month's quality scorecard, and a subject access look-up; the number of surprises."""
    card = scorecard(root, month, datetime.now(UTC))
    page = folder / SCORECARD.format(month=month)
    atomic_write_bytes(page, to_html(card).encode("utf-8"))
    whole = card.partnership
    found = lookup(root, by_cro(root.standard, DEMO_CRO), user="demo").packages
    say(
        f"5. Governance without personal data: the quality scorecard for {month} (`report quality`, written to "
        f"{page.name}) counts {whole.submissions} files, {whole.accepted} accepted, {whole.refused} refused, "
        f"{whole.rows_checked} rows checked, error rate {whole.error_rate or 0:.1f} %; a subject access look-up "
        f"(`sar --cro {DEMO_CRO}`) finds the {len(found)} package(s) that held that person, from keyed hashes "
        "only, and not the refused probation file that named them too (the audit log records that someone "
        "looked, never whom for)."
    )
    return (whole.accepted != 2) + (whole.refused != 2) + (len(found) != 5)  # police's file, five recipients


def _stop_agents(folder: Path) -> None:
    """gpg-agents started for the demo's homes would otherwise linger (each holds inotify watches)."""
    for home in [folder / "keys" / "gnupg", *(folder / "keys").glob("demo-*/*"), folder / "keys" / "demo-forger"]:
        if (home / "pubring.kbx").exists():
            Keyring(home).stop_agent()


def _drop_signed(
    root: Root,
    source: Path,
    agency: str,
    officer: str | None,
    *,
    name: str | None = None,
    keyring: Keyring | None = None,
    fingerprint: Fingerprint | None = None,
) -> None:
    """Put a file and its detached signature straight into an outbox, as a scheduled export would."""
    if officer is not None:
        keyring = Keyring(root.demo_home(officer))
        fingerprint = Fingerprint.parse(root.registry.get(officer).fingerprint)
    assert keyring is not None and fingerprint is not None  # noqa: S101 (one of the two is given)
    target = root.path / OUTBOX / agency / (name or source.name)
    data = source.read_bytes()
    atomic_write_bytes(target.with_name(target.name + ".sig"), keyring.sign_detached((data,), fingerprint))
    atomic_write_bytes(target, data)
