"""API test fixtures: a migrated, filled database, tokens, and a client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from apifixtures import Cluster, Tokens, fill_cluster, make_client
from fastapi.testclient import TestClient

from cloud.auth import create_token
from cloud.storage import apply_migrations


@pytest.fixture
def cluster(fresh_database: str) -> Cluster:
    """A migrated, filled database."""
    apply_migrations(fresh_database)
    return fill_cluster(fresh_database)


@pytest.fixture
def tokens(cluster: Cluster) -> Tokens:
    """Tokens created through `create_token` (the CLI path)."""
    return Tokens(
        viewer_a=create_token(cluster.url, "viewer", "site-a", "viewer a"),
        viewer_b=create_token(cluster.url, "viewer", ["site-b"], "viewer b"),
        admin_all=create_token(cluster.url, "admin", "*", "admin all"),
        admin_a=create_token(cluster.url, "admin", "site-a", "admin a"),
        operator_ab=create_token(cluster.url, "operator", "site-a,site-b", "operator ab"),
    )


@pytest.fixture
def client(cluster: Cluster) -> Iterator[TestClient]:
    """A client of the app on the filled database."""
    with make_client(cluster.url) as c:
        yield c
