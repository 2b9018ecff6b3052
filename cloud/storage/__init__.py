"""Cloud storage: connection pools, versioned migrations, TimescaleDB or plain-PostgreSQL backends."""

from __future__ import annotations

from zhizao.cloud.storage.db import StorageError, StorageUnavailable, make_async_pool, make_pool
from zhizao.cloud.storage.migrate import StorageInfo, TimescaleHorizons, apply_migrations, detect_storage

__all__ = [
    "StorageError",
    "StorageInfo",
    "StorageUnavailable",
    "TimescaleHorizons",
    "apply_migrations",
    "detect_storage",
    "make_async_pool",
    "make_pool",
]
