"""Planning fixtures: the seeded cluster and its manufacturing network in a fresh database, tokens, a client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from tests.support.apifixtures import make_client
from zhizao.cloud.auth import create_token
from zhizao.cloud.planning.network import seed_network
from zhizao.cloud.seed import seed_database
from zhizao.cloud.storage import apply_migrations
from zhizao.cloud.storage.migrate import TimescaleHorizons
from zhizao.seeds import load_scenario
from zhizao.seeds.network import load_network


@dataclass(frozen=True)
class PlanTokens:
    planner: str  # cluster-planner, every site
    hefei: str  # engineer, ah-hefei
    suzhou: str  # engineer, js-suzhou
    suzhou_operator: str
    lingang_viewer: str
    admin_hefei: str  # admin of one site: not a cluster planner


@pytest.fixture
def seeded(fresh_database: str) -> str:
    """A migrated database holding the seeded cluster and network."""
    apply_migrations(fresh_database, horizons=TimescaleHorizons(use_timescale=False))
    scenario = load_scenario()
    seed_database(fresh_database, scenario)
    seed_network(fresh_database, load_network(scenario=scenario), scenario)
    return fresh_database


@pytest.fixture
def ptokens(seeded: str) -> PlanTokens:
    return PlanTokens(
        planner=create_token(seeded, "cluster-planner", "*", "cluster planner"),
        hefei=create_token(seeded, "engineer", "ah-hefei", "hefei engineer"),
        suzhou=create_token(seeded, "engineer", "js-suzhou", "suzhou engineer"),
        suzhou_operator=create_token(seeded, "operator", "js-suzhou", "suzhou operator"),
        lingang_viewer=create_token(seeded, "viewer", "sh-lingang", "lingang viewer"),
        admin_hefei=create_token(seeded, "admin", "ah-hefei", "hefei admin"),
    )


@pytest.fixture
def pclient(seeded: str) -> Iterator[TestClient]:
    with make_client(seeded) as c:
        yield c
