"""Several ingest workers: a site's OEE moves to another worker and back (ingest/owners.py). The worker that
takes the site over again drops its stale state and reloads the machines from the database, so its windows
agree with the reference over all the data, also the part the other owner computed meanwhile."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.oeefixtures import Running, batches, check_machine_windows, random_machine, store_batch
from zhizao.cloud.ingest.owners import SiteOwners, write_feed
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


@pytest.mark.parametrize("computed", [True, False], ids=["computed", "not-computed"])
def test_an_owner_dying_before_confirming_its_feed_loses_nothing_and_counts_nothing_twice(
        running: Running, computed: bool) -> None:  # fmt: skip
    """Site owners (ingest/owners.py) on the feed the ingest writes: the other worker takes the last three batches
    and dies before it confirms them, after its OEE computed them or before (its connection and site lock go, the
    rows stay in the feed); this worker takes the site over and gets those rows again. The windows equal the
    reference over all the data."""
    d = random_machine("site-a", "l1", "m1", seed=12, hours=6)
    parts = batches([d], running.tags, 7 * 60_000)
    mine = running.service.oee
    assert mine is not None
    other = OeeService(running.db)
    owners: list[SiteOwners] = []
    dying = [False]

    def dies() -> bool:  # the other worker's death, before the confirm
        if dying[0]:
            if computed:
                assert other.flush(60)
            other.stop()
            owners[0]._close()
        return not dying[0]

    owners += [SiteOwners(running.db, [other.on_committed], sites=("site-a",), on_claim=[other.forget],
                          confirm=[dies, lambda: other.flush(60)]),
               SiteOwners(running.db, [mine.on_committed], sites=("site-a",), on_claim=[mine.forget],
                          confirm=[lambda: mine.flush(60)])]  # fmt: skip
    other.start()
    last = len(parts) - 1
    try:
        with psycopg.connect(running.db) as conn:
            for k, (tag, ts, value) in enumerate(parts):
                write_feed(conn, tag, ts, value)
                store_batch(conn, tag, ts, value)  # commits samples and feed rows together
                if k < last - 2:
                    owners[0].poll()
            # The last three batches (nothing comes after them to make a new owner reload the machine anyway):
            # taken, and the owner dies.
            dying[0] = True
            if not computed:
                other.stop()  # dead before its OEE got to the rows
            before = other.batches
            owners[0].poll()
            assert (other.batches > before) == computed and not owners[0].owned
            assert conn.execute("SELECT count(*) FROM ingest_site_feed").fetchone() == (3,)
            conn.commit()
            owners[1].poll()
            assert owners[1].owned == {"site-a"}
            assert conn.execute("SELECT count(*) FROM ingest_site_feed").fetchone() == (0,)
    finally:
        owners[1]._close()
        other.stop()
    check_machine_windows(running, d)
