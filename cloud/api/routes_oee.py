"""OEE routes: `/api/v1/oee`, `/api/v1/losses`, `/api/v1/states`, shift calendars and stop reasons."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["oee"])
