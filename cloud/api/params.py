"""Parameters shared by every route: ids follow the contract's one id rule, so every route answers a bad id alike.

A bad id is a 400 naming the parameter and the value (`site='Site_A': not a valid id (...)`), whichever route.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import BeforeValidator, WithJsonSchema

from zhizao.broker.contract.ids import Id

__all__ = ["EmptyIsUnset", "JsonInt", "JsonIntCheck", "LineId", "MachineId", "SiteId", "SiteQuery", "TimeQuery", "TimeText"]

SiteId = Annotated[Id, Path(description="site id (Sparkplug group_id)")]
LineId = Annotated[Id, Path(description="line id = edge node id (Sparkplug edge_node_id)")]
MachineId = Annotated[Id, Path(description="machine id (Sparkplug device_id)")]
SiteQuery = Annotated[Id, Query(description="site id (Sparkplug group_id)")]
"""A required `site` query parameter; optional id query parameters are `Annotated[Id | None, Query()]`."""


# Epoch milliseconds a datetime can hold on either side of UTC (0001-01-02 .. 9999-12-30).
EPOCH_MS_MIN, EPOCH_MS_MAX = -62_135_510_400_000, 253_402_128_000_000
_EPOCH_MS = re.compile(r"-?\d{1,15}")


def _time_text(value: object) -> str | None:
    """'' -> None (not given); epoch ms in range, or ISO 8601 / RFC 3339 with a zone -> the text; else ValueError."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if _EPOCH_MS.fullmatch(text):
        if not EPOCH_MS_MIN <= int(text) <= EPOCH_MS_MAX:
            raise ValueError(f"epoch milliseconds must be {EPOCH_MS_MIN}..{EPOCH_MS_MAX}")
        return text
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not a time; give epoch milliseconds or ISO 8601 with a zone") from None
    if parsed.tzinfo is None:
        raise ValueError("ISO 8601 time without a zone; add Z or +hh:mm")
    return text


TimeQuery = Annotated[
    str | None,
    BeforeValidator(_time_text),
    WithJsonSchema({"anyOf": [
        {"type": "integer", "minimum": EPOCH_MS_MIN, "maximum": EPOCH_MS_MAX, "description": "epoch milliseconds"},
        {"type": "string", "format": "date-time", "description": "RFC 3339 / ISO 8601 with a zone"},
        {"type": "string", "maxLength": 0, "description": "empty: not given"},
    ]}),
]  # fmt: skip
"""An optional time query parameter (`from`, `to`, `start`, `end`): epoch ms or ISO 8601 with a zone, checked
here (400 naming the parameter), documented as such; `from=` is the same as no `from`. Use as
`Annotated[TimeQuery, Query(alias="from")] = None`; turn it into a datetime with `cloud.api.series.parse_time`."""


def _required_time(value: object) -> str:
    text = _time_text(value)
    if text is None:
        raise ValueError("a time is required; give epoch milliseconds or ISO 8601 with a zone")
    return text


TimeText = Annotated[
    str,
    BeforeValidator(_required_time),
    WithJsonSchema({"anyOf": [
        {"type": "integer", "minimum": EPOCH_MS_MIN, "maximum": EPOCH_MS_MAX, "description": "epoch milliseconds"},
        {"type": "string", "format": "date-time", "description": "RFC 3339 / ISO 8601 with a zone"},
    ]}),
]  # fmt: skip
"""A required time in a body or query (epoch ms or ISO 8601 with a zone), checked and documented like TimeQuery."""


def _empty_is_unset(value: object) -> object:
    return None if value == "" else value


EmptyIsUnset = BeforeValidator(_empty_is_unset)
"""For an optional query parameter: `name=` is the same as not giving `name`."""


def _json_int(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a number is needed, not true or false")
    if isinstance(value, float) and value.is_integer():
        return int(value)  # JSON Schema counts 300.0 as an integer
    return value


JsonIntCheck = BeforeValidator(_json_int)
"""For integer body fields of strict models: 300 and 300.0 pass, true/false and 300.5 do not. Put bounds before
it, so the OpenAPI shows them: `Annotated[int, Field(ge=1), JsonIntCheck]`."""
JsonInt = Annotated[int, JsonIntCheck]
"""An integer body field without bounds (see JsonIntCheck)."""
