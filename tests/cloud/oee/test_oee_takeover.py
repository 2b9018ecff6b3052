"""Several ingest workers: a site's OEE moves to another worker and back (ingest/owners.py). The worker that
takes the site over again drops its stale state and reloads the machines from the database, so its windows
agree with the reference over all the data, also the part the other owner computed meanwhile."""

from __future__ import annotations

import psycopg

from tests.support.oeefixtures import Running, batches, check_machine_windows, random_machine, store_batch
from zhizao.cloud.oee import OeeService


def test_a_site_taken_over_again_reloads_what_the_other_owner_committed(running: Running) -> None:
    d = random_machine("site-a", "l1", "m1", seed=11, hours=6)
    parts = batches([d], running.tags, 7 * 60_000)
    third = len(parts) // 3
    mine = running.service.oee
    assert mine is not None
    other = OeeService(running.db)  # the other worker, owner of the site for the middle third
    other.start()
    try:
        with psycopg.connect(running.db) as conn:
            for k, (tag, ts, value) in enumerate(parts):
                store_batch(conn, tag, ts, value)
                if k == 2 * third:
                    mine.forget("site-a")  # the site is back here: what this worker kept of it is stale
                owner = other if third <= k < 2 * third else mine
                owner.on_committed(tag, ts, value)
                assert owner.flush(60)  # computed batch by batch, as a live owner does
    finally:
        other.stop()
    check_machine_windows(running, d)
