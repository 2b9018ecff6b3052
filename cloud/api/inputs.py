"""Request hygiene for every route, present and future: applied once in the app factory, not per route.

- `QueryHygiene` (ASGI middleware): a NUL byte (which no PostgreSQL text can hold) or a control character in a
  query parameter's name or value answers 400 naming the parameter.
- `check_path_params` (an app-wide dependency): the same 400 for a path parameter.

Without these, a NUL reached the database and came back as a 500. (Empty times, `from=`, are read as unset by
`params.TimeQuery`.)
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from zhizao.cloud.api.errors import bad_request

__all__ = ["QueryHygiene", "bad_character", "check_path_params"]

# C0 controls but tab, line feed and carriage return, and DEL: never part of an id, a name or a time.
_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def bad_character(value: str) -> str | None:
    """Why `value` cannot be a parameter (a NUL byte, a control character), or None when it can."""
    m = _BAD.search(value)
    if m is None:
        return None
    what = "a NUL byte" if m.group() == "\x00" else f"the control character U+{ord(m.group()):04X}"
    return f"contains {what} at position {m.start()}"


class QueryHygiene:
    """ASGI middleware: 400 for a NUL or control character in a query parameter."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw: bytes = scope.get("query_string", b"") if scope["type"] == "http" else b""
        if not raw:
            await self.app(scope, receive, send)
            return
        # Starlette reads the query string the same way (latin-1 bytes, percent-decoded as UTF-8).
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
        for name, value in pairs:
            why = bad_character(name) or bad_character(value)
            if why is not None:
                await _reject(send, name, value, why)
                return
        await self.app(scope, receive, send)


async def _reject(send: Send, name: str, value: str, why: str) -> None:
    err = bad_request(name, value, why)
    body = json.dumps({"error": {"status": 400, "message": err.message, "field": name, "value": value}})
    await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body.encode()})


async def check_path_params(request: Request) -> None:
    """400 naming the path parameter that holds a NUL byte or a control character (before any other check)."""
    for name, value in request.path_params.items():
        why = bad_character(str(value))
        if why is not None:
            raise bad_request(name, value, why)
