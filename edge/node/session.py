"""The Sparkplug B edge-node session: births, deaths, seq/bdSeq, rebirth, DDATA from the outbox, acks.

Flow per connection (DESIGN.md section 3, standards.md section 1.3):
CONNECT (clean start, session expiry 0, Will = NDEATH with a new persisted bdSeq) -> subscribe NCMD, DCMD per
machine, the ack topic and (optionally) the primary host's STATE, all QoS 1 -> wait for SUBACK -> optionally
wait for STATE online -> NBIRTH (seq 0) -> DBIRTH per machine -> every publish interval: replayed history
(is_historical=true, rate-limited) and the live samples of the interval as DDATA, each message carrying the
node metric `zhizao/Batch`.

Batches: every NDATA/DDATA gets its own batch id (strictly increasing, persisted by the outbox). The records
of one publish interval are split into several DDATA (per machine, at most `max_samples_per_message` each);
the interval's records are marked with the last batch id of the interval, so an ack releases them only
once every DDATA of that interval is committed. With `outbox.acks: false` a record is released as soon as
paho has written its last DDATA to the socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from zhizao.broker.extensions import ExtensionError, ack_topic, decode_ack, decode_state
from zhizao.broker.sparkplug.codec import Decoded, PayloadError, decode, encode_birth, encode_death
from zhizao.broker.sparkplug.datatypes import DataType
from zhizao.broker.sparkplug.topics import (
    MessageType,
    TopicError,
    device_topic,
    node_topic,
    state_topic,
    validate_id,
)
from zhizao.edge.node import messages as m
from zhizao.edge.node.config import MqttConfig, SparkplugConfig
from zhizao.edge.node.link import (
    Connected,
    ConnectFailed,
    Disconnected,
    LinkError,
    LinkEvent,
    Message,
    MqttLink,
    Subscribed,
)
from zhizao.edge.node.publisher import NodeStats, Publisher
from zhizao.edge.outbox import Outbox, OutboxError
from zhizao.edge.samples import SignalTable

log = logging.getLogger(__name__)

CommandHandler = Callable[[int, float | int | bool | str], Awaitable[None]]
"""Called for each metric of a DCMD: (signal index, value) -> write it to the device."""

DcmdHandler = Callable[[int, Decoded], Awaitable[None]]
"""Called with (device index, decoded payload) for every DCMD that decodes; replaces `CommandHandler`
(the signed-command executor, edge/commands/, checks and executes it)."""


class NodeError(Exception):
    """The edge node cannot run (bad MQTT settings)."""


class EdgeNode:
    """One Sparkplug edge node publishing the samples of `outbox` for the machines in `signals`."""

    def __init__(
        self,
        site: str,
        edge_node: str,
        mqtt: MqttConfig,
        sparkplug: SparkplugConfig,
        outbox: Outbox,
        signals: SignalTable,
        *,
        acks: bool = True,
        state_dir: Path | None = None,
        on_command: CommandHandler | None = None,
        on_dcmd: DcmdHandler | None = None,
        on_birth: Callable[[], None] | None = None,
        on_ncmd: Callable[[Decoded], Awaitable[None]] | None = None,
    ) -> None:
        try:
            validate_id("site", site)
            validate_id("edge_node", edge_node)
        except TopicError as exc:
            raise NodeError(str(exc)) from None
        self.site = site
        self.edge = edge_node
        self.sp = sparkplug
        self.outbox = outbox
        self.acks = acks
        self.index = m.SignalIndex(signals)
        self.stats = NodeStats()
        self._on_command = on_command
        self.on_dcmd = on_dcmd
        self.on_birth = on_birth
        self.on_ncmd = on_ncmd
        self._bd_file = sparkplug.bdseq_file or (state_dir or outbox.dir) / "bdseq"
        self._events: asyncio.Queue[LinkEvent | None] = asyncio.Queue()
        self._state = "stopped"
        self._seq = 0
        self._bd_seq = -1
        self._sub_mid = -1
        self._host_online = sparkplug.primary_host is None
        self._host_ts = -1
        self._born_host_ts = -1
        self._born: set[int] = set()
        self._dead: set[int] = set()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._last_error = ("", 0.0)
        self.online = asyncio.Event()
        self._t = {
            "nbirth": node_topic(site, MessageType.NBIRTH, edge_node),
            "ndeath": node_topic(site, MessageType.NDEATH, edge_node),
            "ndata": node_topic(site, MessageType.NDATA, edge_node),
            "ncmd": node_topic(site, MessageType.NCMD, edge_node),
        }
        self._dev_topics = {
            kind: [device_topic(site, kind, edge_node, d) for d in self.index.devices]
            for kind in (MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA, MessageType.DCMD)
        }
        self._dcmd = {t: i for i, t in enumerate(self._dev_topics[MessageType.DCMD])}
        self._ack_topic = ack_topic(site, edge_node)
        self._state_topic = state_topic(sparkplug.primary_host) if sparkplug.primary_host else None
        try:
            self.link = MqttLink(
                mqtt,
                mqtt.client_id or edge_node,  # the persistent session's key (the ACL goes by the username)
                self._next_will,
                self._events.put_nowait,
            )
        except LinkError as exc:
            raise NodeError(str(exc)) from None
        self.pub = Publisher(
            outbox, self.index, self.link, sparkplug, self.stats,
            acks=acks, ddata_topics=self._dev_topics[MessageType.DDATA], ndata_topic=self._t["ndata"],
            next_seq=self._next_seq, ensure_born=self._ensure_born,
        )  # fmt: skip

    # ---- bdSeq and the Will (called in paho's thread before every CONNECT) ------------------------
    def _next_will(self) -> tuple[int, str, bytes]:
        try:
            last = int(self._bd_file.read_text().strip())
            bd = (last + 1) % 256
        except (FileNotFoundError, ValueError):
            bd = 0
        tmp = self._bd_file.with_suffix(".tmp")
        self._bd_file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(str(bd))
        os.replace(tmp, self._bd_file)
        return bd, self._t["ndeath"], encode_death(m.now_ms(), bd_seq=bd)

    # ---- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect in the background and run the session until `stop`."""
        self._state = "connecting"
        self.link.start()
        self._task = asyncio.create_task(self._run(), name=f"edge-node {self.site}/{self.edge}")

    async def stop(self) -> None:
        """Clean shutdown: NDEATH (QoS 1, waited for), then DISCONNECT with the Will reason code."""
        if self._task is None:
            return
        self._stopping = True
        self._events.put_nowait(None)
        await self._task
        self._task = None
        if self._state == "online":
            try:
                self._tick()  # publish what the adapters delivered since the last interval
            except (LinkError, OutboxError, OSError) as exc:
                self._report_error(exc)
        # One NDEATH, never two: the explicit one when the broker acknowledged it (then a plain DISCONNECT that
        # discards the Will), else the Will ("Disconnect with Will Message" in MQTT 5).
        sent = False
        if self._state in ("online", "subscribing", "waiting-host"):
            sent = await self.link.publish(
                self._t["ndeath"], encode_death(m.now_ms(), bd_seq=self._bd_seq), 1
            ).wait(5.0)
            if not sent:
                log.warning(
                    "edge node %s/%s: NDEATH not acknowledged before disconnect; the Will carries it",
                    self.site, self.edge,
                )  # fmt: skip
        await self.link.disconnect(with_will=not sent)
        self.outbox.end_session()
        self._set_state("stopped")

    def _set_state(self, state: str, detail: str = "") -> None:
        if state != self._state:
            self._state = state
            log.info("edge node %s/%s: %s%s", self.site, self.edge, state, f" ({detail})" if detail else "")
        if state == "online":
            self.online.set()
        else:
            self.online.clear()

    async def _run(self) -> None:
        interval = self.sp.publish_interval_ms / 1000.0
        next_tick = time.monotonic() + interval
        while True:
            try:
                try:
                    async with asyncio.timeout(max(0.0, next_tick - time.monotonic())):
                        event = await self._events.get()
                    if event is None:
                        return
                    await self._handle(event)
                except TimeoutError:
                    pass
                now = time.monotonic()
                if now >= next_tick:
                    self._tick()
                    next_tick = max(next_tick + interval, now)
            except (LinkError, OutboxError, OSError) as exc:
                # The session must outlive a failed publish or a disk hiccup: data stays in the outbox.
                self._report_error(exc)

    def _report_error(self, exc: Exception) -> None:
        key = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if key != self._last_error[0] or now - self._last_error[1] > 60.0:
            log.error("edge node %s/%s: %s", self.site, self.edge, key)
            self._last_error = (key, now)

    # ---- events -----------------------------------------------------------------------------------------
    async def _handle(self, event: LinkEvent) -> None:
        if isinstance(event, Connected):
            self.stats.connects += 1
            if self.stats.connects > 1:
                self.stats.reconnects += 1
            self._bd_seq = event.bd_seq
            self._set_state("subscribing", f"connected, bdSeq {event.bd_seq}")
            topics = [(self._t["ncmd"], 1), *((t, 1) for t in self._dev_topics[MessageType.DCMD])]
            if self.acks:
                topics.append((self._ack_topic, 1))
            if self._state_topic:
                topics.append((self._state_topic, 1))
            self._sub_mid = self.link.subscribe(topics)
        elif isinstance(event, Subscribed) and event.mid == self._sub_mid:
            if event.failed:
                log.error("edge node %s/%s: subscriptions refused: %s", self.site, self.edge, event.failed)
            if self._host_online:
                self._birth()
            else:
                self._set_state("waiting-host", f"for STATE online of {self.sp.primary_host}")
        elif isinstance(event, Disconnected | ConnectFailed):
            if self._state != "connecting":
                self._set_state("connecting", f"lost connection: {event.reason}")
            self.outbox.end_session()
            self.pub.reset()
        elif isinstance(event, Message):
            await self._message(event)

    async def _message(self, msg: Message) -> None:
        topic = msg.topic
        if topic == self._ack_topic:
            try:
                ack = decode_ack(msg.payload)
            except ExtensionError as exc:
                log.warning("edge node %s/%s: ignored ack: %s", self.site, self.edge, exc)
                return
            if ack.bd_seq is not None and ack.bd_seq != self._bd_seq:
                log.debug("edge node %s/%s: ignored ack of batch %d from session bdSeq %d (now %d)",
                          self.site, self.edge, ack.batch, ack.bd_seq, self._bd_seq)  # fmt: skip
                return
            self.outbox.ack(ack.batch)
        elif topic == self._t["ncmd"]:
            try:
                decoded = decode(msg.payload)
            except PayloadError as exc:
                log.warning("edge node %s/%s: ignored NCMD: %s", self.site, self.edge, exc)
                return
            if self.on_ncmd is not None and "zhizao/Config/Document" in decoded.names:
                await self.on_ncmd(decoded)  # a signed config push (edge/commands/)
                return
            # By name, or by the alias our NBIRTH gave it (a host may use either).
            by_alias = np.flatnonzero(decoded.has_alias & (decoded.alias == np.uint64(m.REBIRTH_ALIAS)))
            i = decoded.index_of(m.REBIRTH_METRIC)
            i = i if i is not None else (int(by_alias[0]) if len(by_alias) else None)
            if i is not None and decoded.value[i] == 1.0 and self._state == "online":
                log.info("edge node %s/%s: rebirth requested", self.site, self.edge)
                self._birth()
        elif topic in self._dcmd:
            await self._device_command(self._dcmd[topic], msg.payload)
        elif topic == self._state_topic:
            await self._host_state(msg.payload)

    async def _host_state(self, payload: bytes) -> None:
        try:
            online, ts = decode_state(payload)
        except ExtensionError as exc:
            log.warning("edge node %s/%s: ignored STATE: %s", self.site, self.edge, exc)
            return
        if ts < self._host_ts:
            return  # an older STATE than one already seen: ignored (Sparkplug 3.0)
        self._host_ts = ts
        self._host_online = online
        if online:
            if self._state == "waiting-host":
                self._birth()
            elif self._state == "online" and ts > self._born_host_ts:
                # A new host session: it may have missed DATA, so births and a full replay of unacked data.
                self._birth()
        elif self._state == "online":
            log.warning("edge node %s/%s: primary host offline; NDEATH and reconnect", self.site, self.edge)
            sent = await self.link.publish(
                self._t["ndeath"], encode_death(m.now_ms(), bd_seq=self._bd_seq), 1
            ).wait(2.0)
            self.outbox.end_session()
            self._set_state("connecting", "primary host offline")
            await self.link.restart(with_will=not sent)

    async def _device_command(self, device: int, payload: bytes) -> None:
        try:
            decoded = decode(payload, self.index.datatype_by_alias)
        except PayloadError as exc:
            self.stats.rejected_commands += 1
            log.warning("edge node %s/%s: ignored DCMD: %s", self.site, self.edge, exc)
            return
        if self.on_dcmd is not None:
            await self.on_dcmd(device, decoded)
            return
        machine = self.index.devices[device]
        for i in range(decoded.n):
            sig = (
                self.index.signal_of_alias(int(decoded.alias[i]))
                if decoded.has_alias[i]
                else self.index.by_name.get((machine, decoded.names[i]))
            )
            if sig is None or int(self.index.device_of[sig]) != device:
                self.stats.rejected_commands += 1
                log.warning(
                    "edge node %s/%s: DCMD for unknown metric %r on %s",
                    self.site,
                    self.edge,
                    decoded.names[i] or int(decoded.alias[i]),
                    machine,
                )
                continue
            value: float | int | bool | str = decoded.text.get(i, decoded.exact.get(i, float(decoded.value[i])))
            dt = int(self.index.datatype_of[sig])
            if isinstance(value, float) and dt == DataType.Boolean:
                value = value != 0.0
            elif isinstance(value, float) and dt in m.INTEGER_TYPES:
                value = int(value)
            if self._on_command is not None:
                await self._on_command(sig, value)

    # ---- births and deaths ------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % 256
        return self._seq

    def _birth(self) -> None:
        """NBIRTH (seq 0) and a DBIRTH for every live machine; unacked outbox data becomes history to replay."""
        now = m.now_ms()
        self._seq = 0
        self.pub.reset()
        self.outbox.begin_session()
        metrics = m.node_birth_metrics(self._bd_seq, self.outbox.last_batch, self.pub.health(), now)
        self.link.publish(self._t["nbirth"], encode_birth(0, now, metrics))
        self._born.clear()
        for d in range(len(self.index.devices)):
            if d not in self._dead:
                self._device_birth(d, now)
        self.stats.births += 1
        self.stats.messages += 1
        self._born_host_ts = self._host_ts
        self._set_state("online", f"NBIRTH bdSeq {self._bd_seq}")
        if self.on_birth is not None:
            self.on_birth()

    def _device_birth(self, device: int, now: int) -> None:
        payload = encode_birth(
            self._next_seq(), now, m.device_birth_metrics(device, self.index, self.pub.last, now, self.outbox.last_batch)
        )
        self.link.publish(self._dev_topics[MessageType.DBIRTH][device], payload)
        self._born.add(device)
        self.stats.messages += 1

    def device_online(self, machine: str) -> bool:
        """True while `machine` is born (its DBIRTH sent and no DDEATH since)."""
        try:
            return self.index.devices.index(machine) in self._born
        except ValueError:
            return False

    def device_state(self, machine: str, online: bool) -> None:
        """The adapter lost (DDEATH) or regained (DBIRTH) a machine's data source."""
        try:
            device = self.index.devices.index(machine)
        except ValueError:
            return
        if online:
            self._dead.discard(device)
            if self._state == "online" and device not in self._born:
                self._device_birth(device, m.now_ms())
        else:
            self._dead.add(device)
            if self._state == "online" and device in self._born:
                self.pub.publish_live()  # samples taken before the loss go out before its DDEATH
                self.link.publish(
                    self._dev_topics[MessageType.DDEATH][device],
                    encode_death(m.now_ms(), seq=self._next_seq()),
                )
                self._born.discard(device)
                self.stats.messages += 1
            log.info(
                "edge node %s/%s: machine %s %s", self.site, self.edge, machine, "back" if online else "lost"
            )

    def _tick(self) -> None:
        if self._state == "online":
            self.pub.tick()
        self.outbox.maybe_sync()

    def _ensure_born(self, device: int, now: int) -> None:
        if device not in self._born:  # data for a machine reported lost: it is evidently back
            self._dead.discard(device)
            self._device_birth(device, now)

    @property
    def state(self) -> str:
        """connecting, subscribing, waiting-host, online or stopped."""
        return self._state

    @property
    def samples_per_s(self) -> float:
        """Samples appended per second over the last health interval."""
        return self.pub.samples_per_s
