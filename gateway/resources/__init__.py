"""The files the gateway ships besides its code: the example gateway.toml, schemas/, samples/, systemd/,
the bank holidays.

They are package data, so a wheel installed anywhere carries them; `init` copies the example config
and the schemas into a new root, and `init --demo` the samples too. In a source checkout the
top-level gateway.toml, schemas, samples and systemd are links to these, so the checkout stays a
gateway root and the paths the README gives still work.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

EXAMPLE_CONFIG = "gateway.toml"
SCHEMAS = "schemas"
SAMPLES = "samples"
UNITS = "systemd"
BANK_HOLIDAYS = "bank-holidays.json"  # England and Wales, gov.uk's format (governance.holidays)


def shipped(name: str) -> Traversable:
    """The shipped file or folder `name` (one of the names above), wherever the package is installed."""
    return files(__name__).joinpath(name)


def schema_files() -> tuple[Traversable, ...]:
    """The schemas a root needs (the JSON files: the generator beside them is a development tool)."""
    return tuple(sorted((f for f in shipped(SCHEMAS).iterdir() if f.name.endswith(".json")), key=lambda f: f.name))


def sample_files() -> tuple[Traversable, ...]:
    """The demo's sample CSV files."""
    return tuple(sorted((f for f in shipped(SAMPLES).iterdir() if f.name.endswith(".csv")), key=lambda f: f.name))
