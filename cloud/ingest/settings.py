"""Ingest settings: batch bounds, validation limits, Sparkplug host timings, scale-out switches."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from zhizao.cloud.storage.migrate import TimescaleHorizons


class IngestSettings(BaseModel):
    """Tunables of `IngestService`; the defaults suit one process on a small machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_max_samples: int = Field(default=50_000, ge=1, description="cut a DB batch at this many samples")
    batch_max_ms: int = Field(default=200, ge=1, description="... or when its first sample waited this long")
    max_payload_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="larger payloads are dead letters")
    max_future_s: float = Field(default=300.0, ge=0, description="samples further in the future are dead letters")
    allow_nan: bool = Field(default=False, description="store NaN/Inf values instead of dead-lettering them")
    allowed_sites: frozenset[str] | None = Field(default=None, description="site allow-list; None accepts any group")
    dead_letter_rows_per_s: float = Field(
        default=200.0, gt=0, description="dead letters stored per second at most (all are counted)"
    )
    reorder_timeout_ms: int = Field(default=2_000, ge=0, description="a seq gap older than this triggers a rebirth")
    rebirth_min_interval_ms: int = Field(default=5_000, ge=0, description="minimum ms between rebirth requests to one node")
    acks: bool = Field(default=True, description="publish zhizao delivery acks after each commit")
    shared_subscription: bool = Field(default=False, description="split DATA over workers with $share subscriptions")
    sites: tuple[str, ...] = Field(default=(), description="groups this worker subscribes to (empty: all)")
    mqtt_protocol: Literal["auto", "5", "3.1.1"] = "auto"
    queue_max_bytes: int = Field(default=128 * 1024 * 1024, ge=1024, description="receive-queue budget (bytes)")
    pipeline_depth: int = Field(default=2, ge=1, description="batches waiting for the DB writers")
    optimistic_insert: bool = Field(
        default=True, description="live-only batches try a plain INSERT first (ON CONFLICT on any conflict)"
    )
    writers: int = Field(default=2, ge=1, le=16, description="DB writer threads (connections) committing at once")
    db_retry_initial_s: float = Field(default=0.2, gt=0)
    db_retry_max_s: float = Field(default=5.0, gt=0)
    pool_max_size: int = Field(default=6, ge=3, description="writers + processor + rollups need a connection each")
    horizons: TimescaleHorizons = Field(default_factory=TimescaleHorizons)
