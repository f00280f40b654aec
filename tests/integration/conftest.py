"""Fixtures shared by the tests that run the exchange on a demo root: routed police -> probation, housing,
or with every shipped route; on either journal.

A module marked `both_journals` runs each of its tests that uses a demo root twice: once with the root's journal
in state/gateway.db, once with it moved (as an admin moves it, `journal migrate --to`) into a database of its
own on one PostgreSQL cluster per test process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon_harness import copy_of, make_demo_template, make_template, remove_root
from tests.integration.pg_harness import Cluster, cluster, on_journal

JOURNALS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "journal" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_journals"):
        metafunc.parametrize("journal", JOURNALS, indirect=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Cluster]:
    """One throw-away PostgreSQL cluster for this test process (each root gets its own database in it)."""
    with cluster() as running:
        yield running


@pytest.fixture
def journal(request: pytest.FixtureRequest) -> str:
    """Which journal the test's demo root uses: both in a `both_journals` module; else $IOM_TEST_JOURNAL, or
    "sqlite" (`IOM_TEST_JOURNAL=postgresql scripts/test` runs every demo-root test on PostgreSQL)."""
    return str(getattr(request, "param", os.environ.get("IOM_TEST_JOURNAL", "sqlite")))


@pytest.fixture(scope="module")
def routed_template() -> Iterator[Path]:
    """One demo root per module (13 keys made once): police routes to probation and housing."""
    path = make_template()
    yield path
    remove_root(path)


@pytest.fixture
def routed_root(routed_template: Path, journal: str, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A private copy of the module's template for one test, on `journal`; its gpg-agents are stopped after."""
    with copy_of(routed_template) as path:
        yield on_journal(journal, path, request)


@pytest.fixture(scope="module")
def demo_template() -> Iterator[Path]:
    """One demo root per module (13 keys made once) with every shipped route (`make_demo_template`)."""
    path = make_demo_template()
    yield path
    remove_root(path)


@pytest.fixture
def demo_root(demo_template: Path, journal: str, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A private copy of the module's demo template for one test, on `journal`; its gpg-agents are stopped after."""
    with copy_of(demo_template) as path:
        yield on_journal(journal, path, request)
