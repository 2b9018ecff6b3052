"""The cloud query API (FastAPI): asset tree, series, latest values, edge health, tokens."""

from __future__ import annotations

from zhizao.cloud.api.app import create_app

__all__ = ["create_app"]
