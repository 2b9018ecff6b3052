"""The live stream: state changes and OEE updates for the token's sites, pushed as they happen."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["live"])
