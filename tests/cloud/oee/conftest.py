"""OEE test fixtures: the fleet database and a cloud service (API + OEE service, no ingest) over it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.oeefixtures import Running, make_fleet
from zhizao.cloud.auth import create_token
from zhizao.cloud.service import CloudService
from zhizao.cloud.settings import CloudSettings


@pytest.fixture
def running(fresh_database: str) -> Iterator[Running]:
    """The fleet in a fresh database, the cloud service with its OEE service, an admin client."""
    tags = make_fleet(fresh_database)
    service = CloudService(CloudSettings(database_url=fresh_database, api_port=0), ingest=False, warm_up=False)
    url = service.start_in_thread()
    token = create_token(fresh_database, "admin", "*", "oee-admin")
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        yield Running(url, fresh_database, service, tags, client)
    finally:
        client.close()
        service.stop()
