"""Shared fixtures: a throw-away gateway root built from this checkout's schemas and config."""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

import pytest
from hypothesis import settings

from gateway.core.model import Period
from gateway.exchange.process import check_file
from gateway.state.root import Root
from gateway.validate import Report
from tests import launcher  # noqa: F401 (started now, before any in-process main() lowers the limits)

# no deadline: speed is measured in bench/, never asserted by a test (a loaded CI machine is slow)
settings.register_profile("iom-gateway", deadline=None)
settings.load_profile("iom-gateway")

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first (in their order): with `-n 4`, a long test handed out last is the whole run's tail."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


PERIOD = Period(2026, 10)
TODAY = date(2026, 11, 21)


def make_root(target: Path, toml_extra: str = "", toml: str | None = None) -> Path:
    """A gateway root in `target` with the shipped schemas and gateway.toml (plus `toml_extra`)."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "schemas", target / "schemas")
    text = toml if toml is not None else (REPO / "gateway.toml").read_text(encoding="utf-8")
    (target / "gateway.toml").write_text(text + toml_extra, encoding="utf-8")
    return target


def csv_bytes(rows: Sequence[Sequence[str]], encoding: str = "utf-8", newline: str = "\r\n") -> bytes:
    """RFC 4180 bytes for `rows` (header first)."""
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator=newline).writerows(rows)
    return buffer.getvalue().encode(encoding)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path / "root")


@pytest.fixture
def validate_bytes(root: Path, tmp_path: Path) -> Callable[..., Report]:
    """Validate `data` as `agency` would send it for 2026-10; returns the Report."""
    gateway = Root.open(root)

    def run(data: bytes, agency: str = "police") -> Report:
        path = tmp_path / "submission.csv"
        path.write_bytes(data)
        return check_file(gateway, path, agency, PERIOD, TODAY)

    return run
