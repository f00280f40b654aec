"""Argument parsing and printing only: `main(argv) -> int`; every command calls one use case."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import pwd
import stat
import sys
import time
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.adapters.config import ROOT_ENV, resolve_root
from gateway.adapters.fsio import disable_core_dumps, private_umask
from gateway.core.errors import AccessError, GatewayError, StorageError, UsageError
from gateway.core.model import Period, period_in, period_of
from gateway.state.disclosure import REPORT_FORMATS

if TYPE_CHECKING:
    from gateway.admin.check import Checked
    from gateway.admin.keys import Exported
    from gateway.state.registry import Officer
    from gateway.state.root import Root

# Each command imports what it runs inside its handler, not here: `validate` then starts without
# loading GnuPG, the AES-ZIP and vault crypto, the daemon's watchdog or the SFTP access code
# (tests/integration/test_startup.py; bench/startup.py times it).

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run one iom-gateway command; return its exit status (0 ok, 1 refused, 2 usage)."""
    disable_core_dumps()  # before anything is read: no core file ever holds what this process held
    try:
        with private_umask():  # umask 077 whatever the shell's, as under the unit (STYLE 6)
            code = _command(argv)
            sys.stdout.flush()  # a reader that went away shows here, not as a traceback at exit
            return code
    except BrokenPipeError:
        # `status | head -3`: the reader has what it wanted. Stop quietly, as a closed pipe asks, and
        # point stdout at /dev/null so that the interpreter's own flush at exit cannot fail again
        # (Python's docs, "Note on SIGPIPE").
        _stdout_to_devnull()
        return EXIT_REFUSED
    except KeyboardInterrupt:  # Ctrl-C is the user's own choice: a line, not a traceback; 128 + SIGINT, as shells say
        print("\niom-gateway: interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if "gateway.adapters.gpg" in sys.modules:  # not loaded: this command started no gpg-agent
            from gateway.adapters.gpg import stop_agents

            stop_agents()  # the gpg-agents this command started end with it (never an officer's own)


def _stdout_to_devnull() -> None:
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's capture): nothing to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _command(argv: list[str] | None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="iom-gateway %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("gnupg").setLevel(logging.ERROR)  # its warnings repeat what our messages say
    # every root a command opens is closed at its end, refused or not: closing checkpoints the audit log
    with contextlib.ExitStack() as args.opened:
        try:
            try:
                if getattr(args, "as_root", False):  # before the root is read: root, not its owner, runs it
                    from gateway.access.sync import require_root

                    require_root()
                if getattr(args, "from_dir", None) is None:  # `pull --from` runs where there is no root
                    _check_root(resolve_root(args.root))
                result: int = args.handler(args)
                return result
            except PermissionError as exc:  # deeper in the root than _check_root looks: say whose it is
                raise _no_access(exc, resolve_root(args.root)) from None
        except GatewayError as exc:
            print(f"iom-gateway: {exc.message}", file=sys.stderr)
            return exc.exit_code


def _check_root(path: Path) -> None:
    """Refuse a root that is not a folder this user may read, before any command touches it."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return  # `init` makes it; every other command says what is missing in it
    except NotADirectoryError:
        info = None
    except PermissionError as exc:  # a folder above it cannot be searched
        raise _no_access(exc, path) from None
    if info is None or not stat.S_ISDIR(info.st_mode):
        raise UsageError(
            f"the gateway root {str(path)!r} is not a folder: pass --root DIR (the folder holding gateway.toml) "
            f"or set ${ROOT_ENV}"
        )
    if not os.access(path, os.R_OK | os.X_OK):
        raise _no_access(PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path)), path)


def _no_access(exc: PermissionError, root: Path) -> AccessError:
    """The refusal for a path this user may not read or write, naming it and whose the root is."""
    where = Path(os.fsdecode(exc.filename)) if exc.filename is not None else root
    me = _user(os.geteuid())
    if not where.is_relative_to(root):  # a file the user named elsewhere: theirs to fix, not the root's
        return AccessError(f"permission denied on {str(where)!r} for user {me}: name a path this user can use")
    try:
        owner = f"{_user(root.stat().st_uid)}, who owns it"
    except OSError:  # a folder above the root cannot be searched either
        owner = "the owner of the root"
    return AccessError(
        f"permission denied on {str(where)!r} for user {me}: run iom-gateway as the gateway's user "
        f"({owner}; e.g. with sudo -u), the gateway root being {str(root)!r}"
    )


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


class _UtcFormatter(logging.Formatter):
    converter = time.gmtime  # type: ignore[assignment]  # typeshed's signature is narrower than the runtime's


def _structured_logging() -> None:
    """One key=value line per event on stderr, for journald: time, level, logger, then the event."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _UtcFormatter("time=%(asctime)s level=%(levelname)s logger=%(name)s event=%(message)s", "%Y-%m-%dT%H:%M:%SZ")
    )
    logger = logging.getLogger()
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iom-gateway",
        description="Secure exchange of monthly IOM data between community-safety partners.",
    )
    parser.add_argument("--root", metavar="DIR", help="gateway root (default: $IOM_GATEWAY_ROOT or the current folder)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step to stderr")
    parser.add_argument("--version", action="version", version=f"iom-gateway {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    validate = commands.add_parser(
        "validate",
        help="check a CSV against Table 1 and the ownership matrix (writes nothing)",
        description="Check FILE against the Table 1 standard and the ownership matrix as AGENCY would send it, "
        "for the period the gateway would use: --period, else the YYYY-MM in the file name, else this month "
        "(the report says which). Exit 0 valid, 1 invalid, 2 usage error. Nothing is written anywhere.",
    )
    validate.add_argument("file", metavar="FILE", type=Path, help="the CSV file")
    validate.add_argument("--agency", required=True, metavar="A", help="the sending agency's id in gateway.toml")
    validate.add_argument(
        "--period",
        type=_period,
        metavar="YYYY-MM",
        help="the month the data is for; ages are checked on its first day (default: the YYYY-MM in the file "
        "name, as the gateway takes it, else this month)",
    )
    validate.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    validate.set_defaults(handler=_validate)

    _exchange_commands(commands)
    _oversight_commands(commands)
    _sar_command(commands)
    _check_command(commands)
    _access_command(commands)
    _request_commands(commands)
    _journal_commands(commands)
    _global_options_everywhere(parser)
    return parser


def _global_options_everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept --root and -v after the command too (`status --root X`), for every command there is.

    SUPPRESS keeps a command's parser from resetting what was given before the command.
    """
    for command in subcommands(parser).values():
        command.add_argument(
            "--root", metavar="DIR", default=argparse.SUPPRESS, help="gateway root (may also come before the command)"
        )
        command.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log each step to stderr"
        )


def subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every command and action under `parser`, by its words (`("officers", "add")`), groups included."""
    found: dict[tuple[str, ...], Any] = {}
    for action in parser._actions:  # argparse has no public walk over its sub-parsers
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found[(*path, name)] = child
                found |= subcommands(child, (*path, name))
    return found


def _period(text: str) -> Period:
    try:
        return Period.parse(text)
    except GatewayError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _today() -> date:
    """Today (UTC), the day `validate` checks future dates against; the one clock it reads."""
    return datetime.now(UTC).date()


def _validation_period(name: str, explicit: Period | None, today: date) -> tuple[Period, str]:
    """The period `validate` checks against, and why: --period, else the daemon's rule (`period_of`):
    the YYYY-MM in the file name, else the current month."""
    if explicit is not None:
        return explicit, "--period"
    period = period_of(name, datetime(today.year, today.month, today.day, tzinfo=UTC))
    return period, "the file name" if period_in(name) is not None else "the current month: no YYYY-MM in the file name"


