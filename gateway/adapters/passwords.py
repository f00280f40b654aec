"""The partnership's password policy (Solihull ISP 4.3.2) and strong generated passwords.

Pure: no I/O. A password is a `Secret` throughout, and no message ever contains it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

from gateway.core.errors import PolicyError
from gateway.core.secret import Secret

FLOOR_LENGTH = 8
MIN_GENERATED_LENGTH = 24

# Read aloud over the phone and typed into `7z x -p...` on any shell: no l/1/I/O/0, no space,
# quotes, backslash, backtick or `$`, and none of the characters cmd.exe, PowerShell or a POSIX
# shell expands unquoted (`% ^ ! & | ; < > ( ) * ? [ ] { } ~`). `-` and `@` (a switch or a list
# file to 7-Zip at the start of a word) are harmless because `-p<password>` is one word.
UPPER = "".join(c for c in string.ascii_uppercase if c not in "IO")
LOWER = "".join(c for c in string.ascii_lowercase if c != "l")
DIGITS = "23456789"
SPECIAL = "#+-.:=@_"
ALPHABET = UPPER + LOWER + DIGITS + SPECIAL


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """What a password set by hand must contain; never weaker than Solihull ISP 4.3.2."""

    min_length: int = FLOOR_LENGTH
    upper: bool = True
    lower: bool = True
    digit: bool = True
    special: bool = True

    def __post_init__(self) -> None:
        """Raise PolicyError if the policy is weaker than the protocol's floor."""
        if self.min_length < FLOOR_LENGTH or not (self.upper and self.lower and self.digit and self.special):
            raise PolicyError(
                "the password policy may not be weaker than Solihull ISP 4.3.2 (at least 8 characters with "
                "upper and lower case, a digit and a special character): raise it in gateway.toml"
            )


def _is_special(char: str) -> bool:
    return not char.isalnum() and not char.isspace()


def broken_rules(password: Secret, policy: PasswordPolicy) -> list[str]:
    """Each rule of `policy` that `password` breaks, as a phrase for a message; empty if none."""
    value = password.reveal()
    rules = [
        (len(value) >= policy.min_length, f"at least {policy.min_length} characters"),
        (not policy.upper or any(c.isupper() for c in value), "an upper-case letter"),
        (not policy.lower or any(c.islower() for c in value), "a lower-case letter"),
        (not policy.digit or any(c.isdigit() for c in value), "a digit"),
        (not policy.special or any(_is_special(c) for c in value), "a special character such as ! or #"),
    ]
    return [phrase for kept, phrase in rules if not kept]


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def check(password: Secret, policy: PasswordPolicy) -> None:
    """Accept `password` or raise PolicyError naming every rule it breaks (never the password)."""
    broken = broken_rules(password, policy)
    if broken:
        raise PolicyError(
            "the password breaks the partnership's password policy (Solihull ISP 4.3.2): "
            f"it needs {_join(broken)}; choose another"
        )


def _has_every_class(candidate: str) -> bool:
    return all(any(c in group for c in candidate) for group in (UPPER, LOWER, DIGITS, SPECIAL))


def generate(length: int = 32) -> Secret:
    """A fresh password from the OS CSPRNG with every character class; raise ValueError below 24.

    Candidates are drawn uniformly and redrawn until every class appears, so the result is uniform
    over the passwords that pass the policy (at 24 characters about 1 draw in 12 is redrawn).
    """
    if length < MIN_GENERATED_LENGTH:
        raise ValueError(f"a generated password needs at least {MIN_GENERATED_LENGTH} characters, not {length}")
    while True:
        candidate = "".join(secrets.choice(ALPHABET) for _ in range(length))
        if _has_every_class(candidate):
            return Secret(candidate)


# --- officers' login passwords (the SMTP intake): stored only as scrypt hashes -----------------------

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1  # 32 MiB and ~0.1 s a check: slow for a guesser, fine for a login
_SCRYPT_MAXMEM = 64 * 1024 * 1024
_SCHEME = "scrypt"


def hash_login(password: Secret) -> str:
    """`scrypt$N$r$p$salt$hash` (base64) of `password` with a fresh 16-byte salt: what the register keeps."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join((_SCHEME, str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)))


def login_matches(password: Secret, stored: str | None) -> bool:
    """Whether `password` is the one hashed in `stored`, compared in constant time. With no hash
    (an officer without a password, or no such officer) a hash is still computed, so the time taken
    does not tell which logins exist."""
    try:
        scheme, n, r, p, salt, digest = (stored or "").split("$")
        cost = (int(n), int(r), int(p))
        expected, salt_bytes = base64.b64decode(digest, validate=True), base64.b64decode(salt, validate=True)
        usable = scheme == _SCHEME and 2 <= cost[0] <= 2**20 and 1 <= cost[1] <= 64 and 1 <= cost[2] <= 16
    except (ValueError, TypeError):
        usable = False
    if not usable:
        _scrypt(password, b"\0" * 16, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        return False
    return hmac.compare_digest(_scrypt(password, salt_bytes, *cost), expected)


def _scrypt(password: Secret, salt: bytes, n: int, r: int, p: int) -> bytes:
    maxmem = max(_SCRYPT_MAXMEM, 256 * n * r * p)
    return hashlib.scrypt(password.reveal().encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
