"""One owner per site among several workers (ingest/owners.py) and live events relayed between workers
(live.PgLiveRelay), on a real PostgreSQL."""

from __future__ import annotations

import asyncio

import numpy as np
import numpy.typing as npt
import psycopg

from tests.support.spnode import wait_for
from zhizao.cloud.ingest.owners import SiteOwners, write_feed
from zhizao.cloud.live import LiveEvent, LiveHub, PgLiveRelay
from zhizao.cloud.storage.migrate import apply_migrations


def _tags(db: str, sites: list[str]) -> dict[str, int]:
    with psycopg.connect(db, autocommit=True) as conn:
        out = {}
        for site in sites:
            conn.execute("INSERT INTO sites (site_id, name) VALUES (%s, %s)", [site, site])
            conn.execute("INSERT INTO edge_nodes (site_id, edge_node_id) VALUES (%s, 'e1')", [site])
            row = conn.execute("INSERT INTO tags (site_id, edge_node_id, name, datatype) VALUES (%s, 'e1', 'v', 10)"
                               " RETURNING tag_id", [site]).fetchone()  # fmt: skip
            assert row is not None
            out[site] = int(str(row[0]))
        return out


def _commit(db: str, tags: list[int], ts: list[int]) -> None:
    with psycopg.connect(db) as conn, conn.transaction():
        write_feed(conn, np.array(tags, np.int32), np.array(ts, np.int64), np.ones(len(ts)))


class Heard:
    def __init__(self) -> None:
        self.ts: list[int] = []

    def __call__(self, tag: npt.NDArray[np.int32], ts: npt.NDArray[np.int64], value: npt.NDArray[np.float64]) -> None:
        self.ts.extend(ts.tolist())


def test_each_site_has_one_owner_fed_by_every_commit_and_a_dead_owner_is_replaced(fresh_database: str) -> None:
    apply_migrations(fresh_database)
    tag = _tags(fresh_database, ["a", "b"])
    heard = [Heard(), Heard()]
    claims: list[list[str]] = [[], []]
    owners = [SiteOwners(fresh_database, [heard[i]], poll_s=0.05, name=f"w{i}", on_claim=[claims[i].append])
              for i in range(2)]  # fmt: skip
    _commit(fresh_database, [tag["a"], tag["b"]], [1, 2])  # one worker's batch with samples of both sites
    owners[0].poll()  # the first to look claims both sites (as after start-up)
    owners[1].poll()
    assert (owners[0].owned, owners[1].owned) == ({"a", "b"}, set())
    assert claims == [["a", "b"], []]
    for o in owners:
        o.start()
    try:
        for k in range(3, 23):
            _commit(fresh_database, [tag["a"]], [k])  # batches "of other workers": all go to the owner
        wait_for(lambda: len(heard[0].ts) == 22, what="every sample at the owner")
        assert sorted(heard[0].ts) == list(range(1, 23)) and heard[1].ts == []
        owners[0].stop()  # its connection closes: the locks go with it
        _commit(fresh_database, [tag["a"], tag["b"]], [100, 101])
        wait_for(lambda: sorted(heard[1].ts) == [100, 101], what="the other worker took the sites over")
        assert owners[1].owned == {"a", "b"} and len(heard[0].ts) == 22
        assert claims[1] == ["a", "b"]  # told to reload their state before the first samples
    finally:
        for o in owners:
            o.stop()


def test_live_events_of_one_worker_reach_the_subscribers_of_every_worker(fresh_database: str) -> None:
    async def run() -> tuple[list[str], list[str], int]:
        hubs = [LiveHub(), LiveHub()]
        relays = [PgLiveRelay(h, fresh_database) for h in hubs]
        for r in relays:
            await asyncio.to_thread(r.start)
        try:
            async with hubs[0].subscribe({"a"}) as here, hubs[1].subscribe({"a"}) as there:
                hubs[0].publish("oee", "a", {"machine": "m1", "oee": 0.8})
                hubs[0].publish("oee", "b", {"machine": "m9"})  # another site: filtered by scope
                hubs[0].publish("big", "a", {"blob": "x" * 10_000})  # too big for NOTIFY: this worker only
                got_here = [(await asyncio.wait_for(here.get(), 10)).kind for _ in range(2)]
                got_there = [(await asyncio.wait_for(there.get(), 10)).kind]
                await asyncio.sleep(0.3)
                return got_here, got_there + [e.kind for e in _drain(there)], relays[0].oversize
        finally:
            for r in relays:
                await asyncio.to_thread(r.stop)

    here, there, oversize = asyncio.run(run())
    assert sorted(here) == ["big", "oee"] and there == ["oee"] and oversize == 1


def _drain(q: asyncio.Queue[LiveEvent]) -> list[LiveEvent]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def test_feed_rows_stay_until_confirmed_and_a_new_owner_hands_on_what_a_dead_one_did_not_confirm(
        fresh_database: str) -> None:  # fmt: skip
    apply_migrations(fresh_database)
    tag = _tags(fresh_database, ["c"])
    heard = [Heard(), Heard()]
    done = [False, True]  # the first owner's consumers never finish (it dies before confirming)
    owners = [SiteOwners(fresh_database, [heard[i]], name=f"w{i}", confirm=[lambda i=i: done[i]])
              for i in range(2)]  # fmt: skip
    _commit(fresh_database, [tag["c"]] * 3, [1, 2, 3])
    owners[0].poll()
    assert heard[0].ts == [1, 2, 3]
    owners[0].poll()  # not confirmed: handed on again (the consumers take replays)
    assert heard[0].ts == [1, 2, 3, 1, 2, 3]
    owners[0]._close()  # its death: the connection and the lock go, nothing confirmed
    _commit(fresh_database, [tag["c"]], [4])
    owners[1].poll()
    assert sorted(heard[1].ts) == [1, 2, 3, 4]
    with psycopg.connect(fresh_database) as conn:
        row = conn.execute("SELECT count(*) FROM ingest_site_feed").fetchone()
    assert row is not None and row[0] == 0  # confirmed: deleted
    owners[1].poll()
    assert sorted(heard[1].ts) == [1, 2, 3, 4]
    owners[1]._close()
