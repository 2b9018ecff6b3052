"""Fixtures for ingest tests (defined in conftest_ingest.py so the host tests can share them)."""

from conftest_ingest import make_service  # noqa: F401
