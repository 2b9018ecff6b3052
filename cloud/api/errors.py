"""API errors as JSON that names the field and value at fault; the one place where storage errors become HTTP."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from zhizao.cloud.storage.db import StorageError, StorageUnavailable, map_error

log = logging.getLogger(__name__)

__all__ = ["ApiError", "ErrorBody", "allowed_methods", "document_errors", "install_error_handlers", "not_found"]


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


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = exc.headers
    if exc.status_code == 405:
        # Starlette names only the methods of the first route on the path; a path served by several routes
        # (GET and PUT defined apart) must list them all.
        allowed = allowed_methods(request.app, request.url.path.removeprefix(request.scope.get("root_path", "")))
        if allowed:
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
    return JSONResponse(_body(exc.status_code, str(exc.detail)), exc.status_code, headers=headers)


def allowed_methods(app: Any, path: str) -> list[str]:
    """Every method the app's OpenAPI documents for the path template matching `path` (HEAD with GET), sorted;
    [] when no documented path matches (then Starlette's own Allow stands)."""
    table: list[tuple[re.Pattern[str], frozenset[str]]] | None = getattr(app.state, "allow_table", None)
    if table is None:
        table = []
        for template, item in app.openapi().get("paths", {}).items():
            regex = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$")
            documented = {m.upper() for m in item if m in ("get", "put", "post", "delete", "patch")}
            table.append((regex, frozenset(documented | ({"HEAD"} if "GET" in documented else set()))))
        app.state.allow_table = table
    # A path written out in full (/orders/import) is that resource alone, not also /orders/{order_id}.
    literal = [served for regex, served in table if "[^/]+" not in regex.pattern and regex.match(path)]
    allowed: set[str] = set()
    for served in literal or [served for regex, served in table if regex.match(path)]:
        allowed |= served
    return sorted(allowed)


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    # A value the database cannot take (a NUL in a text, an integer beyond its column): the request is at
    # fault, not the service. Parameters are checked before (cloud/api/inputs.py); this catches body fields.
    log.info("value refused by the database during %s %s: %s", request.method, request.url.path, exc)
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return JSONResponse(_body(400, f"a value the database cannot store: {first}", "request", None), 400)


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, StorageError) and isinstance(exc.__cause__, psycopg_data_error()):
        return await _data_error(request, exc.__cause__)
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
    app.add_exception_handler(psycopg.DataError, _data_error)
    app.add_exception_handler(PoolTimeout, _storage_error)


def psycopg_data_error() -> type[Exception]:
    """psycopg's DataError (SQLSTATE class 22, and values psycopg itself cannot send, such as a NUL)."""
    import psycopg

    return psycopg.DataError


class ErrorDetail(BaseModel):
    """What went wrong: the HTTP status, a message naming the field and value, and both on their own."""

    status: int
    message: str
    field: str | None = None
    value: Any = None


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    error: ErrorDetail


# Statuses any route may answer besides its own, and when (added to every operation of the OpenAPI).
_ERROR_DESCRIPTIONS = {
    "400": "a bad parameter or body field (named in `field`, with its `value`)",
    "401": "missing, unknown, expired or revoked bearer token",
    "403": "the token's role is too low for this route",
    "404": "no such object, or it lies outside the token's sites (indistinguishable on purpose)",
    "409": "the object's state does not allow this change (already exists, already decided, wrong state)",
    "413": "request body over the size limit",
    "429": "too many requests of this kind; retry after `Retry-After` seconds",
    "503": "the database does not answer; retry after `Retry-After` seconds",
}


# What cloud/api/inputs.py refuses in a query or path parameter (a NUL or another control character), as a
# pattern for the OpenAPI of string parameters that have none of their own.
PARAM_TEXT_PATTERN = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f]*$"


def _no_control_characters(schema: dict[str, Any]) -> None:
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string" and not {"pattern", "format", "enum", "const"} & set(branch):
            branch["pattern"] = PARAM_TEXT_PATTERN


def document_errors(app: FastAPI) -> None:
    """Make the app's OpenAPI list every status its routes answer, for routes added later too.

    FastAPI documents 422 with its own shape; this API answers 400 with `ErrorBody`. Every operation gets 400,
    404 and 503; those behind a bearer token 401 and 403; those with a body 413; those that change something
    (POST, PUT, PATCH, DELETE) 409 and 429. Done when the schema is
    first built, so it covers every router included in the app by then."""
    build = app.openapi  # FastAPI's own builder (it caches its result in app.openapi_schema)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorBody"] = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(components["ErrorBody"].pop("$defs", {}))
        for item in schema.get("paths", {}).values():
            for method, op in item.items():
                if method not in ("get", "put", "post", "delete", "patch") or not isinstance(op, dict):
                    continue
                for param in op.get("parameters", ()):
                    if param.get("in") in ("query", "path"):
                        _no_control_characters(param.get("schema", {}))
                responses = op.setdefault("responses", {})
                responses.pop("422", None)
                codes = ["400", "404", "503"]
                if op.get("security"):
                    codes += ["401", "403"]
                if "requestBody" in op:
                    codes.append("413")
                if method != "get":
                    codes += ["409", "429"]
                for code in sorted(codes):
                    responses.setdefault(code, {
                        "description": _ERROR_DESCRIPTIONS[code],
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                    })  # fmt: skip
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
