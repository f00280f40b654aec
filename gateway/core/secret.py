"""A secret that cannot leak by accident: redacted when printed, logged or repr'd."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Secret:
    """A password, passphrase or key material. Only `reveal()` gives the value."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        """The value itself: pass it to gpg by file descriptor or stdin, never argv or environment."""
        return self._value

    def __str__(self) -> str:
        return "<secret>"

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    def __format__(self, spec: str) -> str:
        return "<secret>"

    def __bool__(self) -> bool:
        return bool(self._value)
