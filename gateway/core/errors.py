"""The one error root: every expected failure carries its exit status and a message naming the fix."""

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


class ChangedError(InputFileError):
    """A file read twice gave different bytes: someone wrote to it while the gateway was reading it."""
