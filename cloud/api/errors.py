"""API errors as JSON that names the field and value at fault; the one place where storage errors become HTTP."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from zhizao.cloud.storage.db import StorageError, StorageUnavailable, map_error

log = logging.getLogger(__name__)

__all__ = ["ApiError", "install_error_handlers", "not_found"]


class ApiError(Exception):
    """An error answer: HTTP status, the field at fault, its value, and a message naming both."""

    def __init__(self, status: int, message: str, field: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.value = value


def bad_request(field: str, value: Any, why: str) -> ApiError:
    """400 for one parameter: `field=value: why`."""
    return ApiError(400, f"{field}={value!r}: {why}", field, value)


def not_found(what: str, value: Any) -> ApiError:
    """404 for an object that does not exist or lies outside the token's sites (indistinguishable on purpose)."""
    return ApiError(404, f"{what} {value!r} not found", what, value)


def _body(status: int, message: str, field: str | None = None, value: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"status": status, "message": message}
    if field is not None:
        error["field"] = field
        error["value"] = _json_safe(value)
    return {"error": error}


def _json_safe(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(_body(exc.status, exc.message, exc.field, exc.value), exc.status, headers=headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    # FastAPI's default answer is a list of pydantic records; ours is one message naming field and value.
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body", "header")]
    field = ".".join(loc) or "request"
    value = _json_safe(first.get("input"))
    message = f"{field}={value!r}: {str(first.get('msg', 'invalid')).removeprefix('Value error, ')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return JSONResponse(_body(400, message, field, value), 400)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(_body(exc.status_code, str(exc.detail)), exc.status_code, headers=exc.headers)


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    err = exc if isinstance(exc, StorageError) else map_error(exc)
    if isinstance(err, StorageUnavailable):
        log.warning("database unavailable during %s %s: %s", request.method, request.url.path, err)
        return JSONResponse(_body(503, "database unavailable; retry later"), 503, headers={"Retry-After": "5"})
    log.error("database error during %s %s: %s", request.method, request.url.path, err)
    return JSONResponse(_body(500, "internal database error"), 500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers (ours, validation, HTTP, and psycopg/pool errors)."""
    import psycopg
    from psycopg_pool import PoolTimeout

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(psycopg.Error, _storage_error)
    app.add_exception_handler(PoolTimeout, _storage_error)
