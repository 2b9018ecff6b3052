"""The attack rows with their counters (zhizao/bench/attacks.py), short: every bad token refused on every route,
site-a's token allowed nothing of site-b's on any route, live-stream clients get no other site's events, huge
ranges answered 4xx or bounded, the shipped ACL's and the simulator's expected refusals all happen. The long
run is `zhizao bench faults --rows attacks` (200 SSE clients)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.apifixtures import scratch_database
from zhizao.bench.attacks import AttackRow, Target, attack_table, attack_target, run_attacks


@pytest.fixture(scope="module")
def target(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The two-site cluster, a private mosquitto with the shipped ACL and the cloud service, for this module."""
    work = tmp_path_factory.mktemp("attacks")
    with scratch_database(database_url) as url, attack_target(url, work) as t:
        yield t


def _run(target: Target, name: str, tmp_path: Path, **kw: int) -> AttackRow:
    (row,) = run_attacks([name], target, tmp_path, **kw)
    print("\n" + attack_table([row]), row.detail)  # the counters, in the -s / failure output
    assert row.allowed_examples == [] and row.allowed == 0, row.allowed_examples
    assert row.refused == row.attempted > 0 and row.ok
    return row


def test_bad_tokens_are_refused_on_every_route(target: Target, tmp_path: Path) -> None:
    row = _run(target, "tokens", tmp_path)
    kinds = row.detail["kinds"]
    assert set(kinds) == {"forged", "malformed-short", "malformed-long", "malformed-quote", "malformed-prefix",
                          "expired", "revoked"}  # fmt: skip
    assert row.detail["routes"] >= 90 and all(k["attempted"] == row.detail["routes"] + 1 for k in kinds.values())


def test_site_a_token_gets_nothing_of_site_b_on_any_route(target: Target, tmp_path: Path) -> None:
    row = _run(target, "cross-site", tmp_path)
    assert row.detail["routes_naming_site_b"] >= 40
    # The attacks were fair ones: the same requests with site-b's own admin token mostly succeed.
    assert row.detail["control_2xx (site-b admin, same requests)"] >= row.detail["routes_naming_site_b"] // 3
    # A route naming site-b answers 404 like any object outside the token's sites, lists filtered by site too.
    assert row.detail["answered_2xx_without_data"] == []


def test_live_stream_clients_get_no_other_sites_events(target: Target, tmp_path: Path) -> None:
    row = _run(target, "sse", tmp_path, sse_clients=20, sse_events=10)
    assert row.detail["own_events_missing"] == 0 and row.detail["status_200"] == 20
    assert row.attempted == 20 * 11


def test_huge_ranges_are_4xx_or_bounded(target: Target, tmp_path: Path) -> None:
    row = _run(target, "ranges", tmp_path)
    assert row.detail["routes"] >= 5 and row.detail["slowest_s"] <= row.detail["deadline_s"]


def test_shipped_acl_refuses_what_it_should(target: Target, tmp_path: Path) -> None:
    row = _run(target, "mqtt-acl", tmp_path)
    assert row.attempted == 19 and row.detail["own_ndata_reason"] in (0, 0x10)


def test_simulator_refuses_anonymous_writes_and_calls(target: Target, tmp_path: Path) -> None:
    row = _run(target, "opcua", tmp_path)
    assert row.attempted == 5 and row.detail["user_write_and_call"] == "ok"
