"""Connection pools and the one place where psycopg errors become storage errors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

log = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """A database operation failed for a reason that retrying will not fix (bad SQL, constraint, data)."""


class StorageUnavailable(StorageError):
    """The database cannot be reached or dropped the connection; retrying later may succeed."""


def make_pool(conninfo: str, *, min_size: int = 1, max_size: int = 8, name: str = "zhizao") -> ConnectionPool:
    """A sync pool that checks each connection before handing it out (survives database restarts)."""
    # check_connection: without it the first use after a DB restart fails (reliability.md, finding 7).
    return ConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=True,
        check=ConnectionPool.check_connection,
        timeout=10.0,
        reconnect_timeout=float("inf"),
    )


def make_async_pool(
    conninfo: str, *, min_size: int = 1, max_size: int = 8, name: str = "zhizao-async"
) -> AsyncConnectionPool:
    """An async pool for the API; open it with `await pool.open()` inside the event loop."""
    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
        check=AsyncConnectionPool.check_connection,
        timeout=10.0,
        reconnect_timeout=float("inf"),
    )


def map_error(exc: BaseException) -> StorageError:
    """Translate a psycopg / pool exception into ours (transient vs permanent)."""
    if isinstance(exc, psycopg.OperationalError | PoolTimeout | psycopg.InterfaceError | OSError):
        return StorageUnavailable(f"database unavailable: {exc}")
    return StorageError(f"database error: {exc}")


@contextmanager
def translate_errors() -> Iterator[None]:
    """Context manager: psycopg errors raised inside leave as StorageError / StorageUnavailable."""
    try:
        yield
    except StorageError:
        raise
    except (psycopg.Error, PoolTimeout, OSError) as exc:
        raise map_error(exc) from exc
