"""Durable on-disk store-and-forward of sample blocks (append before publish, release on ack)."""

from zhizao.edge.outbox.store import BATCH_RESERVE, Outbox, OutboxError, OutboxFullError, read_outbox

__all__ = ["BATCH_RESERVE", "Outbox", "OutboxError", "OutboxFullError", "read_outbox"]
