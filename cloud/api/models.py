"""Response models of the API (they document `/docs`); metadata times are ISO 8601 UTC, series times epoch ms."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field

from zhizao.broker.contract.ids import Id
from zhizao.cloud.api.params import JsonIntCheck
from zhizao.cloud.auth import MAX_LIFETIME_S, Role


class Site(BaseModel):
    """A factory of the cluster (Sparkplug group)."""

    site_id: str
    name: str | None
    tz: str
    first_seen: datetime
    last_seen: datetime
    lines: int = Field(description="edge nodes (one agent per line)")
    machines: int


class Line(BaseModel):
    """A line = one edge node (agent) and the machines it serves."""

    site_id: str
    line_id: str
    edge_node_id: str
    name: str | None = Field(default=None, description="display name (from `zhizao cloud seed`)")
    online: bool
    last_birth: datetime | None
    last_death: datetime | None
    machines: list[str]


class SiteDetail(Site):
    """A site with its lines."""

    line_list: list[Line]


class Machine(BaseModel):
    """A machine (Sparkplug device) under an edge node."""

    site_id: str
    machine_id: str = Field(description="unique in the site; every route names the machine by it")
    device_id: str = Field(description="its Sparkplug device id under `edge_node_id`: the machine id, unless another"
                           " edge node of the site had a device of that id first (then `{device}--{edge}`)")
    edge_node_id: str
    line_id: str
    name: str | None = Field(default=None, description="display name (from `zhizao cloud seed`)")
    ideal_rate_per_min: float | None = Field(default=None, description="ideal rate from the seeded scenario")
    online: bool
    last_birth: datetime | None
    last_death: datetime | None


class Tag(BaseModel):
    """A historized signal: a machine metric, or a node metric when machine_id is null."""

    tag_id: int
    site_id: str
    edge_node_id: str
    machine_id: str | None
    name: str
    datatype: int
    unit: str | None
    first_seen: datetime
    last_seen: datetime


class MachineDetail(Machine):
    """A machine with its tags."""

    tags: list[Tag]


class LineDetail(Line):
    """A line with its machines and the edge node's own metrics."""

    machine_list: list[Machine]
    node_tags: list[Tag]


class EdgeNode(BaseModel):
    """Health of one edge agent as last reported over Sparkplug."""

    site_id: str
    edge_node_id: str
    online: bool
    bd_seq: int | None
    last_birth: datetime | None
    last_death: datetime | None
    last_seen: datetime | None
    outbox_depth: int | None
    samples_per_s: float | None
    reconnects: int | None
    last_batch: int | None
    acked_batch: int | None
    outbox_fill: float | None = Field(description="outbox bytes / its disk budget, 0..1 (Health/OutboxFill)")
    outbox_refused_samples: int | None = Field(
        description="samples the agent refused because its outbox was full, since it started "
        "(Health/OutboxRefusedSamples): data lost at the edge")
    commands_refused: int | None = Field(description="NCMD/DCMD the agent refused (Health/CommandsRefused)")
    quarantined_samples: int = Field(
        description="samples of this node the cloud holds in quarantine (refused, re-ingestable: /api/v1/quarantine)")


class LatestValue(BaseModel):
    """The latest live value of one tag."""

    tag_id: int
    site_id: str
    edge_node_id: str
    machine_id: str | None
    name: str
    unit: str | None
    ts: int | None = Field(description="epoch milliseconds, UTC")
    datatype: str = Field(description="the tag's Sparkplug datatype (Double, Int64, String, Text, Bytes, ...)")
    value: int | float | str | list[Any] | dict[str, Any] | None = Field(
        description="typed by the tag's datatype: integers (64-bit exact), numbers, text, DateTime as ISO 8601, "
        "arrays as arrays, Text JSON documents (matrices, structures, LocalizedText {locale, text}) as JSON, "
        "Bytes as base64")
    quality: int | None


class SeriesPoints(BaseModel):
    """Column arrays: `ts` (epoch ms) plus `value`/`quality` (raw) or the requested aggregates (bucketed)."""

    ts: list[int]
    value: list[int | float | str | list[Any] | dict[str, Any] | None] | None = None
    quality: list[int] | None = None
    min: list[float | None] | None = None
    max: list[float | None] | None = None
    avg: list[float | None] | None = None
    last: list[float | None] | None = None
    count: list[int] | None = None


class Series(BaseModel):
    """One page of a tag's history."""

    tag: Tag
    start: int = Field(description="epoch ms, inclusive")
    end: int = Field(description="epoch ms, exclusive")
    bucket_ms: int | None = Field(description="null for raw samples")
    source: str = Field(description="raw, samples_1m or samples_1h")
    points: SeriesPoints
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class Health(BaseModel):
    """Liveness and what the service runs on."""

    status: str
    database: str
    storage: str | None
    ingest: dict[str, float]


class TokenCreate(BaseModel):
    """Body of POST /api/v1/tokens."""

    model_config = {"extra": "forbid"}

    name: str = Field(min_length=1, max_length=100, pattern=r"^[\w .@:/*,+-]{1,100}$")
    role: Role
    sites: list[Id] | None = Field(default=None, min_length=1, description="null = every site (only for all-site admins)")
    expires_in_s: Annotated[int, Field(ge=60, le=MAX_LIFETIME_S), JsonIntCheck] | None = Field(
        default=None, description="lifetime in seconds; null = never expires")


class TokenCreated(BaseModel):
    """A new token; `token` is shown this once and never again."""

    token_id: int
    name: str
    role: str
    sites: list[str] | None
    token: str
    expires_at: datetime | None = None
