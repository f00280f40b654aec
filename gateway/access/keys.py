"""The key sshd may accept for an officer's account, from the register: what sshd's AuthorizedKeysCommand runs
at every login, so it opens only the state database (no gateway.toml, schemas or keyring): the login costs
little more than a fixed authorized_keys file would.

`python -I -m gateway.access.keys ROOT ACCOUNT [UID]` prints the line, or nothing; exit 0 either way, 1 if the
register cannot be read (sshd then refuses the key and logs what this printed on stderr).
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from gateway.adapters.config import journal_url
from gateway.adapters.db import Database
from gateway.core.errors import GatewayError, UsageError
from gateway.state.accounts import OPEN, Accounts
from gateway.state.registry import Registry

DATABASE = Path("state") / "gateway.db"


def authorized_key(db: Database, account: str, uid: str | None) -> str | None:
    """The authorized_keys line for the system account `account` (uid `uid`, as sshd's %U gives it): its officer's
    SSH key, if `access sync` made that account and the officer is active; None otherwise, so `officers revoke`
    shuts the door at the officer's next connection."""
    made = Accounts(db).get(account)
    if made is None or made.status != OPEN or (uid is not None and uid != str(made.uid)):
        return None
    try:
        officer = Registry(db).get(made.officer)
    except UsageError:  # no longer in the register
        return None
    if officer.agency != made.agency or not officer.active or officer.ssh_key is None:
        return None
    # restrict: no pty, no forwarding, no ~/.ssh/rc, whatever sshd's config says
    return f"restrict {officer.ssh_key} {officer.id}@iom-gateway"


def main(argv: list[str]) -> int:
    """Print the key line for ACCOUNT [UID] of the root ROOT (argv: ROOT ACCOUNT [UID])."""
    if len(argv) not in (2, 3):
        print("usage: python -m gateway.access.keys ROOT ACCOUNT [UID]", file=sys.stderr)
        return 2
    if journal_url(Path(argv[0])) is not None:  # the register is in PostgreSQL: open the root as the gateway does
        return _from_postgresql(Path(argv[0]), argv[1], argv[2] if len(argv) == 3 else None)
    path = Path(argv[0]) / DATABASE
    if not path.is_file():
        print(f"iom-gateway: no register at {str(path)!r}", file=sys.stderr)
        return 1
    try:
        db = sqlite3.connect(path, timeout=10)
        try:
            db.row_factory = sqlite3.Row
            line = authorized_key(db, argv[1], argv[2] if len(argv) == 3 else None)
        finally:
            db.close()
    except sqlite3.Error as exc:
        print(f"iom-gateway: the register at {str(path)!r} cannot be read: {exc}", file=sys.stderr)
        return 1
    if line is not None:
        print(line)
    return 0


def _from_postgresql(path: Path, account: str, uid: str | None) -> int:
    from gateway.state.root import Root  # noqa: PLC0415 (SQLite roots never load the configuration)

    try:
        with Root.open(path) as root:
            line = authorized_key(root.db, account, uid)
    except GatewayError as exc:
        print(f"iom-gateway: the register of {str(path)!r} cannot be read: {exc.message}", file=sys.stderr)
        return 1
    if line is not None:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
