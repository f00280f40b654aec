"""The state modules' own tests, run on PostgreSQL (issue 16, item 1: the same tests against both backends):
each test imported here runs as in tests/unit/, with `db` a PostgreSQL journal made by the migrations on a
throw-away cluster instead of an SQLite one."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from gateway.adapters import pg
from gateway.core.secret import Secret
from tests.integration.pg_harness import Cluster, cluster
from tests.unit.test_sar_index import (  # noqa: F401 (collected here, with this module's `db`)
    test_a_file_larger_than_a_batch_is_indexed_whole_and_once,
    test_purge_drops_submissions_past_retention_with_nothing_live_and_entries_of_old_keys,
)


@pytest.fixture(scope="module")
def server() -> Iterator[Cluster]:
    with cluster() as running:
        yield running


@pytest.fixture
def db(server: Cluster) -> Iterator[pg.Connection]:
    """A new PostgreSQL journal for each test, made by the migrations as a node's first connection makes it."""
    url = server.database(f"journal_{secrets.token_hex(4)}")
    connection = pg.connect(url, Secret(server.password), root_id=secrets.token_hex(16), root_path="test")
    yield connection
    connection.close()
