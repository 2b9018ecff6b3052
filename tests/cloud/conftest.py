"""Fixtures for ingest tests: a running IngestService on a fresh database and the shared broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from zhizao.cloud.ingest.service import IngestService
from zhizao.cloud.ingest.settings import IngestSettings


@pytest.fixture
def make_service(fresh_database: str, mqtt_url: str, unique_id: str) -> Iterator[Callable[..., IngestService]]:
    """Factory: start an IngestService (host id unique per test) with optional settings overrides."""
    started: list[IngestService] = []

    def make(**overrides: object) -> IngestService:
        settings = IngestSettings(**{"batch_max_ms": 50, "sites": (unique_id,), **overrides})  # type: ignore[arg-type]
        svc = IngestService(fresh_database, mqtt_url, host_id=f"host-{unique_id}", settings=settings)
        svc.start()
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.stop()
