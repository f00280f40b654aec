"""Fixtures shared by the tests that run the exchange on a demo root: routed police -> probation, housing,
or with every shipped route."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.daemon_harness import copy_of, make_demo_template, make_template, remove_root


@pytest.fixture(scope="module")
def routed_template() -> Iterator[Path]:
    """One demo root per module (13 keys made once): police routes to probation and housing."""
    path = make_template()
    yield path
    remove_root(path)


@pytest.fixture
def routed_root(routed_template: Path) -> Iterator[Path]:
    """A private copy of the module's template for one test; its gpg-agents are stopped after."""
    with copy_of(routed_template) as path:
        yield path


@pytest.fixture(scope="module")
def demo_template() -> Iterator[Path]:
    """One demo root per module (13 keys made once) with every shipped route (`make_demo_template`)."""
    path = make_demo_template()
    yield path
    remove_root(path)


@pytest.fixture
def demo_root(demo_template: Path) -> Iterator[Path]:
    """A private copy of the module's demo template for one test; its gpg-agents are stopped after."""
    with copy_of(demo_template) as path:
        yield path
