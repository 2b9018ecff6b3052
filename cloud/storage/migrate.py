"""Versioned SQL migrations applied at start-up, then the backend setup (TimescaleDB or plain PostgreSQL)."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field, replace
from importlib import resources

import psycopg

from zhizao.cloud.storage import plain, timescale
from zhizao.cloud.storage.db import StorageError, translate_errors

log = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant works; it only has to be the same for every worker applying migrations at once.
_ADVISORY_LOCK_KEY = 0x7A68697A616F  # "zhizao"


@dataclass(frozen=True)
class TimescaleHorizons:
    """Chunking, compression, retention and rollup refresh horizons (PostgreSQL interval strings).

    `use_timescale`: run on TimescaleDB where the extension is created in the database, or can be (the
    server preloads it and the role may create it: then it is created). False keeps plain PostgreSQL.
    """

    use_timescale: bool = True
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
    timescale_preloaded: bool = False  # the server loads it at start, so CREATE EXTENSION can work

    @property
    def kind(self) -> str:
        """Human-readable backend name for start logs and /healthz."""
        if self.timescale:
            return f"TimescaleDB {self.version} on PostgreSQL {self.server_version}"
        return f"PostgreSQL {self.server_version} (plain: BRIN + service-maintained rollups)"


def migration_files() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every `cloud/storage/migrations/NNNN_*.sql`, in order."""
    found: list[tuple[int, str, str]] = []
    for entry in resources.files("zhizao.cloud.storage.migrations").iterdir():
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
    # The preloaded loader defines its settings; shared_preload_libraries itself is hidden from most roles.
    preloaded = conn.execute(
        "SELECT count(*) FROM pg_settings WHERE name = 'timescaledb.disable_load' AND setting = 'off'"
    ).fetchone()
    return StorageInfo(
        timescale=row is not None,
        version=str(row[0]) if row else None,
        server_version=server.split()[0],
        timescale_available=bool(available and available[0]),
        timescale_preloaded=bool(preloaded and preloaded[0]),
    )


def _create_timescale(conn: psycopg.Connection[tuple[object, ...]], info: StorageInfo) -> bool:
    """CREATE EXTENSION timescaledb where the server preloads it; False (and one log line) where it cannot."""
    if not info.timescale_available:
        return False
    if not info.timescale_preloaded:
        # Without the preloaded loader CREATE EXTENSION ends the session (FATAL), so it is not tried.
        log.warning(
            "timescaledb is installed but not in shared_preload_libraries; running on plain PostgreSQL"
        )
        return False
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        log.warning("cannot create the timescaledb extension (%s); running on plain PostgreSQL", exc)
        return False
    log.warning("created the timescaledb extension in this database")
    return True


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
            horizons = horizons or TimescaleHorizons()
            info = detect_storage(conn)
            if horizons.use_timescale and not info.timescale and _create_timescale(conn, info):
                info = detect_storage(conn)
            if info.timescale and horizons.use_timescale:
                timescale.setup(conn, horizons)
            else:
                if timescale.is_converted(conn):
                    raise StorageError(
                        "use_timescale=False, but samples is already a TimescaleDB hypertable in this database;"
                        " use TimescaleDB (use_timescale=True) or a new database"
                    )
                plain.setup(conn)
                info = replace(info, timescale=False, version=None)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [_ADVISORY_LOCK_KEY])
    return replace(info, applied=tuple(applied))
