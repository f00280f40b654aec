"""The contract every command keeps, checked over every command the parser has (a new one is covered by itself):
no traceback for anything a user can do (a closed stdout, a root this user cannot read, a root that is a
file), one exit-code rule (0 ok, 1 refusal, 2 usage), help text on every option, a README entry for every
command, and `--json` that prints one JSON document."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.admin.oversight import AUDIT_EVENTS
from gateway.cli import _parser, main, subcommands
from gateway.state.audit import CHECKPOINT, GENESIS_EVENT
from tests.conftest import REPO
from tests.integration.daemon_harness import GOOD, INVALID, cli, drop, home, short_dir
from tests.integration.gpg_helpers import gpg, new_officer, stop_agent

PARSER = _parser()
GROUPS = {path for path, sub in subcommands(PARSER).items() if subcommands(sub)}
COMMANDS = sorted(path for path in subcommands(PARSER) if path not in GROUPS)
README = (REPO / "README.md").read_text(encoding="utf-8")

# The arguments each command needs to get past argparse (paths need not exist: a bad root is refused
# first). A command not listed takes none; one that needs some and is missing here fails
# test_a_root_that_is_a_file_is_a_usage_error_for_every_command with argparse's message.
NEEDS = {
    ("validate",): ["/nowhere/f.csv", "--agency", "police"],
    ("run",): ["--once"],  # never the daemon, even if the root were accepted
    ("submit",): ["/nowhere/f.csv", "--agency", "police", "--officer", "police-do"],
    ("pull",): ["--agency", "probation", "--to", "/nowhere", "--officer", "probation-do"],
    ("officers", "add"): ["--agency", "police", "--role", "DO", "--name", "N", "--email", "n@x.invalid", "--key", "k"],
    ("officers", "show"): ["police-do"],
    ("officers", "revoke"): ["police-do", "--yes"],
    ("officers", "rekey"): ["police-do", "--key", "/nowhere/k.asc", "--yes"],
    ("officers", "ssh-key"): ["police-do", "/nowhere/k.pub"],
    ("officers", "set-password"): ["police-do", "--password-file", "/nowhere/p"],
    ("keys", "rotate"): ["--gateway", "--yes"],
    ("keys", "export"): ["--gateway"],
    ("keys", "import"): ["--agency", "housing", "--password-file", "/nowhere/p"],
    ("keys", "relay-password"): ["--password-file", "/nowhere/p"],
    ("keys", "journal-password"): ["--password-file", "/nowhere/p"],
    ("journal", "migrate"): ["--to", "postgresql://iom@127.0.0.1:9/iom"],
    ("audit", "report"): ["--month", "2026-10"],
    ("report", "quality"): ["--month", "2026-10"],
    ("purge",): ["--dry-run"],
    ("sar",): ["--cro", "265416/21G"],
    ("access", "authorized-keys"): ["iom-police-do"],
    ("access", "sync"): ["--dry-run"],
    ("request", "new"): [
        *("--from-agency", "probation", "--officer", "probation-do", "--to-agency", "police"),
        *("--purpose", "p", "--grounds", "g"),
    ],
    ("request", "answer"): ["0123456789abcdef", "--officer", "police-do", "--refuse", "r"],
    ("request", "show"): ["0123456789abcdef"],
}
# commands only root runs (they change the host): another user is told so before the root is read
AS_ROOT = {("access", "sync")}


def argv(command: tuple[str, ...]) -> list[str]:
    return [*command, *NEEDS.get(command, [])]


def ids(command: tuple[str, ...]) -> str:
    return " ".join(command)


def gateway(
    *args: str, stdout: int | None = subprocess.PIPE, user: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGS` as a real process (as `user`, a setpriv prefix, if given)."""
    return subprocess.run(
        [*(user or []), sys.executable, "-m", "gateway", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        cwd=REPO,
        env={**os.environ, "HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=120,
        check=False,
    )


def into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command with stdout a pipe whose reader has gone (`iom-gateway status | head -0`)."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return gateway(*args, stdout=writer)
    finally:
        os.close(writer)


@pytest.fixture(scope="module")
def demo(routed_template: Path) -> Path:
    """The module's demo root, for commands that change nothing."""
    return routed_template


# ----------------------------------------------------------------------------------------- help and README


def test_the_parser_has_the_commands_the_contract_walks() -> None:
    assert {("status",), ("officers", "add"), ("keys", "import"), ("audit", "show")} <= set(COMMANDS)
    assert ("officers",) in GROUPS and ("officers",) not in COMMANDS


def test_every_option_of_every_command_has_help_text() -> None:
    missing = [
        f"{ids(path) or 'iom-gateway'}: {'/'.join(action.option_strings) or action.dest}"
        for path, parser in [((), PARSER), *subcommands(PARSER).items()]
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction) and not action.help
    ]
    assert missing == []


def test_every_command_and_option_is_in_the_readme() -> None:
    lines = [line for line in README.splitlines() if "iom-gateway " in line]
    undocumented = []
    for command in COMMANDS:
        *group, action = command
        pattern = rf"iom-gateway {' '.join(group)}\b.*\b{action}\b" if group else rf"iom-gateway {action}\b"
        documented = [line for line in lines if re.search(pattern, line)]
        if not documented:
            undocumented.append(ids(command))
            continue
        for option in subcommands(PARSER)[command]._actions:
            long = [o for o in option.option_strings if o.startswith("--")]
            if long and long[0] not in ("--help", "--root", "--verbose") and long[0] not in README:
                undocumented.append(f"{ids(command)} {long[0]}")
    assert undocumented == [], "add these to the README's command reference (The exchange)"


def test_the_readme_states_the_exit_code_rule() -> None:
    section = README.split("### Exit status", 1)[1].split("\n#", 1)[0]
    assert "`0`" in section and "`1`" in section and "`2`" in section


# ----------------------------------------------------------------------------------------- no traceback


@pytest.mark.parametrize("command", COMMANDS, ids=ids)
def test_help_into_a_closed_pipe_is_no_traceback(command: tuple[str, ...]) -> None:
    result = into_closed_pipe(*command, "--help")
    assert "Traceback" not in result.stderr and result.returncode in (0, 1), result.stderr


READ_ONLY = [
    ["status"],
    ["status", "--json"],
    ["audit", "show"],
    ["audit", "show", "--json"],
    ["audit", "verify"],
    ["audit", "report", "--month", "2026-10"],
    ["report", "quality", "--month", "2026-10"],
    ["keys", "list"],
    ["keys", "export", "--gateway"],
    ["officers", "list"],
    ["officers", "export"],
    ["officers", "show", "police-do"],
    ["purge", "--dry-run"],
    ["run", "--once"],
    ["validate", str(GOOD), "--agency", "police"],
]


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
def test_output_into_a_closed_pipe_exits_1_without_a_traceback(demo: Path, args: list[str]) -> None:
    result = into_closed_pipe("--root", str(demo), *args)
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr


@pytest.fixture(scope="module")
def unreadable(routed_template: Path) -> Iterator[tuple[Path, list[str]]]:
    """A copy of the demo root that the user running the command cannot enter, and that user's prefix:
    `nobody` (by setpriv) when the tests run as root, who may read anything, else this user with mode 000."""
    base = short_dir()
    base.chmod(0o755)  # the folder above the root may be searched: only the root itself is closed
    path = base / "root"
    shutil.copytree(routed_template, path, symlinks=True, ignore=shutil.ignore_patterns("S.gpg-agent*"))
    if os.geteuid() == 0:
        path.chmod(0o700)
        user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    else:
        path.chmod(0)
        user = []
    yield path, user
    path.chmod(0o700)
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("command", COMMANDS, ids=ids)
def test_a_root_this_user_cannot_read_is_refused_naming_it(
    unreadable: tuple[Path, list[str]], command: tuple[str, ...]
) -> None:
    path, user = unreadable
    result = gateway("--root", str(path), *argv(command), user=user)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    if command in AS_ROOT:
        assert "run it as root" in result.stderr and "nothing changed" in result.stderr
        return
    assert f"permission denied on {str(path)!r}" in result.stderr
    assert "run iom-gateway as the gateway's user" in result.stderr


@pytest.mark.parametrize("args", [["status"], ["audit", "show"], ["run", "--once"], ["keys", "list"]], ids=" ".join)
def test_a_root_whose_state_this_user_cannot_read_is_refused_naming_the_file(
    unreadable: tuple[Path, list[str]], args: list[str]
) -> None:
    path, user = unreadable
    if not user:
        pytest.skip("needs a second user: run as root (as ./scripts/test does in its container)")
    setup = [path / "gateway.toml", path / "schemas", *(path / "schemas").iterdir()]
    modes = {p: p.stat().st_mode & 0o777 for p in [path, *setup]}
    path.chmod(0o755)
    for part in setup:  # the set-up can be read; state/ (0700) cannot
        part.chmod(0o755 if part.is_dir() else 0o644)
    try:
        result = gateway("--root", str(path), *args, user=user)
    finally:
        for part, mode in modes.items():
            part.chmod(mode)
    assert "Traceback" not in result.stderr and result.returncode == 1, result.stderr
    assert re.search(rf"permission denied on '{re.escape(str(path))}/state/[a-z.-]+'", result.stderr), result.stderr
    assert "run iom-gateway as the gateway's user" in result.stderr


@pytest.mark.parametrize("command", COMMANDS, ids=ids)
def test_a_root_that_is_a_file_is_a_usage_error_for_every_command(
    tmp_path: Path, command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "hostname"
    afile.write_text("not a root\n")
    assert main(["--root", str(afile), *argv(command)]) == 2
    err = capsys.readouterr().err
    assert f"the gateway root {str(afile)!r} is not a folder: pass --root DIR" in err
    assert afile.read_text() == "not a root\n" and list(tmp_path.iterdir()) == [afile]


def test_a_root_below_a_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "hostname").write_text("x\n")
    assert main(["--root", str(tmp_path / "hostname" / "root"), "status"]) == 2
    assert "is not a folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- exit codes


@pytest.fixture
def keys(routed_root: Path) -> Path:
    """police-do's public key (already registered) and a file holding no key, beside the root."""
    folder = routed_root.parent
    exported = gpg(home(routed_root, "police-do"), "--armor", "--export", "police-do@demo.invalid").stdout
    (folder / "police-do.asc").write_bytes(exported)
    (folder / "nokey.asc").write_text("not a key\n")
    loose = folder / "loose-password"
    loose.write_text("correct-horse-battery-staple-2026\n")
    loose.chmod(0o644)
    (folder / "exists.csv").write_text("keep me\n")
    (folder / "pulled").mkdir()
    return folder


ADD = ["officers", "add", "--agency", "police", "--role", "DO", "--name", "Second Key", "--email", "s@police.invalid"]

# (steps before, that must exit 0), the command, its exit status, what its message says.
# {d} is the folder beside the root (see `keys`). 2: the command line cannot be carried out as typed;
# 1: understood, and refused.
TABLE: list[tuple[list[list[str]], list[str], int, str]] = [
    ([], ["status", "--no-such-option"], 2, "unrecognized arguments"),
    ([], ["officers", "show", "nobody"], 2, "no officer 'nobody' in the register"),
    ([], ["officers", "revoke", "nobody", "--yes"], 2, "no officer 'nobody' in the register"),
    ([], ["officers", "rekey", "nobody", "--key", "{d}/police-do.asc", "--yes"], 2, "no officer 'nobody'"),
    ([], ["officers", "list", "--agency", "nowhere"], 2, "agency 'nowhere' is not in gateway.toml"),
    ([], [*ADD[:3], "nowhere", *ADD[4:], "--key", "{d}/police-do.asc"], 2, "agency 'nowhere' is not in"),
    ([], [*ADD, "--key", "{d}/police-do.asc", "--email", "not-an-address"], 2, "is not an e-mail address"),
    ([], ["keys", "export", "--agency", "probation", "--password", "--to", "{d}/p"], 2, "takes OpenPGP delivery"),
    ([], ["keys", "rotate", "--agency", "probation", "--yes"], 2, "takes OpenPGP delivery"),
    ([], ["keys", "import", "--agency", "probation", "--password-file", "{d}/loose-password"], 2, "OpenPGP"),
    ([], ["keys", "rotate", "--agency", "nowhere", "--yes"], 2, "no agency 'nowhere' in gateway.toml"),
    ([], ["keys", "rotate", "--gateway", "--reencrypt", "--yes"], 2, "--reencrypt goes with --agency A"),
    ([], ["keys", "export", "--agency", "housing", "--password", "--to", "{d}/exists.csv"], 2, "already exists"),
    ([], ["audit", "show", "--event", "nonsense"], 2, "no audit event 'nonsense'"),
    ([], ["audit", "show", "--event", "officer.revokd"], 2, "did you mean officer.revoked"),
    ([], ["audit", "show", "--since", "yesterday"], 2, "is not a day"),
    ([], ["audit", "report", "--month", "2026-10", "--to", "{d}/exists.csv"], 2, "it already exists"),
    ([], ["validate", "{d}/missing.csv", "--agency", "police"], 2, "does not exist"),
    ([], ["submit", str(GOOD), "--agency", "police", "--officer", "probation-do"], 2, "not an active officer"),
    ([], ["pull", "--agency", "nowhere", "--to", "{d}/pulled", "--officer", "x"], 2, "agency 'nowhere' is not in"),
    ([], ["pull", "--agency", "probation", "--to", "{d}/pulled", "--officer", "nobody"], 2, "no officer 'nobody'"),
    ([], [*ADD, "--key", "{d}/police-do.asc", "--id", "police-again"], 1, "is already registered"),
    ([], [*ADD, "--key", "{d}/nokey.asc"], 1, "is not an OpenPGP public key"),
    ([["officers", "revoke", "yos-do", "--yes"]], ["officers", "revoke", "yos-do", "--yes"], 1, "already revoked"),
    (
        [["officers", "revoke", "police-do", "--yes"]],
        ["officers", "rekey", "police-do", "--key", "{d}/nokey.asc", "--yes"],
        1,
        "is revoked",
    ),
    (
        [["officers", "revoke", "police-do", "--yes"]],
        ["submit", str(GOOD), "--agency", "police", "--officer", "police-do"],
        1,
        "police-do is revoked",
    ),
    ([], ["validate", str(INVALID), "--agency", "probation", "--period", "2026-10"], 1, ""),  # the report: stdout
    ([], ["keys", "import", "--agency", "housing", "--password-file", "{d}/loose-password"], 1, "readable by others"),
    ([], ["officers", "show", "police-do"], 0, ""),
    ([], ["audit", "show", "--event", "officer"], 0, ""),
    ([], ["audit", "show", "--event", "officer.revoked"], 0, ""),  # known, none yet: nothing, and fine
]


@pytest.mark.parametrize(("before", "args", "code", "says"), TABLE, ids=[" ".join(row[1][:3]) for row in TABLE])
def test_exit_codes_follow_one_rule(
    routed_root: Path,
    keys: Path,
    before: list[list[str]],
    args: list[str],
    code: int,
    says: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for step in before:
        assert cli(routed_root, *step) == 0
    capsys.readouterr()
    assert cli(routed_root, *[a.replace("{d}", str(keys)) for a in args]) == code
    captured = capsys.readouterr()
    assert says in captured.err
    if says:
        assert captured.err.startswith(("iom-gateway: ", "usage: ")), captured.err
    assert (keys / "exists.csv").read_text() == "keep me\n"


def test_every_event_the_code_writes_is_a_known_audit_event() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "gateway").rglob("*.py"))
    written = set(re.findall(r'(?:append|_append_locked)\(\s*"([a-z_]+\.[a-z_.]+)"', source))
    written |= set(re.findall(r'\("([a-z_]+\.[a-z_.]+)",\s*\{', source))
    written |= {CHECKPOINT, GENESIS_EVENT}  # written by name from their constants
    assert written - AUDIT_EVENTS == set()
    assert {e for e in AUDIT_EVENTS if f'"{e}"' not in source} == set()  # none the code no longer writes


