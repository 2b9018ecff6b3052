"""The operators' dashboard, served by the cloud service: static pages, no CDN, English and Simplified Chinese."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["dashboard"])
