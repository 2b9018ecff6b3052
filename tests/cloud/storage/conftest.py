"""Storage tests share the ingest helpers and fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ingest"))

from conftest_ingest import make_service  # noqa: F401
