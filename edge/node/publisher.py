"""Per publish interval: replayed history and live samples from the outbox as DDATA, node health as NDATA.

Every NDATA/DDATA carries its own `zhizao/Batch` id, by the alias the node's or device's birth declared. The records taken in one interval are marked with the
last batch id of that interval, so a host ack releases them only once every DDATA of the interval is
committed. With `acks=False` (plain Sparkplug) they are released once paho has written that last DDATA.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from zhizao.broker.extensions import BATCH_METRIC
from zhizao.broker.sparkplug.codec import BirthMetric, encode_data
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.edge.node import messages as m
from zhizao.edge.node.config import SparkplugConfig
from zhizao.edge.node.link import MqttLink, Published
from zhizao.edge.outbox import Outbox
from zhizao.edge.samples import SampleBlock


@dataclass
class NodeStats:
    """Counters of one edge node (read by the health exporter)."""

    connects: int = 0
    reconnects: int = 0
    births: int = 0
    messages: int = 0
    live_samples: int = 0
    historical_samples: int = 0
    rejected_commands: int = 0


class Publisher:
    """Turns outbox contents into DATA messages; `next_seq` and `ensure_born` come from the session."""

    def __init__(
        self,
        outbox: Outbox,
        index: m.SignalIndex,
        link: MqttLink,
        sparkplug: SparkplugConfig,
        stats: NodeStats,
        *,
        acks: bool,
        ddata_topics: list[str],
        ndata_topic: str,
        next_seq: Callable[[], int],
        ensure_born: Callable[[int, int], None],
    ) -> None:
        self.outbox = outbox
        self.index = index
        self.last = m.LastValues(len(index.signals))
        self.link = link
        self.sp = sparkplug
        self.stats = stats
        self.acks = acks
        self._ddata = ddata_topics
        self._ndata = ndata_topic
        self._next_seq = next_seq
        self._ensure_born = ensure_born
        self._release: deque[tuple[Published, int]] = deque()
        self._last_health = 0.0
        self._last_appended = outbox.appended_samples
        self.samples_per_s = 0.0

    def reset(self) -> None:
        """A new session: handles of the old one will never complete."""
        self._release.clear()

    def tick(self) -> None:
        """One publish interval while online: history (rate-limited), live data, health, plain-mode release."""
        if self.outbox.replay_pending:
            hist, positions = self.outbox.take_replay(self.sp.replay_samples_per_interval)
            self._publish(hist, positions, historical=True)
        self.publish_live()
        if time.monotonic() - self._last_health >= self.sp.health_interval_s:
            self._publish_health()
        if not self.acks:
            while self._release and self._release[0][0].done:
                self.outbox.ack(self._release.popleft()[1])

    def publish_live(self) -> None:
        """Publish what was appended since the last call, as live data."""
        live, positions = self.outbox.take_live()
        if len(live):
            self.last.update(live)
            self._publish(live, positions, historical=False)

    def _publish(self, block: SampleBlock, positions: list[int], historical: bool) -> None:
        chunks = m.split_block(block, self.index, self.sp.max_samples_per_message)
        if not chunks:
            return
        now = m.now_ms()
        handle: Published | None = None
        batch = 0
        for c in chunks:
            self._ensure_born(c.device, now)
            batch = self.outbox.next_batch()
            payload = encode_data(
                self._next_seq(), now, c.alias, c.ts_ms, c.value, c.datatype,
                historical=historical, quality=c.quality, text=c.text,
                extra=(BirthMetric(BATCH_METRIC, DataType.Int64, batch, self.index.batch_alias(c.device)),),
            )  # fmt: skip
            handle = self.link.publish(self._ddata[c.device], payload)
            self.stats.messages += 1
        self.outbox.mark_published(positions, batch)
        if historical:
            self.stats.historical_samples += len(block)
        else:
            self.stats.live_samples += len(block)
        if not self.acks and handle is not None:
            self._release.append((handle, batch))

    def health(self) -> dict[str, float]:
        """Current node health figures (also restarts the samples/s window)."""
        now = time.monotonic()
        appended = self.outbox.appended_samples
        if self._last_health:
            self.samples_per_s = (appended - self._last_appended) / max(now - self._last_health, 1e-3)
        self._last_health = now
        self._last_appended = appended
        return {
            m.OUTBOX_DEPTH_METRIC: self.outbox.depth_samples,
            m.OUTBOX_BYTES_METRIC: self.outbox.depth_bytes,
            m.SAMPLES_PER_S_METRIC: self.samples_per_s,
            m.RECONNECTS_METRIC: self.stats.reconnects,
            # A full outbox refuses new samples: the cloud sees it here, not only in the agent's log.
            m.OUTBOX_FILL_METRIC: self.outbox.depth_bytes / self.outbox.config.max_bytes,
            m.OUTBOX_REFUSED_METRIC: self.outbox.rejected_samples,
            m.COMMANDS_REFUSED_METRIC: self.stats.rejected_commands,
        }

    def _publish_health(self) -> None:
        now = m.now_ms()
        alias, ts, value, dts = m.health_arrays(self.health(), now)
        batch = self.outbox.next_batch()
        extra = (BirthMetric(BATCH_METRIC, DataType.Int64, batch, m.NODE_BATCH_ALIAS),)
        self.link.publish(self._ndata, encode_data(self._next_seq(), now, alias, ts, value, dts, extra=extra))
        self.stats.messages += 1
