"""The one error root: every expected failure carries its exit status and a message naming the fix.

The exit status of every command follows one rule (README, "Exit status"):

- 0: done.
- 1 (`GatewayError` and every subclass but `UsageError`): a refusal. The command was understood
  and names things that exist, but the gateway says no: an invalid or unreadable input file, a
  bad signature, the policy (a weak password, a revoked key), the state (an officer already
  registered or already revoked), a damaged audit log, a wrong gateway.toml or vault passphrase,
  a root this user may not read. Fix the data, the set-up or the state; the command line was fine.
- 2 (`UsageError`, and argparse's own errors): misuse. The command line cannot be carried out as
  typed: an unknown command or option, options that do not go together, a malformed value (a
  date, an officer id, an e-mail address), a name that is not there (a file that does not exist,
  an agency not in gateway.toml, an officer not in the register, an audit event that does not exist), an action
  that does not apply to what it names (a password for an OpenPGP agency), a path given for output
  that cannot be used (an existing file, a missing folder, a root that is a file), or "no" at a
  confirmation prompt. Fix the command and run it again; nothing was changed.
"""

from __future__ import annotations


class GatewayError(Exception):
    """An expected failure the user must act on; `message` says what to do."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(GatewayError):
    """The command line asks for something that cannot be (exit 2)."""

    exit_code = 2


class ConfigError(GatewayError):
    """gateway.toml or the environment is wrong; the message lists every mistake with its line."""


class SchemaError(GatewayError):
    """A shipped schema under schemas/ is missing or malformed: refuse rather than guess."""


class InputFileError(GatewayError):
    """A file handed to the gateway cannot be read safely (missing, symlink, not a regular file)."""


class CryptoError(GatewayError):
    """gpg or a cipher refused: a bad signature, a wrong password, a tampered package, a missing key."""


class VaultError(GatewayError):
    """The password vault cannot be opened or changed (wrong passphrase, damaged file)."""


class PolicyError(GatewayError):
    """A request breaks the partnership's policy (a weak password, a marking below the floor)."""


class StorageError(GatewayError):
    """The state database or a folder cannot be written now (disk full, read-only): try again later."""


class JournalUnavailable(StorageError):
    """The journal's PostgreSQL server cannot be reached now (down, restarting, the network): a node stops
    taking work and tries again; nothing was half-written (the transaction in hand rolled back)."""


class ClaimLost(StorageError):
    """Another node took over the submission this process was working on (its lease lapsed while it was paused
    or cut off): this process writes nothing more for it, and leaves it to the new holder."""


class Claimed(GatewayError):
    """Another live process (of this node or another) holds the submission: look at it again later."""


class UnreadableError(InputFileError):
    """A file this user may not read (its mode or access list gives it no read permission)."""


class ChangedError(InputFileError):
    """A file read twice gave different bytes: someone wrote to it while the gateway was reading it."""


class AccessError(GatewayError):
    """This user may not read or write the gateway root or a file in it: run as the gateway's user."""
