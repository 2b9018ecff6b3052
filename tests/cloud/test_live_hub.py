"""The live hub delivers across threads, filters by site, and drops the oldest for slow subscribers."""

from __future__ import annotations

import asyncio
import threading

from zhizao.cloud.live import LiveHub


def test_events_cross_threads_and_respect_site_scope() -> None:
    async def main() -> None:
        hub = LiveHub(queue_size=3)
        hub.bind(asyncio.get_running_loop())
        async with hub.subscribe({"a"}) as mine, hub.subscribe(None) as everything:
            t = threading.Thread(target=lambda: [hub.publish("state", s, {"i": i}) for i, s in enumerate("abab")])
            t.start()
            t.join()
            first = await asyncio.wait_for(mine.get(), 2)
            second = await asyncio.wait_for(mine.get(), 2)
            assert (first.site, first.data, second.data) == ("a", {"i": 0}, {"i": 2})
            assert mine.empty()
            got = [await asyncio.wait_for(everything.get(), 2) for _ in range(3)]
            assert [e.data["i"] for e in got] == [1, 2, 3]  # the oldest of four was dropped (queue of 3)
        assert hub.subscribers() == 0

    asyncio.run(main())