def test_global_options_work_after_the_command_too(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 0 or 1 by what the root needs (late agencies depend on the day); a misplaced --root would be usage (2)
    assert main(["status", "--root", str(demo), "--json"]) in (0, 1)
    assert json.loads(capsys.readouterr().out)["in_flight"] == 0
    assert main(["--root", "/nowhere", "officers", "list", "--root", str(demo), "-v", "--agency", "police"]) == 0
    assert "police-do" in capsys.readouterr().out
    assert main(["--root", str(demo), "officers", "show", "police-do"]) == 0  # before the command, as always


def test_demo_refuses_a_real_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    real = tmp_path / "real"
    real.mkdir()
    shutil.copytree(REPO / "schemas", real / "schemas")
    text = (REPO / "gateway.toml").read_text(encoding="utf-8")
    (real / "gateway.toml").write_text(text.replace('name = "Demo IOM Partnership"', 'name = "Anyshire IOM"'))
    assert main(["--root", str(real), "demo"]) == 2
    assert f"{str(real)!r} is a real gateway root" in capsys.readouterr().err
    assert sorted(p.name for p in real.iterdir()) == ["gateway.toml", "schemas"]


def test_demo_refuses_a_root_with_a_registered_officer(routed_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    officer_home = routed_root.parent / "real-officer"
    fingerprint = new_officer(officer_home, "Real Officer", "real@police.invalid")
    key = routed_root.parent / "real.asc"
    key.write_bytes(gpg(officer_home, "--armor", "--export", fingerprint).stdout)
    stop_agent(officer_home)
    add = ["--agency", "police", "--role", "DO", "--name", "Real Officer", "--email", "real@police.invalid"]
    assert cli(routed_root, "officers", "add", *add, "--key", str(key)) == 0
    capsys.readouterr()
    assert cli(routed_root, "demo") == 2
    assert "is a real gateway root" in capsys.readouterr().err
    assert not (routed_root / "demo").exists()


# ----------------------------------------------------------------------------------------- --json


def _one_json(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)  # the whole of stdout is one document


def test_run_once_and_pull_print_one_json_document(routed_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    drop(routed_root, "police", GOOD, "police-good-2026-10.csv", "police-do")
    drop(routed_root, "probation", INVALID, "probation-invalid-rows-2026-10.csv", "probation-do")
    capsys.readouterr()
    assert cli(routed_root, "run", "--once", "--json") == 1
    done = _one_json(capsys)
    assert isinstance(done, dict) and done["refused"] is True
    kinds = sorted((o["outcome"], o["agency"], o["name"]) for o in done["outcomes"])
    assert kinds == [
        ("delivered", "police", "police-good-2026-10.csv"),
        ("rejected", "probation", "probation-invalid-rows-2026-10.csv"),
    ]
    delivered = next(o for o in done["outcomes"] if o["outcome"] == "delivered")
    assert delivered["rows"] == 7 and {Path(p).parent.name for p in delivered["packages"]} == {"probation", "housing"}
    assert GOOD.read_text(encoding="utf-8").splitlines()[1].split(",")[0] not in json.dumps(done)  # no cell values
    out = routed_root.parent / "pulled"
    out.mkdir()
    pull = ["pull", "--agency", "probation", "--to", str(out), "--officer", "probation-do"]
    assert cli(routed_root, *pull, "--json") == 0
    pulled = _one_json(capsys)
    assert isinstance(pulled, dict) and pulled["agency"] == "probation" and len(pulled["packages"]) == 1
    assert pulled["packages"][0]["written"] == str(next(out.glob("*.csv"))) and pulled["packages"][0]["failed"] is None
    assert cli(routed_root, "run", "--once", "--json") == 0
    assert _one_json(capsys) == {"outcomes": [], "refused": False}


def test_officer_and_key_changes_print_one_json_document(routed_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    made: dict[str, tuple[str, Path]] = {}
    for who in ("first", "second"):
        officer_home = routed_root.parent / who
        fingerprint = new_officer(officer_home, f"Officer {who}", f"{who}@council.invalid")
        made[who] = (fingerprint, routed_root.parent / f"{who}.asc")
        made[who][1].write_bytes(gpg(officer_home, "--armor", "--export", fingerprint).stdout)
        stop_agent(officer_home)
    add = ["--agency", "council", "--role", "DO", "--name", "Officer first", "--email", "first@council.invalid"]
    capsys.readouterr()
    assert cli(routed_root, "officers", "add", *add, "--key", str(made["first"][1]), "--json") == 0
    added = _one_json(capsys)
    assert isinstance(added, dict) and added["id"] == "council-officer-first"
    assert added["fingerprint"] == made["first"][0] and added["status"] == "active"
    key = str(made["second"][1])
    assert cli(routed_root, "officers", "rekey", "council-officer-first", "--key", key, "--yes", "--json") == 0
    rekeyed = _one_json(capsys)
    assert isinstance(rekeyed, dict) and rekeyed["fingerprint"] == made["second"][0] and rekeyed["grace_days"] == 0
    assert cli(routed_root, "officers", "revoke", "council-officer-first", "--yes", "--json") == 0
    revoked = _one_json(capsys)
    assert isinstance(revoked, dict) and revoked["status"] == "revoked" and revoked["reencrypted"] == []
    assert cli(routed_root, "keys", "rotate", "--agency", "housing", "--yes", "--json") == 0
    rotated = _one_json(capsys)
    assert isinstance(rotated, dict) and rotated["kind"] == "password" and rotated["agency"] == "housing"
    assert rotated["old"] != rotated["new"] and set(rotated) == {"kind", "old", "new", "reencrypted", "agency"}
    assert cli(routed_root, "keys", "rotate", "--gateway", "--yes", "--json") == 0
    gateway_key = _one_json(capsys)
    assert isinstance(gateway_key, dict) and gateway_key["kind"] == "gateway" and len(str(gateway_key["new"])) == 40


def test_audit_report_never_overwrites_a_file(routed_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = routed_root.parent / "register.csv"
    assert cli(routed_root, "audit", "report", "--month", "2026-10", "--to", str(target)) == 0
    assert target.stat().st_mode & 0o777 == 0o600
    first = target.read_bytes()
    target.write_bytes(b"the admin's own notes\n")
    capsys.readouterr()
    assert cli(routed_root, "audit", "report", "--month", "2026-10", "--to", str(target)) == 2
    assert "it already exists; name a new file" in capsys.readouterr().err
    assert target.read_bytes() == b"the admin's own notes\n" and first.startswith(b"period,date,")


def test_ctrl_c_is_a_line_not_a_traceback(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--root", str(tmp_path), "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # the first line arrives as soon as it is printed
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith("iom-gateway demo:")  # main() is running: the demo has begun
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err and "iom-gateway: interrupted (Ctrl-C)" in err, err
