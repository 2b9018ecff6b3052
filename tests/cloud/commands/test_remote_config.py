"""Remote configuration end to end: upload (validated with the edge's own model), versions and diff, signed
NCMD push, apply without losing outbox data, automatic rollback when the new config cannot connect."""

from __future__ import annotations

from typing import Any

import psycopg
import yaml

from tests.support.spnode import wait_for
from zhizao.bench.command import CommandStack


def document(stack: CommandStack, *changes: Any) -> str:
    raw = stack.config_raw()
    raw["mqtt"].pop("password", None)
    for change in changes:
        change(raw)
    return yaml.safe_dump(raw, sort_keys=False)


def upload(stack: CommandStack, doc: str, role: str = "engineer") -> tuple[int, Any]:
    return stack.api("POST", f"/api/v1/fleet/{stack.site}/{stack.edge}/configs", role,
                     {"document": doc, "comment": "test"})  # fmt: skip


def push(stack: CommandStack, version: int, rollback_after_s: float = 20) -> Any:
    status, doc = stack.api("POST", f"/api/v1/fleet/{stack.site}/{stack.edge}/configs/{version}/push", "engineer",
                            {"rollback_after_s": rollback_after_s})  # fmt: skip
    assert status == 201, doc
    return doc


def wait_push(stack: CommandStack, push_id: str, timeout: float = 40) -> Any:
    found: list[Any] = []

    def final() -> bool:
        _, rows = stack.api("GET", f"/api/v1/fleet/{stack.site}/{stack.edge}/pushes", "viewer")
        found[:] = [r for r in rows if r["push_id"] == push_id]
        return bool(found) and found[0]["status"] not in ("queued", "sent", "delivered")

    wait_for(final, timeout, f"push {push_id} to end")
    return found[0]


def fleet_row(stack: CommandStack) -> Any:
    return stack.api("GET", f"/api/v1/fleet/{stack.site}/{stack.edge}", "viewer")[1]


def test_upload_is_validated_with_the_edge_model_and_needs_an_engineer(stack: CommandStack) -> None:
    def bad(raw: Any) -> None:
        raw["machines"][0]["signals"][0]["node_id"] = "ns=2;x=1"

    status, err = upload(stack, document(stack, bad))
    assert status == 400, err
    assert "machines[0].signals[0].node_id" in err["error"]["message"] and "ns=2;x=1" in err["error"]["message"]
    status, err = upload(stack, document(stack, lambda raw: raw.update(edge_node="other")))
    assert status == 400 and err["error"]["field"] == "document.edge_node"
    assert upload(stack, document(stack), "operator")[0] == 403


def test_push_applies_a_new_signal_table_without_losing_outbox_data_then_rolls_back_a_bad_one(
    stack: CommandStack,
) -> None:
    status, v1 = upload(stack, document(stack))
    assert status == 201, v1

    def more(raw: Any) -> None:  # a new signal: the signal table changes, so the outbox is drained first
        sig = dict(raw["machines"][0]["signals"][-1], metric="Temperature/Copy")
        raw["machines"][0]["signals"].append(sig)

    status, v2 = upload(stack, document(stack, more))
    assert status == 201 and v2["version"] == v1["version"] + 1 and "+  - metric: Temperature/Copy" in v2["diff"].replace("- - ", "  - ")
    _, listed = stack.api("GET", f"/api/v1/fleet/{stack.site}/{stack.edge}/configs", "viewer")
    assert [v["version"] for v in listed][:2] == [v2["version"], v1["version"]]
    before = fleet_row(stack)["config_version"]
    p = push(stack, v2["version"])
    done = wait_push(stack, p["push_id"])
    assert done["status"] == "applied", done["message"]
    wait_for(lambda: fleet_row(stack)["config_version"] != before and fleet_row(stack)["status"] == "online",
             what="the agent online with the new config")  # fmt: skip
    applied = fleet_row(stack)["config_version"]
    with psycopg.connect(stack.database_url) as conn:
        wait_for(lambda: conn.execute("SELECT count(*) FROM tags WHERE name = 'Temperature/Copy'").fetchone()[0] == 1,
                 what="the new signal stored")  # type: ignore[index]

    def broken(raw: Any) -> None:  # nothing listens there: the adapter cannot connect
        raw["adapters"][0]["endpoint"] = "opc.tcp://127.0.0.1:9/zhizao/sim"

    status, v3 = upload(stack, document(stack, more, broken))
    assert status == 201
    born = fleet_row(stack)["last_birth"]
    p = push(stack, v3["version"], rollback_after_s=3)
    done = wait_push(stack, p["push_id"])
    assert done["status"] == "rolled_back" and "adapter sim not connected" in done["message"], done
    # Only the adapter section changed: that adapter reconnected (twice), the MQTT session never restarted.
    assert fleet_row(stack)["last_birth"] == born
    wait_for(lambda: fleet_row(stack)["config_version"] == applied and fleet_row(stack)["status"] == "online",
             what="the agent back on version 2")  # fmt: skip
    with psycopg.connect(stack.database_url) as conn:
        actions = [r[0] for r in conn.execute("SELECT action FROM audit_log WHERE action LIKE 'config.%' ORDER BY id")]
    assert actions.count("config.upload") >= 3 and "config.applied" in actions and "config.rolled_back" in actions


def test_staged_rollout_and_nothing_lost_across_config_changes(stack: CommandStack) -> None:
    _, listed = stack.api("GET", f"/api/v1/fleet/{stack.site}/{stack.edge}/configs", "viewer")
    good_version = listed[1]["version"]  # the one before the broken latest (see the test above)
    _, good = stack.api("GET", f"/api/v1/fleet/{stack.site}/{stack.edge}/configs/{good_version}", "viewer")
    status, fixed = upload(stack, good["document"])  # the latest version is the good one again
    assert status == 201 and fixed["version"] == listed[0]["version"] + 1
    assert "opc.tcp://127.0.0.1:9/zhizao/sim" in fixed["diff"]  # the broken endpoint, as a removed line
    status, rows = stack.api("POST", f"/api/v1/sites/{stack.site}/config-rollout", "engineer",
                             {"edges": [stack.edge], "rollback_after_s": 20})  # fmt: skip
    assert status == 201 and len(rows) == 1 and rows[0]["rollout_id"], rows
    done = wait_push(stack, rows[0]["push_id"])
    assert done["status"] == "applied", done["message"]
    # Production pauses; every sample the agent appended over all its runs (three config changes, one rollback)
    # must be acknowledged by the host, which acks only what it committed (DESIGN.md section 3), and none of
    # it may have been dead-lettered or quarantined.
    stack.sim._bench_stop.set()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        def count(table: str) -> int:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]

        wait_for(lambda: fleet_row(stack)["outbox_depth"] == 0, 20, "the outbox empty (every sample acked)")
        # `unknown_alias` is the ingest's resync path, not a loss: those samples are not acked, the host asks
        # for a rebirth and the edge replays them (cloud/ingest/processor.py). Nothing else may be refused.
        dead = conn.execute("SELECT topic, reason, detail FROM dead_letters WHERE reason <> 'unknown_alias'")
        assert dead.fetchall() == [] and count("quarantine") == 0
        copy = conn.execute("SELECT count(*) FROM samples JOIN tags USING (tag_id) WHERE name = 'Temperature/Copy'")
        assert copy.fetchone()[0] > 0  # type: ignore[index]  # the signal added by the push has data