def _validate(args: argparse.Namespace) -> int:
    from gateway.exchange.check import check_file

    gateway = _open(args)
    today = _today()
    period, source = _validation_period(args.file.name, args.period, today)
    named = period_in(args.file.name)
    if named is not None and named != period:
        print(
            f"iom-gateway: note: the file name says period {named}, which the gateway will use when it is submitted "
            f"(and it refuses a signature for another period): rename the file, or drop --period",
            file=sys.stderr,
        )
    report = check_file(gateway, args.file, args.agency, period, today)
    if args.json:
        print(json.dumps(report.to_json() | {"period_from": source}, ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(report.to_text())
        print(f"period {period} from {source}: ages are checked on {period.first_day:%d/%m/%Y}")
    return EXIT_OK if report.valid else EXIT_REFUSED


def _exchange_commands(commands: Any) -> None:
    init = commands.add_parser(
        "init",
        help="create a gateway root: folders, gateway key, vault",
        description="Create or complete a gateway root; --demo adds the demo partnership, "
        "its officers with their own GnuPG homes, and the sample files.",
    )
    init.add_argument("--demo", action="store_true", help="add the demo partnership (demo keys: never real data)")
    init.add_argument(
        "--algorithm",
        choices=["ed25519", "rsa3072"],
        default="ed25519",
        help="the gateway key: ed25519/cv25519 (default), or RSA-3072 for partners with older tools",
    )
    init.set_defaults(handler=_init)

    show = commands.add_parser(
        "demo",
        help="play the whole exchange in a fresh demo root",
        description="Make a demo root (./demo under --root), submit good and bad files, "
        "run the gateway once, pull as two recipients, and say what happened.",
    )
    show.set_defaults(handler=_demo)

    run = commands.add_parser(
        "run",
        help="the daemon: watch every outbox and process submissions as they arrive",
        description="Watch every outbox (inotify, or polling per [daemon] in gateway.toml) and process each "
        "submission once it is complete. First finishes or rolls back whatever a crash left in flight. "
        "SIGTERM/SIGINT finish the file in hand and exit 0; SIGHUP reloads gateway.toml. Logs one "
        "key=value line per event to stderr. With --once: process what is there now and exit "
        "(exit 1 if any was rejected).",
    )
    run.add_argument("--once", action="store_true", help="process what is there and exit")
    run.add_argument("--json", action="store_true", help="with --once: print one JSON object, not lines")
    run.set_defaults(handler=_run)

    submit = commands.add_parser(
        "submit",
        help="sign a CSV as an officer and drop it into an outbox",
        description="Validate FILE, sign it as officer O (detached OpenPGP signature) and "
        "put both into A's outbox atomically, signature first.",
    )
    submit.add_argument("file", metavar="FILE", type=Path, help="the CSV file to submit")
    submit.add_argument("--agency", required=True, metavar="A", help="the sending agency's id in gateway.toml")
    submit.add_argument("--officer", required=True, metavar="O", help="the DO/PDO of A who signs it")
    submit.add_argument("--marking", metavar="LEVEL", help="ask for a marking above the floor, e.g. RESTRICTED")
    submit.add_argument("--gnupghome", type=Path, metavar="DIR", help="the officer's own GnuPG home (default: demo)")
    submit.add_argument(
        "--corrects",
        metavar="PACKAGE",
        help="this file corrects an earlier package of the agency (its name or submission id): signed with the "
        "file, recorded in the manifest and the audit log; recipients' pull marks the earlier file superseded",
    )
    submit.set_defaults(handler=_submit)

    pull = commands.add_parser(
        "pull",
        help="verify, decrypt and write the packages waiting for an agency",
        description="Verify each package's signed manifest, decrypt it, check it against the "
        "manifest and write the CSV (0600, UTF-8 with the marking as first and last line unless "
        "--raw). A package already pulled by you is skipped unless --again.",
    )
    pull.add_argument("--agency", metavar="A", help="the receiving agency's id in gateway.toml (not with --from)")
    pull.add_argument("--to", required=True, type=Path, metavar="DIR", help="an existing folder for the CSV files")
    pull.add_argument(
        "--from",
        dest="from_dir",
        type=Path,
        metavar="DIR",
        help="pull away from the gateway, with no root: DIR holds a copy of inbox/<agency>/",
    )
    pull.add_argument(
        "--gateway-key",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="with --from: the gateway's public keys (`keys export --gateway`); may be given again",
    )
    pull.add_argument(
        "--gateway-fingerprint",
        action="append",
        default=[],
        metavar="FPR",
        help="with --from: trust this gateway key (else the keys are pinned in --to on first use)",
    )
    pull.add_argument(
        "--receipts", type=Path, metavar="DIR", help="with --from: where signed receipts go (default: TO/receipts/)"
    )
    pull.add_argument(
        "--gnupghome", type=Path, metavar="DIR", help="your GnuPG home: opens OpenPGP packages, signs receipts"
    )
    pull.add_argument("--password-file", type=Path, metavar="F", help="the package password (AES-ZIP agencies)")
    pull.add_argument("--officer", metavar="O", help="who is pulling (a demo officer's home is used if no --gnupghome)")
    pull.add_argument("--raw", action="store_true", help="write exactly the bytes the sender signed")
    pull.add_argument("--again", action="store_true", help="pull packages you have pulled before")
    pull.add_argument("--json", action="store_true", help="print one JSON object, not lines")
    pull.set_defaults(handler=_pull)
    _admin_commands(commands)


def _admin_commands(commands: Any) -> None:
    officers = commands.add_parser("officers", help="the register of Designated Officers").add_subparsers(
        metavar="ACTION", required=True
    )
    add = officers.add_parser("add", help="register a DO/PDO with their public key")
    add.add_argument("--agency", required=True, metavar="A", help="the officer's agency (its id in gateway.toml)")
    add.add_argument(
        "--role", required=True, choices=["DO", "PDO"], help="Designated Officer or Principal Designated Officer"
    )
    add.add_argument("--name", required=True, help="the officer's full name")
    add.add_argument("--email", required=True, help="the officer's secure e-mail address")
    add.add_argument(
        "--key", required=True, type=Path, metavar="PUBKEY.asc", help="their OpenPGP public key (sign and encrypt)"
    )
    add.add_argument("--id", dest="officer_id", metavar="ID", help="the officer's id (default: agency-name)")
    add.add_argument(
        "--ssh-key", type=Path, metavar="KEY.pub", help="their SSH public key, for SFTP (or later: officers ssh-key)"
    )
    add.add_argument("--json", action="store_true", help="print the registered officer as one JSON object")
    add.set_defaults(handler=_officers_add)
    listing = officers.add_parser("list", help="list the officers")
    listing.add_argument("--agency", metavar="A", help="only this agency's officers")
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    listing.set_defaults(handler=_officers_list)
    show = officers.add_parser("show", help="show one officer")
    show.add_argument("officer", metavar="O", help="the officer's id (see officers list)")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(handler=_officers_one)
    revoke = officers.add_parser(
        "revoke",
        help="revoke an officer at once: their signatures are refused",
        description="Revoke O: submissions signed by O are refused from now on. With --reencrypt, packages not "
        "yet pulled that were encrypted to O lose O's session key, so only the agency's other officers open them.",
    )
    revoke.add_argument("officer", metavar="O", help="the officer's id")
    revoke.add_argument("--reencrypt", action="store_true", help="take O off the packages not yet pulled")
    revoke.add_argument("--json", action="store_true", help="print the revoked officer as one JSON object")
    revoke.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    revoke.set_defaults(handler=_officers_revoke)
    rekey = officers.add_parser(
        "rekey",
        help="replace an officer's key",
        description="Make NEW.asc the officer's key. The old key signs no more submissions (after --grace-days, "
        "if given); packages already encrypted to it still open with it.",
    )
    rekey.add_argument("officer", metavar="O", help="the officer's id")
    rekey.add_argument("--key", required=True, type=Path, metavar="NEW.asc", help="their new OpenPGP public key")
    rekey.add_argument("--grace-days", type=int, default=0, metavar="N", help="accept the old key N more days")
    rekey.add_argument("--json", action="store_true", help="print the officer as one JSON object")
    rekey.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rekey.set_defaults(handler=_officers_rekey)
    ssh_key = officers.add_parser(
        "ssh-key",
        help="set or replace an officer's SSH public key",
        description="Make the key in KEY.pub (one `type base64 [comment]` line, as ssh-keygen writes it) the key O "
        "connects with over SFTP. Ed25519, ECDSA, security keys (sk-...) and RSA of 3072 bits or more are accepted; "
        "DSA, shorter RSA, options before the key and private keys are refused.",
    )
    ssh_key.add_argument("officer", metavar="O", help="the officer's id")
    ssh_key.add_argument("file", type=Path, metavar="KEY.pub", help="their SSH public key file")
    ssh_key.add_argument("--json", action="store_true", help="print the officer as one JSON object")
    ssh_key.set_defaults(handler=_officers_ssh_key)
    password = officers.add_parser(
        "set-password",
        help="set the password an officer logs in to the SMTP intake with",
        description="Make the password in F (a 0600 file holding only it) the one O logs in to the SMTP intake "
        "with. It must meet the partnership's password policy; only its scrypt hash is kept, and it is never "
        "printed or logged. Setting it again replaces it.",
    )
    password.add_argument("officer", metavar="O", help="the officer's id")
    password.add_argument("--password-file", required=True, type=Path, metavar="F", help="a 0600 file holding it")
    password.set_defaults(handler=_officers_set_password)
    _officers_export_command(officers)

    keys = commands.add_parser(
        "keys", help="list and rotate keys and passwords; hand out the gateway key and agency passwords"
    ).add_subparsers(metavar="ACTION", required=True)
    _key_commands(keys)
    _keys_export_command(keys)
    imported = keys.add_parser("import", help="set an AES-ZIP agency's password by hand (checked against the policy)")
    imported.add_argument("--agency", required=True, metavar="A", help="the AES-ZIP agency's id in gateway.toml")
    imported.add_argument("--password-file", required=True, type=Path, metavar="F", help="a 0600 file holding it")
    imported.set_defaults(handler=_keys_import)
    _keys_relay_command(keys)


def _keys_relay_command(keys: Any) -> None:
    relay = keys.add_parser(
        "relay-password", help="store the [smtp.relay] login's password in the vault (it never goes in gateway.toml)"
    )
    relay.add_argument("--password-file", required=True, type=Path, metavar="F", help="a 0600 file holding it")
    relay.set_defaults(handler=_keys_relay_password)
    journal = keys.add_parser(
        "journal-password",
        help="store the PostgreSQL journal's login password in the vault (it never goes in gateway.toml)",
        description="Keep the password of the [journal] url login in the vault, where every node reads it; a "
        "systemd credential named journal-password, when there is one, is used before it.",
    )
    journal.add_argument("--password-file", required=True, type=Path, metavar="F", help="a 0600 file holding it")
    journal.set_defaults(handler=_keys_journal_password)


def _keys_export_command(keys: Any) -> None:
    export = keys.add_parser(
        "export",
        help="export the gateway's public keys, or an agency's current password",
        description="--gateway: every gateway public key recipients still need, in one armored block: the "
        "current one and each retired one that signed a package still in an inbox. --agency A --password: the "
        "AES-ZIP agency's current password.",
    )
    what = export.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--gateway", action="store_true", help="the gateway's public keys (armored): current, and retired still needed"
    )
    what.add_argument("--agency", metavar="A", help="with --password: the AES-ZIP agency's current password")
    export.add_argument("--password", action="store_true", help="export the agency's password (needs --to)")
    export.add_argument("--to", type=Path, metavar="FILE", help="write to this new file (created 0600)")
    export.set_defaults(handler=_keys_export)


def _officers_export_command(officers: Any) -> None:
    exported = officers.add_parser(
        "export",
        help="the active officers' public keys, armored, for partners to check senders' signatures",
        description="Write the public keys of the active officers (of A, or of every agency) from the gateway's "
        "keyring in one armored block, to stdout or a new 0600 file, so partners can `gpg --import` them and "
        "check a sender's own signature with `gpg --verify`.",
    )
    exported.add_argument("--agency", metavar="A", help="only this agency's officers")
    exported.add_argument("--to", type=Path, metavar="FILE", help="write to this new file (created 0600)")
    exported.set_defaults(handler=_officers_export)


def _open(args: argparse.Namespace) -> Root:
    """Open the root; `main` closes it when the command ends (which checkpoints what it appended)."""
    from gateway.state.root import Root

    root: Root = args.opened.enter_context(Root.open(resolve_root(args.root)))
    return root


def _init(args: argparse.Namespace) -> int:
    from gateway.admin.init import init_root

    result = init_root(resolve_root(args.root), demo=args.demo, algorithm=args.algorithm)
    print(f"gateway root ready at {result.root}: gateway key {result.gateway_key}")
    if result.officers:
        print(f"demo officers: {', '.join(result.officers)} (keys under keys/demo-officers/: demo keys only)")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from gateway.admin.demo import run_demo

    folder = resolve_root(args.root) / "demo"
    print("iom-gateway demo: the monthly IOM exchange, end to end\n")
    surprises = run_demo(folder, print)
    if surprises:
        print(f"iom-gateway: the demo did not go as expected ({surprises} surprise(s))", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


def _smtp(args: argparse.Namespace) -> int:
    from gateway.daemon.smtp import serve

    _structured_logging()
    return serve(resolve_root(args.root))


def _officers_set_password(args: argparse.Namespace) -> int:
    from gateway.admin.officers import set_password

    officer = set_password(_open(args), args.officer, args.password_file)
    print(f"{officer.id} now logs in to the SMTP intake with the password in {str(args.password_file)!r}")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from gateway.daemon.watch import run_once, serve
    from gateway.exchange.intake import REJECTED
    from gateway.exchange.outcome import Rejected

    path = resolve_root(args.root)
    if not args.once:
        _structured_logging()
        return serve(path)
    outcomes = run_once(path)
    refused = EXIT_REFUSED if any(isinstance(o, Rejected) for o in outcomes) else EXIT_OK
    if args.json:  # what the lines say, as fields: names, stages, rule messages; never a cell of the data
        found = [{"outcome": type(o).__name__.lower(), **asdict(o)} for o in outcomes]
        print(json.dumps({"outcomes": found, "refused": refused == EXIT_REFUSED}, indent=2, default=str))
        return refused
    for outcome in outcomes:
        print(outcome.summary)
        if isinstance(outcome, Rejected):
            where = outcome.report or f"not written: outbox/{outcome.agency}/{REJECTED} is not a plain folder"
            print(f"          report: {where}")
    if not outcomes:
        print("nothing to process")
    return refused


def _submit(args: argparse.Namespace) -> int:
    from gateway.exchange.submit import submit

    report, target = submit(
        _open(args),
        args.file,
        agency_id=args.agency,
        officer_id=args.officer,
        marking=args.marking,
        gnupghome=args.gnupghome,
        today=date.today(),
        corrects=args.corrects,
    )
    if target is None:
        sys.stdout.write(report.to_text())
        print("not submitted: fix the errors above and submit again", file=sys.stderr)
        return EXIT_REFUSED
    print(f"submitted {target} ({report.rows} rows) with its signature")
    return EXIT_OK


def _pull(args: argparse.Namespace) -> int:
    from gateway.exchange.recipient import pull, pull_from

    if args.from_dir is not None:
        if args.agency or args.officer:
            raise UsageError("--from takes no --agency or --officer: each manifest names its recipient")
        results = pull_from(
            args.from_dir,
            args.to,
            gateway_keys=args.gateway_key,
            gateway_fingerprints=args.gateway_fingerprint,
            gnupghome=args.gnupghome,
            password_file=args.password_file,
            raw=args.raw,
            again=args.again,
            receipts=args.receipts,
        )
    else:
        if args.agency is None:
            raise UsageError("pass --agency A (pulling in the gateway root) or --from DIR (away from it)")
        if args.gateway_key or args.gateway_fingerprint or args.receipts:
            raise UsageError("--gateway-key, --gateway-fingerprint and --receipts go with --from DIR")
        results = pull(
            _open(args),
            args.agency,
            args.to,
            officer=args.officer,
            gnupghome=args.gnupghome,
            password_file=args.password_file,
            raw=args.raw,
            again=args.again,
        )
    failed = EXIT_REFUSED if any(item.failed for item in results) else EXIT_OK
    if args.json:
        packages = [asdict(item) for item in results]
        where = {"agency": args.agency} if args.from_dir is None else {"from": str(args.from_dir)}
        print(json.dumps({**where, "packages": packages}, indent=2, default=str))
        return failed
    for item in results:
        if item.failed:
            print(f"iom-gateway: REFUSED {item.package}: {item.failed}", file=sys.stderr)
        else:
            print(f"wrote {item.written}" if item.written else f"skipped {item.package}: {item.skipped}")
        if item.receipt:
            print(f"receipt {item.receipt} (upload it and its .sig into outbox/<agency>/receipts/)")
        if item.superseded:
            print(f"superseded {item.superseded}.csv: {item.package} corrects it ({item.superseded}.superseded.txt)")
        if item.warning:
            print(f"iom-gateway: warning: {item.warning}", file=sys.stderr)
    if not results:
        print(f"nothing waiting for {args.agency}" if args.from_dir is None else f"no packages in {args.from_dir}")
    return failed


def _officers_add(args: argparse.Namespace) -> int:
    from gateway.admin.officers import add_officer

    officer = add_officer(
        _open(args),
        agency=args.agency,
        role=args.role,
        name=args.name,
        email=args.email,
        key=args.key,
        officer_id=args.officer_id,
        ssh_key=args.ssh_key,
    )
    if args.json:
        print(json.dumps(officer.to_json(), indent=2))
        return EXIT_OK
    print(f"registered {officer.id} ({officer.role.value} of {officer.agency}), key {officer.fingerprint}")
    if officer.ssh_fingerprint:
        print(f"SSH key {officer.ssh_fingerprint}")
    return EXIT_OK


def _officers_list(args: argparse.Namespace) -> int:
    from gateway.admin.officers import officers

    found = officers(_open(args), args.agency)
    if args.json:
        print(json.dumps([o.to_json() for o in found], indent=2))
        return EXIT_OK
    for o in found:
        ssh = f"  ssh {o.ssh_fingerprint}" if o.ssh_fingerprint else "  ssh none"
        print(f"{o.id:24} {o.agency:10} {o.role.value:3} {o.status:8} {o.fingerprint}  {o.name} <{o.email}>{ssh}")
    return EXIT_OK


def _officers_revoke(args: argparse.Namespace) -> int:
    from gateway.admin.rotation import revoke_officer

    _confirm(
        args, f"revoke officer {args.officer}" + (" and take them off unpulled packages" if args.reencrypt else "")
    )
    officer, packages = revoke_officer(_open(args), args.officer, reencrypt=args.reencrypt)
    if args.json:
        print(json.dumps(officer.to_json() | {"reencrypted": packages}, indent=2))
        return EXIT_OK
    _print_officer(officer, as_json=False)
    if args.reencrypt and not args.json:
        print(f"re-encrypted {len(packages)} package(s) not yet pulled without {officer.id}'s key")
    return EXIT_OK


def _officers_export(args: argparse.Namespace) -> int:
    from gateway.admin.keys import export_officers

    _write_keys(export_officers(_open(args), args.agency), args.to, "the officers' public keys")
    return EXIT_OK


def _write_keys(exported: Exported, to: Path | None, what: str) -> None:
    """Public keys to stdout, or to a new 0600 file `to` (never over one), saying which keys went there."""
    if to is None:
        sys.stdout.write(exported.armored)
        return
    _write_new(to, exported.armored.encode("ascii"), what)
    print(f"wrote {what} to {to} (mode 0600): {len(exported.keys)} key(s)")
    for fingerprint, whose in exported.keys:
        print(f"  {fingerprint}  {whose}")


def _officers_one(args: argparse.Namespace) -> int:
    _print_officer(_open(args).registry.get(args.officer), as_json=args.json)
    return EXIT_OK


def _print_officer(officer: Officer, *, as_json: bool) -> None:
    print(
        json.dumps(officer.to_json(), indent=2)
        if as_json
        else "\n".join(f"{key:15} {'none' if value is None else value}" for key, value in officer.to_json().items())
    )


def _officers_rekey(args: argparse.Namespace) -> int:
    from gateway.admin.officers import rekey_officer

    if args.grace_days < 0:
        raise UsageError("--grace-days must be 0 or more")
    _confirm(args, f"replace the key of officer {args.officer}")
    officer = rekey_officer(_open(args), args.officer, args.key, grace_days=args.grace_days)
    if args.json:
        print(json.dumps(officer.to_json() | {"grace_days": args.grace_days}, indent=2))
        return EXIT_OK
    grace = f"; the old key is accepted {args.grace_days} more day(s)" if args.grace_days else ""
    print(f"{officer.id} now signs with {officer.fingerprint}{grace}")
    return EXIT_OK


def _officers_ssh_key(args: argparse.Namespace) -> int:
    from gateway.admin.officers import set_ssh_key

    officer, changed = set_ssh_key(_open(args), args.officer, args.file)
    if args.json:
        print(json.dumps(officer.to_json() | {"changed": changed}, indent=2))
    elif changed:
        print(f"{officer.id} now connects with SSH key {officer.ssh_fingerprint}")
    else:
        print(f"{officer.id} already has SSH key {officer.ssh_fingerprint}: nothing changed")
    return EXIT_OK


def _keys_import(args: argparse.Namespace) -> int:
    from gateway.admin.keys import import_password

    record = import_password(_open(args), args.agency, args.password_file)
    print(f"{args.agency} now uses password {record}; older packages keep theirs")
    return EXIT_OK


def _keys_relay_password(args: argparse.Namespace) -> int:
    from gateway.admin.keys import set_relay_password

    user = set_relay_password(_open(args), args.password_file)
    print(f"the relay login {user!r} now uses the password in {str(args.password_file)!r} (kept in the vault)")
    return EXIT_OK


def _keys_journal_password(args: argparse.Namespace) -> int:
    from gateway.admin.journal import set_password

    set_password(_open(args), args.password_file)
    print(f"the journal's login now uses the password in {str(args.password_file)!r} (kept in the vault)")
    return EXIT_OK


def _keys_export(args: argparse.Namespace) -> int:
    from gateway.admin.keys import export_gateway_keys, export_password, show_password

    root = _open(args)
    if args.gateway:
        _write_keys(export_gateway_keys(root), args.to, "the gateway's public keys")
        return EXIT_OK
    if not args.password:
        raise UsageError("keys export --agency A needs --password, and --to FILE unless you are at a terminal")
    if args.to is None:
        if not sys.stdout.isatty():
            raise UsageError("the password goes only to a terminal or to a new 0600 file: pass --to FILE")
        record, password = show_password(root, args.agency)
        print(f"{args.agency} password {record}: {password.reveal()}")
        return EXIT_OK
    record = export_password(root, args.agency, args.to)
    print(
        f"wrote the current password of {args.agency} ({record}) to {args.to} (mode 0600): hand it to the "
        "agency's PDO out of band, then delete the file"
    )
    return EXIT_OK


# ----------------------------------------------------------------------------------------- oversight


def _oversight_commands(commands: Any) -> None:
    audit = commands.add_parser("audit", help="the tamper-evident audit log").add_subparsers(
        title="audit commands", metavar="ACTION", required=True
    )
    verify = audit.add_parser(
        "verify",
        help="check the hash chain, signed checkpoints and head; exit 1 naming the first broken entry",
        description="Check state/audit.jsonl step by step: canonical lines, consecutive numbers, the hash chain, "
        "the checkpoints signed by the gateway key, the head kept outside the log, the anchor left by purge, the "
        "signed genesis, no more unsigned entries after the newest checkpoint than [daemon] allows, and the "
        "manifests in inbox/ (and in each --witness DIR) as witnesses of what the log held when they were sealed. "
        "Exit 0 intact, 1 on any edit, deletion, insertion or reordering.",
    )
    verify.add_argument(
        "--witness",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="also check the log against the manifests in DIR (e.g. a recipient's copy of their inbox); repeatable",
    )
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(handler=_audit_verify)
    show = audit.add_parser("show", help="list audit events", description="List audit events, oldest first.")
    show.add_argument("--since", type=_day, metavar="YYYY-MM-DD", help="only events on or after this day (UTC)")
    show.add_argument("--event", metavar="NAME", help="only this event, or those under it (submission = submission.*)")
    show.add_argument("--json", action="store_true", help="print a JSON list")
    show.set_defaults(handler=_audit_show)
    report = audit.add_parser(
        "report",
        help="the disclosure register of a month's data",
        description="What was disclosed to whom of the data for a month: period, delivery date and time, from "
        "agency and officer, to agency, marking, rows, columns shared, purpose and legal basis (Warwickshire "
        "2.3.3.3, Solihull 4.4.3). A package is listed under the period its data is for, not the month it was "
        "delivered in: November's data delivered in December is in --month YYYY-11.",
    )
    report.add_argument(
        "--month", type=_period, required=True, metavar="YYYY-MM", help="the period the data is for (not delivery)"
    )
    report.add_argument("--format", choices=REPORT_FORMATS, default="csv", help="csv (default), html or json")
    report.add_argument("--json", action="store_true", help="same as --format json")
    report.add_argument("--to", type=Path, metavar="FILE", help="write to FILE (mode 0600) instead of the screen")
    report.set_defaults(handler=_audit_report)
    _report_command(commands)

    purge = commands.add_parser(
        "purge",
        help="delete what is past retention, and the passwords only expired packages needed",
        description="Delete expired packages, the AES passwords that only they needed, quarantined submissions, "
        "rejection reports and audit entries past the retention in gateway.toml [retention]. Run daily by "
        "iom-gateway-purge.timer.",
    )
    purge.add_argument("--dry-run", action="store_true", help="say what would be deleted; delete nothing")
    purge.add_argument("--json", action="store_true", help="print one JSON object")
    purge.set_defaults(handler=_purge)

    health = commands.add_parser(
        "status",
        help="queues, last run, refusals, keys near expiry, agencies late for the month",
        description="Health at a glance, and why each file in an outbox still waits. Reads only, so it runs "
        "beside the daemon. Exit 1 while an 'attention' line says something needs the admin (a deferred "
        "delivery, a key near expiry, an agency late for the month, files in an orphaned outbox, a gateway "
        "that never ran); 0 otherwise. Refusals in the last 24 h are notes: each sender got a report.",
    )
    health.add_argument("--json", action="store_true", help="print one JSON object (same as --format json)")
    health.add_argument(
        "--format",
        choices=("text", "json", "prometheus"),
        default="text",
        help="text (default), json, or prometheus: the metrics the daemon also writes to state/metrics.prom "
        "every minute for node_exporter's textfile collector (counts, ages, agency ids; never a name or value)",
    )
    health.set_defaults(handler=_status)


def _day(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day: write it as YYYY-MM-DD") from None


def _audit_verify(args: argparse.Namespace) -> int:
    from gateway.admin.oversight import verify_audit

    checked = verify_audit(_open(args), args.witness)
    verdict = checked.verdict
    if args.json:
        ignored = [{"file": name, "why": why} for name, why in checked.ignored]
        print(json.dumps(asdict(verdict) | {"ignored_manifests": ignored}, indent=2))
        return EXIT_OK if verdict.ok else EXIT_REFUSED
    for name, why in checked.ignored:
        print(f"not a witness: {name!r}: {why}")
    if verdict.ok:
        print(
            f"audit log intact: {verdict.entries} entries, {verdict.checkpoints} signed checkpoint(s), "
            f"last entry {verdict.last_seq}; {verdict.witnesses} manifest(s) witness it"
        )
    else:
        print(f"audit log BROKEN (step {verdict.step}): {verdict.problem}")
    return EXIT_OK if verdict.ok else EXIT_REFUSED


def _audit_show(args: argparse.Namespace) -> int:
    from gateway.admin.oversight import audit_events

    entries = audit_events(_open(args), args.since, args.event)
    if args.json:
        print(json.dumps(entries, indent=2, ensure_ascii=False))
        return EXIT_OK
    for entry in entries:
        fixed = {"seq", "time", "event", "actor", "agency", "prev", "ref"}
        details = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in entry.items() if k not in fixed)
        print(
            f"{entry['seq']:>6} {entry['time']} {entry['event']:24} actor={entry['actor']} "
            f"agency={entry.get('agency') or '-'} {details}".rstrip()
        )
    return EXIT_OK


def _audit_report(args: argparse.Namespace) -> int:
    from gateway.admin.oversight import disclosure_report

    text = disclosure_report(_open(args), args.month, "json" if args.json else args.format)
    if args.to is None:
        sys.stdout.write(text)
    else:
        _write_new(args.to, text.encode("utf-8"), "the register")
        print(f"wrote the disclosure register of the data for {args.month} (whenever delivered) to {args.to}")
    return EXIT_OK


def _report_command(commands: Any) -> None:
    reports = commands.add_parser("report", help="reports for the partnership's governance").add_subparsers(
        title="report commands", metavar="REPORT", required=True
    )
    quality = reports.add_parser(
        "quality",
        help="the data-quality scorecard of a month: validity, completeness, timeliness, corrections, change",
        description="Per agency and for the partnership, what the gateway can measure of information quality "
        "(Solihull 2.2): rows and cells passing each Table 1 rule and files accepted or refused (validity), how "
        "often each optional column an agency may send is filled (completeness), the first accepted file against "
        "the due day (timeliness), corrections sent (accuracy) and the change from the month before "
        "(reliability), with 12-month charts in the HTML form. Built from counts kept at validation, never from "
        "personal data. A month with no data gives an empty, labelled report.",
    )
    quality.add_argument("--month", type=_period, required=True, metavar="YYYY-MM", help="the period the data is for")
    quality.add_argument("--format", choices=REPORT_FORMATS, default="html", help="html (default), csv or json")
    quality.add_argument("--to", type=Path, metavar="FILE", help="write to FILE (mode 0600) instead of the screen")
    quality.set_defaults(handler=_report_quality)


def _report_quality(args: argparse.Namespace) -> int:
    from gateway.governance.quality import scorecard
    from gateway.governance.quality_report import to_csv, to_html, to_json

    card = scorecard(_open(args), args.month, datetime.now(UTC))
    text = {"html": to_html, "csv": to_csv, "json": to_json}[args.format](card)
    if args.to is None:
        sys.stdout.write(text)
    else:
        _write_new(args.to, text.encode("utf-8"), "the scorecard")
        empty = " (no submissions were recorded for that month)" if card.empty else ""
        print(f"wrote the data-quality scorecard for {args.month} to {args.to}{empty}")
    return EXIT_OK


def _write_new(path: Path, data: bytes, what: str) -> None:
    """Write `data` to a new 0600 file `path`, as `keys export` does: never over a file already there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise UsageError(
            f"cannot write {what} to {str(path)!r}: it already exists; name a new file (it will be created 0600)"
        ) from None
    except OSError as exc:  # a path the user typed: a missing folder, no permission
        raise UsageError(
            f"cannot write {what} to {str(path)!r} ({exc.strerror}): name a file in a folder you can write"
        ) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as exc:
        path.unlink(missing_ok=True)  # the file this call created: never leave half of it
        if isinstance(exc, OSError):
            raise StorageError(f"could not write {what} to {str(path)!r} ({exc.strerror}): nothing kept") from None
        raise


def _purge(args: argparse.Namespace) -> int:
    from gateway.admin.retention import purge

    result = purge(_open(args), datetime.now(UTC), dry_run=args.dry_run)
    if args.json:
        print(json.dumps(asdict(result), indent=2))
        return EXIT_OK
    verb = "would delete" if result.dry_run else "deleted"
    print(
        f"{verb}: {len(result.packages)} expired package(s), {len(result.passwords)} password(s), "
        f"{len(result.keys)} retired gateway key(s), "
        f"{len(result.quarantined)} quarantined file(s), {len(result.reports)} report(s), "
        f"{result.audit_entries} audit entr(y/ies), {result.sar_entries} subject access index entr(y/ies), "
        f"{len(result.request_texts)} request text(s)"
    )
    for name in (*result.packages, *result.passwords, *result.keys, *result.quarantined, *result.reports):
        print(f"  {name}")
    for ident in result.request_texts:
        print(f"  the text of request {ident}")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from gateway.admin.oversight import status

    root, now = _open(args), datetime.now(UTC)
    health = status(root, now)
    code = EXIT_REFUSED if health.attention else EXIT_OK  # monitoring: 1 while something needs the admin
    if args.format == "prometheus":
        from gateway.exchange.metrics import render

        sys.stdout.write(render(root, now))
        return code
    if args.json or args.format == "json":
        print(json.dumps(health.to_json(), indent=2, ensure_ascii=False))
        return code
    run = health.last_run
    print(f"iom-gateway status at {health.now}")
    if run is None:
        print("last run:      never")
    else:
        state = f"finished {run['finished']}" if run["finished"] else f"running (heartbeat {run['heartbeat']})"
        print(
            f"last run:      {run['mode']} pid {run['pid']} started {run['started']}, {state}, "
            f"{run['processed']} processed, {run['errors']} refused"
        )
    print(f"in flight:     {health.in_flight}")
    print("agency        outbox waiting   inbox unpulled")
    for agency in health.outbox_waiting:
        print(f"{agency:14}{health.outbox_waiting[agency]:>14}   {health.inbox_unpulled[agency]:>14}")
    errors = health.errors_24h
    print(f"refused (24h): {errors['rejected']} rejected, {errors['abandoned']} abandoned")
    print(f"late for {health.period} (due day {health.due_day}): {', '.join(health.late) or 'none'}")
    print("waiting:       " + ("none" if not health.waiting else ""))
    for waiting in health.waiting:
        print(f"  - {waiting.agency}/{waiting.file} ({waiting.age_seconds} s): {waiting.why}")
    print("deferred:      " + ("none" if not health.deferred else ""))
    for deferred in health.deferred:
        where = f"{deferred.agency}/{deferred.file} to {deferred.recipient}"
        print(f"  - {where} since {deferred.since}: {deferred.reason}")
    print("requests open: " + ("none" if not health.requests else ""))
    for request in health.requests:
        flags = (" URGENT" if request.urgent else "") + (
            f" OVERDUE {request.days_overdue} day(s)" if request.days_overdue else ""
        )
        print(f"  - {request.id} {request.from_agency} to {request.to_agency}, due {request.due}{flags}")
    for line in health.notes:
        print(f"note:          {line}")
    attention = health.attention
    print("attention:     " + ("none" if not attention else ""))
    for line in attention:
        print(f"  - {line}")
    return code


_FROM_STDIN = "- reads it from standard input, out of sight of `ps`"


def _read_dashes(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """Read the options given as `-` from standard input: what they hold is about a person, and a command
    line can be read by any user of the host while it runs. One such option takes the whole input (less its
    final line break); several take a line each, in the order of `names`. Raises UsageError if lines lack."""
    dashed = [name for name in names if getattr(args, name, None) == "-"]
    if not dashed:
        return
    text = sys.stdin.read()
    values = [text.removesuffix("\n").removesuffix("\r")] if len(dashed) == 1 else text.splitlines()
    if len(values) < len(dashed) or not all(v.strip() for v in values[: len(dashed)]):
        options = " ".join(f"--{name.replace('_', '-')} -" for name in dashed)
        if len(dashed) == 1:
            raise UsageError(f"{options} reads the text from standard input, and it is empty: give the text there")
        raise UsageError(
            f"{options}: standard input must hold one line for each, in that order; it has {len(values)} "
            "line(s), or an empty one"
        )
    for name, value in zip(dashed, values, strict=False):
        setattr(args, name, value)


def _sar_command(commands: Any) -> None:
    sar = commands.add_parser(
        "sar",
        help="which packages held a person (subject access), found by keyed hashes: no personal data kept",
        description="List every package that held a person, named by CRO number or by surname and date of birth "
        "(Solihull 5.1, Warwickshire Appendix 2): when it was delivered, from and to which agency, marking, "
        "period, rows, whether it is still in the inbox or purged, and when it was first pulled and receipted. "
        "The gateway keeps only keyed hashes (HMAC-SHA-256 under the SAR key in the vault) of who was in each "
        "package: packages delivered before the last `keys rotate --sar-key`, or purged past audit retention, "
        "are not found. Every look-up is on the audit log (who asked, how many found; never whom about). "
        "Exit 0, also when nothing is found; 2 for a CRO number or date that is not one.",
    )
    sar.add_argument(
        "--cro", metavar="NNNNNN/YYC", help=f"the person's CRO number (case and spaces do not matter; {_FROM_STDIN})"
    )
    sar.add_argument(
        "--surname",
        metavar="S",
        help=f"the person's surname (with --dob; case, spaces, ' - . do not matter; {_FROM_STDIN})",
    )
    sar.add_argument("--dob", metavar="DD/MM/YYYY", help=f"the person's date of birth (with --surname; {_FROM_STDIN})")
    sar.add_argument("--json", action="store_true", help="print one JSON object")
    sar.set_defaults(handler=_sar)


def _sar(args: argparse.Namespace) -> int:
    from gateway.governance.sar import by_cro, by_name, lookup

    _read_dashes(args, ("cro", "surname", "dob"))
    named = args.surname is not None or args.dob is not None
    if (args.cro is None) == (not named):
        raise UsageError("name the person one way: --cro NNNNNN/YYC, or --surname S --dob DD/MM/YYYY")
    if named and (args.surname is None or args.dob is None):
        raise UsageError("--surname and --dob go together: give both (or --cro instead)")
    root = _open(args)
    query = by_cro(root.standard, args.cro) if args.cro is not None else by_name(args.surname, args.dob)
    answer = lookup(root, query, user=_user(os.geteuid()))
    if args.json:
        print(json.dumps(answer.to_json(), indent=2))
        return EXIT_OK
    how = "CRO number" if answer.by == "cro" else "surname and date of birth"
    if not answer.packages:
        print(
            f"subject access look-up by {how}: no package in the index held this person (the index covers packages "
            "delivered since the SAR key was last rotated and not yet past audit retention)"
        )
        return EXIT_OK
    print(f"subject access look-up by {how}: {len(answer.packages)} package(s) held this person")
    print(
        f"{'delivered':25} {'from':10} {'to':10} {'marking':18} {'period':7} {'rows':>6} {'status':6} "
        f"{'pulled':25} {'received':25} package"
    )
    for p in answer.packages:
        print(
            f"{p.delivered:25} {p.sender:10} {p.recipient:10} {p.marking:18} {p.period:7} {p.rows:>6} {p.status:6} "
            f"{p.pulled or '-':25} {p.received or '-':25} {p.package}"
        )
    return EXIT_OK


# ----------------------------------------------------------------------------------------- check


def _check_command(commands: Any) -> None:
    smtp = commands.add_parser(
        "smtp",
        help="the SMTP intake: officers send their file by e-mail ([smtp.intake] in gateway.toml)",
        description="Take submissions by e-mail until stopped (SIGTERM, Ctrl-C): STARTTLS only, AUTH as a "
        "registered officer with the password `officers set-password` set, mail only from their registered "
        "address and only to [smtp.intake] address, the CSV and its detached signature attached. Each accepted "
        "message is in the agency's outbox before the server answers 250; the daemon then takes it as any drop.",
    )
    smtp.set_defaults(handler=_smtp)

    check = commands.add_parser(
        "check",
        help="check gateway.toml, schemas, ownership matrix, officers, keys and folders together; start nothing",
        description="Validate gateway.toml, the schemas and ownership matrix, the officer register, the keys and "
        "the agencies' folders together, and print each agency's route: who receives its files, by which "
        "delivery, to how many active officers or with which current password. Lists folders missing or "
        "orphaned (an agency no longer in gateway.toml), keys expiring within 30 days, and every problem with "
        "its fix. Writes nothing, takes no lock, leaves no gpg-agent running; the AES passwords are checked only "
        "where the vault passphrase is available. Exit 0 no problem, 1 a problem, 2 not a gateway root.",
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    from gateway.admin.check import check_root

    result = check_root(resolve_root(args.root), datetime.now(UTC))
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        _print_check(result)
    return EXIT_OK if result.ok else EXIT_REFUSED


def _print_check(result: Checked) -> None:
    print(f"iom-gateway check of {result.root}")
    if result.routes:
        print(f"{'agency':14}{'kind':11}{'delivery':9} {'can be sealed for':34} sends to")
    for route in result.routes:
        sends = ", ".join(route.recipients) or "-"
        print(f"{route.agency:14}{route.kind:11}{route.delivery:9} {route.readiness:34} {sends}")
    if result.routes:  # none when gateway.toml or the schemas did not load: then nothing below was looked at
        print(f"folders:       {result.folders} present, {len(result.missing)} missing")
        orphans = ", ".join(f"{o.folder} ({o.files} file(s))" for o in result.orphans)
        print(f"orphaned:      {orphans or 'none'}")
        print(f"keys:          {len(result.keys)} expired, revoked, missing or expiring within 30 days")
    for line in result.not_checked:
        print(f"not checked:   {line}")
    for heading, lines in (("warning", result.warnings), ("PROBLEM", result.problems)):
        for line in lines:
            print(f"{heading}: " + line.replace("\n", "\n  "))  # a config error lists its mistakes a line each
    if result.ok:
        print("OK: no problems" + (f" ({len(result.warnings)} warning(s))" if result.warnings else ""))
    else:
        print(f"{len(result.problems)} problem(s): fix them and run `iom-gateway check` again")


# ----------------------------------------------------------------------------------------- access


def _access_command(commands: Any) -> None:
    access = commands.add_parser("access", help="who may read what: the agencies' Unix groups").add_subparsers(
        title="access commands", metavar="ACTION", required=True
    )
    check = access.add_parser(
        "check",
        help="audit every folder and file of the root against the access model; change nothing",
        description="Compare the owner, group, mode and ACL of every folder and file under the root with the "
        'access model (README "Access model"): each agency\'s group reads its inbox/ and rejected/ reports and '
        "writes its outbox/; nothing else is readable by any group. Prints each deviation with the command that "
        "fixes it. Exit 0 the root matches, 1 a deviation, 2 not a gateway root.",
    )
    check.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    check.set_defaults(handler=_access_check)
    sync = access.add_parser(
        "sync",
        help="run as root: make the host's accounts, chroots and sshd match the officer register",
        description="Make this host match the officer register, so each active officer with an SSH key reaches "
        "only their agency's outbox/ (write), outbox/rejected/ and inbox/ (read) over the system's OpenSSH "
        "(internal-sftp, chrooted, public key only): the agencies' groups, one locked shell-less account per "
        "officer ([access] account_prefix + id), a chroot per agency under [access] chroot_dir with bind mounts "
        "(and systemd mount units for boot), the command that serves keys from the register, and the sshd "
        "drop-in, checked with sshd -t first. Revoked officers' accounts are locked. Prints the plan; every "
        "change is an audit event; a second run changes nothing. Exit 0 done, 1 refused (nothing changed).",
    )
    sync.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    sync.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sync.set_defaults(handler=_access_sync, as_root=True)
    keys = access.add_parser(
        "authorized-keys",
        help="the key sshd may accept for an officer's account (sshd runs this)",
        description="Print the authorized_keys line of the officer whose account `access sync` made, if that "
        "officer is active; print nothing otherwise: what sshd gets, as the gateway user, from [access] sshd_dir/"
        "iom-gateway-authorized-keys (AuthorizedKeysCommand; it runs the same look-up with nothing else loaded), "
        "so a revoked officer's next connection is refused at once.",
    )
    keys.add_argument("account", metavar="ACCOUNT", help="the system account's name (sshd's %%u)")
    keys.add_argument("uid", metavar="UID", nargs="?", help="its uid (sshd's %%U): nothing is printed if it differs")
    keys.set_defaults(handler=_access_authorized_keys)


def _access_check(args: argparse.Namespace) -> int:
    from gateway.access.check import audit as audit_access

    root = _open(args)
    found = audit_access(root.path, root.config.agencies)
    if args.json:
        rows = [{"path": d.path, "problem": d.problem, "fix": d.fix} for d in found]
        print(json.dumps({"root": str(root.path), "ok": not found, "deviations": rows}, indent=2, ensure_ascii=False))
    else:
        print(f"iom-gateway access check of {root.path}")
        for deviation in found:
            print(f"DEVIATION: {deviation.path}: {deviation.problem}\n  fix: {deviation.fix}")
        print("OK: the root matches the access model" if not found else f"{len(found)} deviation(s)")
    return EXIT_REFUSED if found else EXIT_OK


def _access_sync(args: argparse.Namespace) -> int:
    from gateway.access.sync import apply as apply_sync
    from gateway.access.sync import plan as plan_sync

    root = _open(args)
    todo = plan_sync(root)
    print(
        f"iom-gateway access sync of {root.path}: {len(todo.changes)} change(s)"
        + (" (dry run)" if args.dry_run else "")
    )
    for change in todo.changes:
        print(f"  {change.line}")
    for warning in todo.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    if args.dry_run or not todo.changes:
        print("nothing changed" if args.dry_run else "OK: the host matches the register")
        return EXIT_OK
    _confirm(args, f"make these {len(todo.changes)} change(s)")
    done = sum(1 for _ in apply_sync(root, todo.changes))
    for note in todo.notes:
        print(note)
    print(f"done: {done} change(s), each recorded in the audit log")
    return EXIT_OK


def _access_authorized_keys(args: argparse.Namespace) -> int:
    from gateway.access.keys import authorized_key

    line = authorized_key(_open(args).db, args.account, args.uid)
    if line is not None:
        print(line)
    return EXIT_OK


# ----------------------------------------------------------------------------------------- keys


def _key_commands(keys: Any) -> None:
    listing = keys.add_parser(
        "list",
        help="every key and password the gateway knows (never a value)",
        description="The gateway keys, each officer's keys, each AES password by id and the vault: created, "
        "expires, status (current, retired, revoked) and how many live packages depend on each.",
    )
    listing.add_argument("--json", action="store_true", help="print a JSON list")
    listing.set_defaults(handler=_keys_list)
    rotate = keys.add_parser(
        "rotate",
        help="replace the gateway key, an agency's password or the vault passphrase",
        description="--gateway: a new signing key becomes current; the old one stays to verify what it signed. "
        "--agency A: a new password for an AES-ZIP agency; old ones stay for their packages, or with "
        "--reencrypt the packages not yet pulled are re-packed and the old password is retired at once. "
        "--vault: re-encrypt the vault under the passphrase in --new-passphrase-file. "
        "--sar-key: a new key for the subject access index; the entries made under the old one are deleted.",
    )
    which = rotate.add_mutually_exclusive_group(required=True)
    which.add_argument("--gateway", action="store_true", help="the gateway's signing key")
    which.add_argument("--agency", metavar="A", help="an AES-ZIP agency's password")
    which.add_argument("--vault", action="store_true", help="the vault passphrase")
    which.add_argument(
        "--sar-key",
        action="store_true",
        help="the subject access index's key: the index made under the old one is deleted (look-ups then find "
        "nothing delivered before)",
    )
    rotate.add_argument("--reencrypt", action="store_true", help="with --agency: re-pack packages not yet pulled")
    rotate.add_argument(
        "--algorithm", choices=["ed25519", "rsa3072"], default="ed25519", help="with --gateway: the new key's kind"
    )
    rotate.add_argument(
        "--new-passphrase-file", type=Path, metavar="F", help="with --vault: a 0600 file holding the new passphrase"
    )
    rotate.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rotate.add_argument("--json", action="store_true", help="print what changed as one JSON object")
    rotate.set_defaults(handler=_keys_rotate)


def _confirm(args: argparse.Namespace, what: str) -> None:
    """On a terminal, ask before changing a secret (unless --yes); elsewhere (scripts, units) go ahead."""
    if args.yes or not sys.stdin.isatty():
        return
    answer = input(f"iom-gateway: {what}? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise UsageError("nothing changed (answer y to go ahead, or pass --yes)")


def _keys_list(args: argparse.Namespace) -> int:
    from gateway.admin.rotation import list_keys

    entries = list_keys(_open(args))
    if args.json:
        print(json.dumps([e.to_json() for e in entries], indent=2))
        return EXIT_OK
    print(f"{'kind':9} {'status':8} {'live':>5}  {'created':25} {'expires':25} {'owner':28} id")
    for e in entries:
        print(
            f"{e.kind:9} {e.status:8} {e.live_packages:>5}  {e.created or '-':25} {e.expires or '-':25} "
            f"{e.owner:28} {e.id}"
        )
    return EXIT_OK


def _keys_rotate(args: argparse.Namespace) -> int:
    from gateway.admin.rotation import rotate_agency, rotate_gateway, rotate_sar_key, rotate_vault

    if args.reencrypt and not args.agency:
        raise UsageError("--reencrypt goes with --agency A")
    if args.new_passphrase_file and not args.vault:
        raise UsageError("--new-passphrase-file goes with --vault")
    root = _open(args)
    if args.gateway:
        _confirm(args, "make a new gateway key current")
        done = rotate_gateway(root, args.algorithm)
        lines = [
            f"the gateway now signs with {done.new}; {done.old} is retired and still verifies what it signed",
            "give partners the new public key: iom-gateway keys export --gateway",
        ]
        changed: dict[str, object] = asdict(done)
    elif args.agency:
        _confirm(args, f"make a new password current for {args.agency}" + (" and re-pack" if args.reencrypt else ""))
        done = rotate_agency(root, args.agency, reencrypt=args.reencrypt)
        kept = "deleted" if args.reencrypt else "kept for the packages made with it"
        lines = [f"{args.agency} now uses password {done.new}; {done.old} is {kept}"]
        if args.reencrypt:
            lines.append(f"re-packed {done.reencrypted} package(s) not yet pulled with the new password")
        lines.append(f"hand it to the agency: iom-gateway keys export --agency {args.agency} --password --to FILE")
        changed = asdict(done) | {"agency": args.agency}  # password ids, never a password
    elif args.sar_key:
        _confirm(args, "make a new subject access index key and delete the index made under the old one")
        sar = rotate_sar_key(root)
        lines = [
            f"the subject access index now uses key {sar.new}; {sar.deleted} index entr(y/ies) made under "
            f"{sar.old or 'no key'} deleted",
            "`iom-gateway sar` finds nothing delivered before now: only packages delivered from now on are indexed",
        ]
        changed = asdict(sar)
    else:
        if args.new_passphrase_file is None:
            raise UsageError("keys rotate --vault needs --new-passphrase-file F (a 0600 file with the new passphrase)")
        _confirm(args, "re-encrypt the vault under a new passphrase")
        lines = [rotate_vault(root, args.new_passphrase_file)]
        changed = {"kind": "vault", "next": lines[0]}
    print(json.dumps(changed, indent=2) if args.json else "\n".join(lines))
    return EXIT_OK


# ----------------------------------------------------------------------------------------- requests


def _request_commands(commands: Any) -> None:
    request = commands.add_parser(
        "request", help="information requests between Designated Officers, due in ten working days"
    ).add_subparsers(title="request commands", metavar="ACTION", required=True)
    new = request.add_parser(
        "new",
        help="sign a request to another agency as its officer and register it",
        description="Sign a request for information to agency B as officer O of agency A (Warwickshire 2.3.3) "
        "and register it: due on the tenth working day after today (weekends and England-and-Wales bank "
        "holidays skipped). The purpose, grounds, consent evidence and urgent reason are kept only encrypted to "
        "the gateway key; the register holds ids, agencies, officers and dates. Exit 1 if the signature is "
        "refused (nothing is recorded), 2 for an unknown agency or officer or an empty text.",
    )
    new.add_argument("--from-agency", required=True, metavar="A", help="the requesting agency")
    new.add_argument("--officer", required=True, metavar="O", help="the DO/PDO of A who signs the request")
    new.add_argument("--to-agency", required=True, metavar="B", help="the agency asked for the information")
    new.add_argument(
        "--purpose", required=True, metavar="TEXT", help=f"what the information is needed for ({_FROM_STDIN})"
    )
    new.add_argument(
        "--grounds", required=True, metavar="TEXT", help=f"the lawful grounds for sharing it ({_FROM_STDIN})"
    )
    new.add_argument(
        "--consent",
        metavar="FILE|none",
        default="none",
        help="the evidence of the subject's consent (a file, kept encrypted), or none (the default)",
    )
    new.add_argument(
        "--urgent", metavar="REASON", help=f"mark it urgent, with the reason: listed first ({_FROM_STDIN})"
    )
    new.add_argument("--gnupghome", type=Path, metavar="DIR", help="the officer's own GnuPG home (default: demo)")
    new.add_argument("--json", action="store_true", help="print the registered request as one JSON object")
    new.set_defaults(handler=_request_new)

    listed = request.add_parser(
        "list",
        help="the register of requests: urgent first, then by due date; overdue ones flagged",
        description="List the requests (ids, agencies, officers, dates, outcome; never their text), urgent "
        "first, then by due date. An open request past its due date is flagged OVERDUE with the days.",
    )
    listed.add_argument("--open", action="store_true", help="only requests still waiting for an answer")
    listed.add_argument("--agency", metavar="AG", help="only requests AG made or was asked")
    listed.add_argument("--json", action="store_true", help="print a JSON list")
    listed.set_defaults(handler=_request_list)

    answer = request.add_parser(
        "answer",
        help="answer a request with a submission, or refuse it with the reasons",
        description="Answer request ID as officer P of the agency asked: --with-submission FILE validates the "
        "CSV, signs it as P with the request's id (request@iom-gateway) and drops it into the outbox like "
        "`submit`; the request is answered once its package reaches the requesting agency. --refuse REASON "
        "records the refusal, signed by P, its reason kept encrypted (Warwickshire 2.3.3.3). A request is "
        "answered once: exit 1 for one answered, refused or unknown, 2 for a malformed id.",
    )
    answer.add_argument("id", metavar="ID", help="the request's id (`request list`)")
    answer.add_argument("--officer", required=True, metavar="P", help="the DO/PDO of the agency asked who answers")
    how = answer.add_mutually_exclusive_group(required=True)
    how.add_argument("--with-submission", type=Path, metavar="FILE.csv", help="answer with this CSV file")
    how.add_argument("--refuse", metavar="REASON", help=f"refuse the request, for this reason ({_FROM_STDIN})")
    answer.add_argument("--gnupghome", type=Path, metavar="DIR", help="the officer's own GnuPG home (default: demo)")
    answer.add_argument("--marking", metavar="LEVEL", help="with --with-submission: a marking above the floor")
    answer.set_defaults(handler=_request_answer)

    show = request.add_parser(
        "show",
        help="decrypt and print one request's text for the admin (audited as request.shown)",
        description="Print request ID as the register has it and, decrypted, its purpose, grounds, urgent "
        "reason, consent evidence's name and size, and a refusal's reason. Each look is an audit event "
        "(request.shown: which request, never what it says).",
    )
    show.add_argument("id", metavar="ID", help="the request's id (`request list`)")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(handler=_request_show)


def _request_new(args: argparse.Namespace) -> int:
    from gateway.governance.requests import new_request

    _read_dashes(args, ("purpose", "grounds", "urgent"))
    record = new_request(
        _open(args),
        from_agency=args.from_agency,
        officer_id=args.officer,
        to_agency=args.to_agency,
        purpose=args.purpose,
        grounds=args.grounds,
        consent=None if args.consent == "none" else Path(args.consent),
        urgent=args.urgent,
        gnupghome=args.gnupghome,
        now=datetime.now(UTC),
    )
    if args.json:
        print(json.dumps(asdict(record), indent=2))
        return EXIT_OK
    urgent = " (urgent)" if record.urgent else ""
    print(f"request {record.id} from {record.from_agency} to {record.to_agency}{urgent}: due {record.due}")
    return EXIT_OK


def _request_list(args: argparse.Namespace) -> int:
    from gateway.governance.requests import list_requests
    from gateway.state.requests import local_day

    records = list_requests(_open(args), open_only=args.open, agency=args.agency)
    today = local_day(datetime.now(UTC))
    if args.json:
        print(json.dumps([asdict(r) | {"days_overdue": r.days_overdue(today)} for r in records], indent=2))
        return EXIT_OK
    if not records:
        print("no requests" + (" open" if args.open else ""))
        return EXIT_OK
    print(f"{'id':17}{'from':12}{'to':12}{'received':12}{'due':12}{'status':10}flags")
    for r in records:
        late = r.days_overdue(today)
        flags = [*(["URGENT"] if r.urgent else []), *([f"OVERDUE {late} day(s)"] if late else [])]
        if r.package:
            flags.append(f"answered by {r.answered_by} with {r.package}")
        elif r.answered_by:
            flags.append(f"by {r.answered_by}")
        print(
            f"{r.id:17}{r.from_agency:12}{r.to_agency:12}{r.received[:10]:12}{r.due:12}{r.status:10}{' '.join(flags)}"
        )
    return EXIT_OK


def _request_answer(args: argparse.Namespace) -> int:
    from gateway.exchange.submit import submit
    from gateway.governance.requests import answering, refuse

    root = _open(args)
    _read_dashes(args, ("refuse",))
    if args.refuse is not None:
        if args.marking:
            raise UsageError("--marking goes with --with-submission")
        record = refuse(
            root, args.id, officer_id=args.officer, reason=args.refuse, gnupghome=args.gnupghome, now=datetime.now(UTC)
        )
        print(f"request {record.id} refused by {record.answered_by}; the reason is kept encrypted")
        return EXIT_OK
    record = answering(root, args.id, args.officer)
    report, target = submit(
        root,
        args.with_submission,
        agency_id=record.to_agency,
        officer_id=args.officer,
        marking=args.marking,
        gnupghome=args.gnupghome,
        today=date.today(),
        request=record.id,
    )
    if target is None:
        sys.stdout.write(report.to_text())
        print("not submitted: fix the errors above and answer again", file=sys.stderr)
        return EXIT_REFUSED
    print(
        f"submitted {target} ({report.rows} rows) answering request {record.id}: it is answered once the package "
        f"reaches {record.from_agency}"
    )
    return EXIT_OK


def _request_show(args: argparse.Namespace) -> int:
    from gateway.governance.requests import show

    shown = show(_open(args), args.id, actor="admin")
    request, consent = shown.request, shown.request.consent
    text = {
        "purpose": request.purpose,
        "grounds": request.grounds,
        "urgent": request.urgent,
        "consent": None if consent is None else {"name": consent.name, "bytes": len(consent.data)},
        "created": request.created,
        "refusal": shown.refusal,
    }
    if args.json:
        print(json.dumps(asdict(shown.record) | text, indent=2, ensure_ascii=False))
        return EXIT_OK
    r = shown.record
    print(f"request {r.id}: {r.from_agency} ({r.from_officer}) to {r.to_agency}, received {r.received}, due {r.due}")
    print(f"status:   {r.status}" + (f" by {r.answered_by} at {r.answered_at}" if r.answered_by else ""))
    if r.package:
        print(f"answer:   submission {r.submission}, package {r.package}")
    print(f"purpose:  {request.purpose}")
    print(f"grounds:  {request.grounds}")
    print(f"urgent:   {request.urgent or 'no'}")
    print(f"consent:  {'none' if consent is None else f'{consent.name} ({len(consent.data)} bytes)'}")
    if shown.refusal is not None:
        print(f"refusal:  {shown.refusal}")
    return EXIT_OK


# ----------------------------------------------------------------------------------------- journal


def _journal_commands(commands: Any) -> None:
    journal = commands.add_parser(
        "journal", help="where the journal lives: move it to PostgreSQL, bring its schema up to date"
    ).add_subparsers(title="journal commands", metavar="ACTION", required=True)
    migrate = journal.add_parser(
        "migrate",
        help="move the SQLite journal to PostgreSQL (--to URL), or bring a PostgreSQL journal's schema up to date",
        description="With --to URL: copy the root's journal and officer register from state/gateway.db into the "
        "empty PostgreSQL database at URL in one transaction, check every table's rows on both sides (counts and "
        "a digest of every row), and leave state/journal-moved naming URL; then set [journal] url = URL in "
        "gateway.toml. Refused while a daemon works on the root, into a database that holds rows, or with a "
        "password in URL (it comes from `keys journal-password` or a systemd credential named journal-password). "
        "Without --to: bring the PostgreSQL journal [journal] url names to this gateway's schema (once, from one "
        "node, after an upgrade). Exit 0 done, 1 refused, 2 misuse.",
    )
    migrate.add_argument("--to", metavar="URL", help="postgresql://USER@HOST:PORT/DATABASE (no password in it)")
    migrate.set_defaults(handler=_journal_migrate)


def _journal_migrate(args: argparse.Namespace) -> int:
    from gateway.admin.journal import move_to, upgrade
    from gateway.daemon.watch import exclusive

    path = resolve_root(args.root)
    if args.to is None:
        print(f"the journal is at schema version {upgrade(_open(args))}, this gateway's")
        return EXIT_OK
    with exclusive(path):
        moved = move_to(_open(args), args.to)
    for table in moved.tables:
        print(f"{table.name:18} {table.rows:>9} row(s)  digest {table.digest[:16]}")
    print(f"moved {moved.rows} row(s) in {len(moved.tables)} tables to {moved.url}; every table verified")
    print(f'now set [journal] url = "{moved.url}" in gateway.toml; state/gateway.db is kept, and not used again')
    return EXIT_OK
