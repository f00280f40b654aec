"""Argument parsing and printing only: `main(argv) -> int`; every command calls one use case."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import date
from pathlib import Path

from gateway import __version__
from gateway.config import resolve_root
from gateway.errors import GatewayError
from gateway.model import Period
from gateway.pipeline import Gateway, check_file, demo

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

    show = commands.add_parser(
        "demo",
        help="run the demonstration on the shipped sample files",
        description="Validate the shipped sample files (good and bad) and print the reports.",
    )
    show.set_defaults(handler=_demo)
    return parser


def _period(text: str) -> Period:
    try:
        return Period.parse(text)
    except GatewayError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _validate(args: argparse.Namespace) -> int:
    gateway = Gateway.open(resolve_root(args.root))
    report = check_file(gateway, args.file, args.agency, args.period, date.today())
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(report.to_text())
    return EXIT_OK if report.valid else EXIT_REFUSED


def _demo(args: argparse.Namespace) -> int:
    gateway = Gateway.open(resolve_root(args.root))
    print(f"iom-gateway demo: {gateway.config.partnership}, validating the shipped samples against Table 1\n")
    surprises = []
    for result in demo(gateway, date.today()):
        verdict = "valid" if result.report.valid else "rejected"
        print(f"== {result.sample.name}: {verdict} (expected {'valid' if result.expected_valid else 'rejected'})")
        sys.stdout.write(result.report.to_text() + "\n")
        if not result.as_expected:
            surprises.append(result.sample.name)
    if surprises:
        print(f"iom-gateway: demo samples did not behave as expected: {', '.join(surprises)}", file=sys.stderr)
        return EXIT_REFUSED
    print("Every sample behaved as expected: the good file passes, each bad one is rejected with its reasons.")
    print("Try it on your own file:  iom-gateway validate FILE --agency police")
    return EXIT_OK
