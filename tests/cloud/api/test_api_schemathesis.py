"""schemathesis `--checks all` over the API's own OpenAPI, against the app served by uvicorn on a real port with a
real database (the two-site fixture) and a real admin token: 0 failures, in every phase (examples, coverage,
fuzzing, stateful). The case count is printed (`-s` shows it) and must be in the thousands.

Bounded for CI: 30 examples per operation, one worker, a fixed seed (the same cases every run; about 27 s of CPU, 2,198 cases).
`/api/v1/live` is left out: it is a stream that never ends, so each case would only wait for the timeout;
tests/cloud/dashboard/test_live_stream.py and tests/cloud/test_live_hub.py test it. `/api/v1/me/rotate` is
left out because it retires the run's own token (tests/cloud/test_token_expiry.py tests it). The one relaxed
check and its reason are in schemathesis.toml beside this file.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from tests.support.apifixtures import Cluster
from tests.support.spnode import wait_for
from zhizao.broker.embedded import free_port
from zhizao.cloud.api import create_app
from zhizao.cloud.auth import create_token
from zhizao.cloud.settings import CloudSettings

CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture
def served(cluster: Cluster) -> Iterator[str]:
    """The app on 127.0.0.1:<free port> under uvicorn in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(create_app(CloudSettings(database_url=cluster.url)), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="on")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="schemathesis-api", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=30, what="uvicorn serving the API")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def test_schemathesis_checks_all_finds_no_failure(served: str, cluster: Cluster, tmp_path: Path) -> None:
    for k in range(3):  # ids 1..3: what the token routes may revoke or rotate (schemathesis.toml)
        create_token(cluster.url, "viewer", None, f"sacrificial {k}")
    token = create_token(cluster.url, "admin", None, "schemathesis")
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", f"{served}/openapi.json",
         "--checks", "all", "--header", f"Authorization: Bearer {token}", "--max-examples", "30", "--workers", "1",
         "--seed", "1", "--request-timeout", "10", "--exclude-path", "/api/v1/live",
         "--exclude-path", "/api/v1/me/rotate", "--no-color"],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,  # its cache stays out of the repo
    )  # fmt: skip
    out = result.stdout + result.stderr
    summary = re.search(r"(\d+) generated, (.*?)(?:\n|$)", out)
    assert summary is not None, out[-4000:]
    print(f"schemathesis --checks all: {summary.group(0).strip()}")
    assert result.returncode == 0, out[-8000:]
    assert "passed" in summary.group(2) and "fail" not in summary.group(2), summary.group(0)
    cases = int(summary.group(1))
    assert cases >= 1000, f"only {cases} cases generated"
    # Every operation of the OpenAPI but the stream was tested.
    with urllib.request.urlopen(f"{served}/openapi.json", timeout=10) as answer:
        schema = json.load(answer)
    skipped = ("/api/v1/live", "/api/v1/me/rotate")
    operations = sum(len(item) for path, item in schema["paths"].items() if path not in skipped)
    tested = re.search(r"Tested: (\d+)", out)
    assert tested is not None and int(tested.group(1)) == operations, out[-3000:]
    assert "Authentication failed" not in out, out[-3000:]  # the run kept its token to the end
