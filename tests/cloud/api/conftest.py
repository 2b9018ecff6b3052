"""API test fixtures: a migrated, filled database, tokens, and a client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.support.apifixtures import Cluster, Tokens, fill_cluster, make_client, make_tokens
from zhizao.cloud.storage import apply_migrations
from zhizao.cloud.storage.migrate import TimescaleHorizons


@pytest.fixture
def cluster(fresh_database: str) -> Cluster:
    """A migrated, filled database (plain rollups: the fixture writes rollup rows; the TimescaleDB path has
    its own tests in tests/cloud/storage/test_timescale.py)."""
    apply_migrations(fresh_database, horizons=TimescaleHorizons(use_timescale=False))
    return fill_cluster(fresh_database)


@pytest.fixture
def tokens(cluster: Cluster) -> Tokens:
    """Tokens created through `create_token` (the CLI path)."""
    return make_tokens(cluster.url)


@pytest.fixture
def client(cluster: Cluster) -> Iterator[TestClient]:
    """A client of the app on the filled database."""
    with make_client(cluster.url) as c:
        yield c
