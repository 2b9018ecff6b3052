"""Versioned SQL migrations applied at start-up, then the backend setup (TimescaleDB or plain PostgreSQL)."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from importlib import resources

import psycopg

from cloud.storage import plain, timescale
from cloud.storage.db import StorageError, translate_errors

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same for every worker applying migrations at once.
_ADVISORY_LOCK_KEY = 0x7A68697A616F  # "zhizao"


@dataclass(frozen=True)
class TimescaleHorizons:
    """Chunking, compression, retention and rollup refresh horizons (PostgreSQL interval strings)."""

    chunk_interval: str = "1 day"
    compress_after: str | None = "7 days"
    retain_raw_for: str | None = "365 days"
    retain_1m_for: str | None = None
    retain_1h_for: str | None = None
    refresh_1m_every: str = "1 minute"
    refresh_1m_lookback: str = "2 hours"
    refresh_1h_every: str = "30 minutes"
    refresh_1h_lookback: str = "3 days"


@dataclass(frozen=True)
class StorageInfo:
    """What the database turned out to be, and which migrations this call applied."""

    timescale: bool
    version: str | None  # TimescaleDB extension version, None on plain PostgreSQL
    server_version: str
    applied: tuple[str, ...] = field(default=())
    timescale_available: bool = False  # installable but not created in this database

    @property
    def kind(self) -> str:
        """Human-readable backend name for start logs and /healthz."""
        if self.timescale:
            return f"TimescaleDB {self.version} on PostgreSQL {self.server_version}"
        return f"PostgreSQL {self.server_version} (plain: BRIN + service-maintained rollups)"


def migration_files() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every `cloud/storage/migrations/NNNN_*.sql`, in order."""
    found: list[tuple[int, str, str]] = []
    for entry in resources.files("cloud.storage.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(versions) != len(set(versions)):
        raise StorageError(f"two migrations share a version number: {[n for _, n, _ in found]}")
    return found


def detect_storage(conn: psycopg.Connection[tuple[object, ...]]) -> StorageInfo:
    """Detect TimescaleDB (installed in this database, or only available) and the server version."""
    server = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    available = conn.execute(
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return StorageInfo(
        timescale=row is not None,
        version=str(row[0]) if row else None,
        server_version=server.split()[0],
        timescale_available=bool(available and available[0]),
    )


def apply_migrations(conninfo: str, *, horizons: TimescaleHorizons | None = None) -> StorageInfo:
    """Apply every pending migration in order (idempotent, safe with concurrent workers), then set up storage."""
    applied: list[str] = []
    with translate_errors(), psycopg.connect(conninfo, autocommit=True) as conn:
        # Session-level lock: several workers starting at once apply each file exactly once.
        conn.execute("SELECT pg_advisory_lock(%s)", [_ADVISORY_LOCK_KEY])
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {
                int(v): (str(n), str(c))
                for v, n, c in conn.execute("SELECT version, name, checksum FROM schema_migrations")
            }
            for version, name, sql in migration_files():
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                if version in done:
                    if done[version][1] != checksum:
                        # Editing an applied migration never re-runs it; say so once at start.
                        log.warning("migration %s changed after it was applied; not re-applied", name)
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        [version, name, checksum],
                    )
                applied.append(name)
                log.info("applied migration %s", name)
            info = detect_storage(conn)
            if info.timescale:
                timescale.setup(conn, horizons or TimescaleHorizons())
            else:
                if info.timescale_available:
                    log.info("timescaledb is available but not created here; run CREATE EXTENSION to use it")
                plain.setup(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [_ADVISORY_LOCK_KEY])
    return StorageInfo(
        timescale=info.timescale,
        version=info.version,
        server_version=info.server_version,
        applied=tuple(applied),
        timescale_available=info.timescale_available,
    )
