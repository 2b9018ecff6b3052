"""Planning fixtures: the seeded cluster and its manufacturing network in a fresh database, tokens, a client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
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


ALL_DAY = {"shifts": [{"name": "all", "start": "00:00", "hours": 24, "days": [1, 2, 3, 4, 5, 6, 7]}], "no_shift": []}


def work_all_day(url: str, site: str) -> None:
    """Give a site a 24/7 calendar, so a test's timing does not depend on the weekday it runs on."""
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE oee_site_config SET calendar = %s WHERE site_id = %s", [json.dumps(ALL_DAY), site])


@pytest.fixture
def seeded(fresh_database: str) -> str:
    """A migrated database holding the seeded cluster and network; Suzhou (the SMT lines the tests re-plan)
    works around the clock."""
    apply_migrations(fresh_database, horizons=TimescaleHorizons(use_timescale=False))
    scenario = load_scenario()
    seed_database(fresh_database, scenario)
    seed_network(fresh_database, load_network(scenario=scenario), scenario)
    work_all_day(fresh_database, "js-suzhou")
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
