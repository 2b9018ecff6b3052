"""The demo's private PostgreSQL: starts from the wheel (as root here), stores, stops, restarts with the data kept."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from zhizao.cloud.storage import apply_migrations
from zhizao.cloud.storage.embedded import EmbeddedPostgres


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory the unprivileged server user can reach (pytest's tmp_path is root-only under root)."""
    path = Path(tempfile.mkdtemp(prefix="zhizao-pg-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_start_store_stop_restart(data_dir: Path) -> None:
    pg = EmbeddedPostgres(data_dir)
    url = pg.start()
    try:
        assert url.startswith("postgresql://zhizao:") and "@127.0.0.1:" in url
        info = apply_migrations(url)
        assert "0002_api.sql" in info.applied and not info.timescale
        with psycopg.connect(url) as conn:
            conn.execute("INSERT INTO sites (site_id, name) VALUES ('kept', 'survives a restart')")
            if os.geteuid() == 0:
                # Under root the server runs as the unprivileged service user that owns the data.
                owner = conn.execute("SELECT usename FROM pg_stat_activity WHERE pid = pg_backend_pid()").fetchone()
                assert owner == ("zhizao",)
    finally:
        pg.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
    pg.stop()  # idempotent

    again = EmbeddedPostgres(data_dir)
    url2 = again.start()
    try:
        with psycopg.connect(url2) as conn:
            assert conn.execute("SELECT name FROM sites WHERE site_id = 'kept'").fetchone() == ("survives a restart",)
        assert apply_migrations(url2).applied == ()
    finally:
        again.stop()
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    assert oct((data_dir / "postgres.password").stat().st_mode & 0o777) == "0o600"


def test_a_server_left_running_is_adopted(data_dir: Path) -> None:
    first = EmbeddedPostgres(data_dir)
    url = first.start()
    try:
        second = EmbeddedPostgres(data_dir)  # e.g. a demo that crashed without stopping its database
        assert second.start() == url
    finally:
        first.stop()




def test_a_closed_parent_folder_is_named(data_dir: Path) -> None:
    import pwd

    from zhizao.cloud.storage.embedded import EmbeddedPostgresError, _check_traversable

    nobody = pwd.getpwnam("nobody")
    closed = data_dir / "closed"
    (closed / "data").mkdir(parents=True)
    closed.chmod(0o700)
    with pytest.raises(EmbeddedPostgresError, match=rf"{closed} is closed to user 'nobody'.*chmod o\+x {closed}"):
        _check_traversable(closed / "data" / "postgres", nobody)
    closed.chmod(0o711)
    _check_traversable(closed / "data" / "postgres", nobody)
