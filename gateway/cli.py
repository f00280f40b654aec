"""Argument parsing and printing only: `main(argv) -> int`; every command calls one use case."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import date
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.admin import (
    add_officer,
    export_gateway_key,
    export_password,
    import_password,
    init_root,
    officers,
    rekey_officer,
    revoke_officer,
)
from gateway.config import resolve_root
from gateway.context import Root
from gateway.demo import run_demo
from gateway.errors import GatewayError, UsageError
from gateway.model import Period
from gateway.pipeline import Rejected, check_file, now_utc, process_once, submit
from gateway.recipient import pull

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    """Run one iom-gateway command; return its exit status (0 ok, 1 refused, 2 usage)."""
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
    try:
        result: int = args.handler(args)
        return result
    except GatewayError as exc:
        print(f"iom-gateway: {exc.message}", file=sys.stderr)
        return exc.exit_code


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
        description="Check FILE against the Table 1 standard and the ownership matrix as AGENCY would send it. "
        "Exit 0 valid, 1 invalid, 2 usage error. Nothing is written anywhere.",
    )
    validate.add_argument("file", metavar="FILE", type=Path, help="the CSV file")
    validate.add_argument("--agency", required=True, metavar="A", help="the sending agency's id in gateway.toml")
    validate.add_argument(
        "--period",
        type=_period,
        metavar="YYYY-MM",
        help="the month the data is for; ages are checked on its first day (default: this month)",
    )
    validate.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    validate.set_defaults(handler=_validate)

    _exchange_commands(commands)
    return parser


def _period(text: str) -> Period:
    try:
        return Period.parse(text)
    except GatewayError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _validate(args: argparse.Namespace) -> int:
    gateway = Root.open(resolve_root(args.root))
    report = check_file(gateway, args.file, args.agency, args.period, date.today())
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(report.to_text())
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
        help="process the submissions waiting in every outbox",
        description="Process every complete submission in every outbox once, then exit. Exit 1 if any was rejected.",
    )
    run.add_argument("--once", action="store_true", required=True, help="process what is there and exit")
    run.set_defaults(handler=_run)

    submit = commands.add_parser(
        "submit",
        help="sign a CSV as an officer and drop it into an outbox",
        description="Validate FILE, sign it as officer O (detached OpenPGP signature) and "
        "put both into A's outbox atomically, signature first.",
    )
    submit.add_argument("file", metavar="FILE", type=Path)
    submit.add_argument("--agency", required=True, metavar="A")
    submit.add_argument("--officer", required=True, metavar="O")
    submit.add_argument("--marking", metavar="LEVEL", help="ask for a marking above the floor, e.g. RESTRICTED")
    submit.add_argument("--gnupghome", type=Path, metavar="DIR", help="the officer's own GnuPG home (default: demo)")
    submit.set_defaults(handler=_submit)

    pull = commands.add_parser(
        "pull",
        help="verify, decrypt and write the packages waiting for an agency",
        description="Verify each package's signed manifest, decrypt it, check it against the "
        "manifest and write the CSV (0600, UTF-8 with the marking as first and last line unless "
        "--raw). A package already pulled by you is skipped unless --again.",
    )
    pull.add_argument("--agency", required=True, metavar="A")
    pull.add_argument("--to", required=True, type=Path, metavar="DIR")
    who = pull.add_mutually_exclusive_group()
    who.add_argument("--gnupghome", type=Path, metavar="DIR", help="your GnuPG home (OpenPGP agencies)")
    who.add_argument("--password-file", type=Path, metavar="F", help="the package password (AES-ZIP agencies)")
    pull.add_argument("--officer", metavar="O", help="who is pulling (a demo officer's home is used if no --gnupghome)")
    pull.add_argument("--raw", action="store_true", help="write exactly the bytes the sender signed")
    pull.add_argument("--again", action="store_true", help="pull packages you have pulled before")
    pull.set_defaults(handler=_pull)
    _admin_commands(commands)


def _admin_commands(commands: Any) -> None:
    officers = commands.add_parser("officers", help="the register of Designated Officers").add_subparsers(
        metavar="ACTION", required=True
    )
    add = officers.add_parser("add", help="register a DO/PDO with their public key")
    add.add_argument("--agency", required=True, metavar="A")
    add.add_argument("--role", required=True, choices=["DO", "PDO"])
    add.add_argument("--name", required=True)
    add.add_argument("--email", required=True)
    add.add_argument("--key", required=True, type=Path, metavar="PUBKEY.asc")
    add.add_argument("--id", dest="officer_id", metavar="ID", help="the officer's id (default: agency-name)")
    add.set_defaults(handler=_officers_add)
    listing = officers.add_parser("list", help="list the officers")
    listing.add_argument("--agency", metavar="A")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_officers_list)
    for action, helptext in (
        ("show", "show one officer"),
        ("revoke", "revoke an officer: their signatures are refused"),
    ):
        one = officers.add_parser(action, help=helptext)
        one.add_argument("officer", metavar="O")
        one.add_argument("--json", action="store_true")
        one.set_defaults(handler=_officers_one, action=action)
    rekey = officers.add_parser("rekey", help="replace an officer's key")
    rekey.add_argument("officer", metavar="O")
    rekey.add_argument("--key", required=True, type=Path, metavar="NEW.asc")
    rekey.set_defaults(handler=_officers_rekey)

    keys = commands.add_parser("keys", help="hand out the gateway key and agency passwords").add_subparsers(
        metavar="ACTION", required=True
    )
    export = keys.add_parser("export", help="export the gateway's public key, or an agency's current password")
    what = export.add_mutually_exclusive_group(required=True)
    what.add_argument("--gateway", action="store_true", help="the gateway's public key (armored)")
    what.add_argument("--agency", metavar="A", help="with --password: the AES-ZIP agency's current password")
    export.add_argument("--password", action="store_true", help="export the agency's password (needs --to)")
    export.add_argument("--to", type=Path, metavar="FILE", help="write to this new file (created 0600)")
    export.set_defaults(handler=_keys_export)
    imported = keys.add_parser("import", help="set an AES-ZIP agency's password by hand (checked against the policy)")
    imported.add_argument("--agency", required=True, metavar="A")
    imported.add_argument("--password-file", required=True, type=Path, metavar="F", help="a 0600 file holding it")
    imported.set_defaults(handler=_keys_import)


def _open(args: argparse.Namespace) -> Root:
    return Root.open(resolve_root(args.root))


def _init(args: argparse.Namespace) -> int:
    result = init_root(resolve_root(args.root), demo=args.demo, algorithm=args.algorithm)
    print(f"gateway root ready at {result.root}: gateway key {result.gateway_key}")
    if result.officers:
        print(f"demo officers: {', '.join(result.officers)} (keys under keys/demo-officers/: demo keys only)")
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    folder = resolve_root(args.root) / "demo"
    print("iom-gateway demo: the monthly IOM exchange, end to end\n")
    surprises = run_demo(folder, print)
    if surprises:
        print(f"iom-gateway: the demo did not go as expected ({surprises} surprise(s))", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    outcomes = process_once(_open(args), now_utc())
    for outcome in outcomes:
        print(outcome.summary)
        if isinstance(outcome, Rejected):
            print(f"          report: {outcome.report}")
    if not outcomes:
        print("nothing to process")
    return EXIT_REFUSED if any(isinstance(o, Rejected) for o in outcomes) else EXIT_OK


def _submit(args: argparse.Namespace) -> int:
    report, target = submit(
        _open(args),
        args.file,
        agency_id=args.agency,
        officer_id=args.officer,
        marking=args.marking,
        gnupghome=args.gnupghome,
        today=date.today(),
    )
    if target is None:
        sys.stdout.write(report.to_text())
        print("not submitted: fix the errors above and submit again", file=sys.stderr)
        return EXIT_REFUSED
    print(f"submitted {target} ({report.rows} rows) with its signature")
    return EXIT_OK


def _pull(args: argparse.Namespace) -> int:
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
    for item in results:
        print(f"wrote {item.written}" if item.written else f"skipped {item.package}: {item.skipped}")
    if not results:
        print(f"nothing waiting for {args.agency}")
    return EXIT_OK


def _officers_add(args: argparse.Namespace) -> int:
    officer = add_officer(
        _open(args),
        agency=args.agency,
        role=args.role,
        name=args.name,
        email=args.email,
        key=args.key,
        officer_id=args.officer_id,
    )
    print(f"registered {officer.id} ({officer.role.value} of {officer.agency}), key {officer.fingerprint}")
    return EXIT_OK


def _officers_list(args: argparse.Namespace) -> int:
    found = officers(_open(args), args.agency)
    if args.json:
        print(json.dumps([o.to_json() for o in found], indent=2))
        return EXIT_OK
    for o in found:
        print(f"{o.id:24} {o.agency:10} {o.role.value:3} {o.status:8} {o.fingerprint}  {o.name} <{o.email}>")
    return EXIT_OK


def _officers_one(args: argparse.Namespace) -> int:
    root = _open(args)
    officer = revoke_officer(root, args.officer) if args.action == "revoke" else root.registry.get(args.officer)
    print(
        json.dumps(officer.to_json(), indent=2)
        if args.json
        else "\n".join(f"{key:12} {value}" for key, value in officer.to_json().items())
    )
    return EXIT_OK


def _officers_rekey(args: argparse.Namespace) -> int:
    officer = rekey_officer(_open(args), args.officer, args.key)
    print(f"{officer.id} now signs with {officer.fingerprint}")
    return EXIT_OK


def _keys_import(args: argparse.Namespace) -> int:
    record = import_password(_open(args), args.agency, args.password_file)
    print(f"{args.agency} now uses password {record}; older packages keep theirs")
    return EXIT_OK


def _keys_export(args: argparse.Namespace) -> int:
    root = _open(args)
    if args.gateway:
        sys.stdout.write(export_gateway_key(root))
        return EXIT_OK
    if not args.password or args.to is None:
        raise UsageError("keys export --agency A needs --password --to FILE (the password never goes to the screen)")
    record = export_password(root, args.agency, args.to)
    print(
        f"wrote the current password of {args.agency} ({record}) to {args.to} (mode 0600): hand it to the "
        "agency's PDO out of band, then delete the file"
    )
    return EXIT_OK
