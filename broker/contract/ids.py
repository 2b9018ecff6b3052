"""Ids of the cluster model (DESIGN.md section 2): lowercase `[a-z0-9-]`, 1-64 characters, unique at their level."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

__all__ = ["ID_PATTERN", "ID_RULE", "Id", "IdError", "is_id", "validate_id"]

ID_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
"""The one id rule: 1-64 lowercase letters, digits and '-', no leading or trailing '-'."""
ID_RULE = "lowercase letters, digits and '-', 1-64 chars, no leading or trailing '-'"
_ID = re.compile(ID_PATTERN)


class IdError(ValueError):
    """An id that breaks the id rule; the message names the field and the value."""

    def __init__(self, kind: str, value: object, expected: str = f"a valid id ({ID_RULE})") -> None:
        self.kind = kind
        self.value = value
        super().__init__(f"{kind}: {value!r} is not {expected}")


def is_id(value: object) -> bool:
    """True when `value` is a string that follows the id rule."""
    return isinstance(value, str) and _ID.match(value) is not None


def validate_id(kind: str, value: object) -> str:
    """Return `value` if it is a valid id, else raise IdError naming `kind` (the field) and the value."""
    if not is_id(value):
        raise IdError(kind, value)
    assert isinstance(value, str)
    return value


def _check(value: str) -> str:
    if not is_id(value):
        # pydantic puts the field's location and the input next to this message.
        raise ValueError(f"not a valid id ({ID_RULE})")
    return value


Id = Annotated[str, AfterValidator(_check), WithJsonSchema({"type": "string", "pattern": ID_PATTERN})]
"""A pydantic field type for ids: validated by the id rule, documented with its pattern."""
