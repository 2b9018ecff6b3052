"""Prometheus metrics of the ingest service (default registry, shared by every instance in a process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("zhizao_ingest_messages", "Sparkplug messages received, by type", ["type"])
SAMPLES_RECEIVED = Counter("zhizao_ingest_samples_received", "samples decoded from DATA messages")
SAMPLES_STORED = Counter("zhizao_ingest_samples_stored", "samples newly stored (duplicates excluded)")
DEAD_LETTERS = Counter("zhizao_ingest_dead_letters", "bad input sent to dead_letters, by reason", ["reason"])
QUARANTINED = Counter(
    "zhizao_ingest_quarantined", "refused samples of known tags kept in quarantine, by reason", ["reason"]
)
DROPPED = Counter("zhizao_ingest_dropped", "messages not processed (will be replayed), by reason", ["reason"])
BATCHES = Counter("zhizao_ingest_batches", "DB batches committed")
DB_ERRORS = Counter("zhizao_ingest_db_errors", "failed DB batch attempts, by kind", ["kind"])
ACKS = Counter("zhizao_ingest_acks", "delivery acks published")
REBIRTHS = Counter("zhizao_host_rebirth_requests", "Rebirth NCMDs sent, by reason", ["reason"])
QUEUE_BYTES = Gauge("zhizao_ingest_queue_bytes", "payload bytes waiting to be processed")
BATCH_SECONDS = Histogram(
    "zhizao_ingest_batch_seconds",
    "time to write and commit one DB batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
