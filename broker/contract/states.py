"""The state-code catalogue (DESIGN.md section 4): UMH-compatible ranges of 10000, names and default categories.

A code `base..base+9999` is a sub-code of `base`. Which codes a site counts as availability loss, performance
loss or planned time is configuration (`calendar.StateClasses`); `Category` is the default reading, and the
names and order are those of `zhizao.analytics.Category` (a test holds the two together).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator

__all__ = [
    "CATALOGUE",
    "FIRST_STOP_REASON",
    "MAX_STATE_CODE",
    "MIN_STATE_CODE",
    "NO_ORDER",
    "NO_SHIFT",
    "PREVENTIVE_MAINTENANCE",
    "RUNNING",
    "SLOWER",
    "STOP_CATEGORIES",
    "UNKNOWN",
    "UNSPECIFIED_STOP",
    "Category",
    "StateCode",
    "StateCodeError",
    "StopCode",
    "base_of",
    "category_of",
    "is_state_code",
    "is_stop_code",
    "is_stop_reason",
    "state_name",
    "sub_of",
    "validate_stop_code",
]


class Category(StrEnum):
    """What a state's time counts as by default; the order is the column order of the OEE results."""

    RUNNING = "running"
    REDUCED_SPEED = "reduced_speed"
    MICROSTOP = "microstop"
    FAILURE = "failure"
    SETUP = "setup"
    MATERIAL = "material"
    OPERATOR = "operator"
    UNSPECIFIED = "unspecified"
    UNKNOWN = "unknown"
    PLANNED = "planned"


STOP_CATEGORIES = frozenset(
    {Category.FAILURE, Category.SETUP, Category.MATERIAL, Category.OPERATOR, Category.UNSPECIFIED}
)
"""The categories of unplanned stops: their time is cut from run time (availability loss)."""


@dataclass(frozen=True)
class StateCode:
    """A base code: English and Chinese names, default category, and its category when a site counts it as a stop."""

    code: int
    name: str
    name_zh: str
    category: Category
    as_stop: Category


def _entry(code: int, name: str, name_zh: str, category: Category, as_stop: Category | None = None) -> StateCode:
    stop = as_stop or (category if category in STOP_CATEGORIES else Category.UNSPECIFIED)
    return StateCode(code, name, name_zh, category, stop)


C = Category
CATALOGUE: dict[int, StateCode] = {s.code: s for s in (
    _entry(10000, "running at full speed", "全速运行", C.RUNNING),
    _entry(20000, "running slower", "降速运行", C.REDUCED_SPEED),
    _entry(30000, "unknown", "未知", C.UNKNOWN),
    _entry(40000, "unspecified stop", "未说明停机", C.UNSPECIFIED),
    _entry(50000, "microstop", "短暂停机", C.MICROSTOP),
    _entry(60000, "inlet jam", "进料堵塞", C.MATERIAL),
    _entry(70000, "outlet jam", "出料堵塞", C.MATERIAL),
    _entry(80000, "congestion", "拥堵", C.MATERIAL),
    _entry(90000, "material issue", "物料问题", C.MATERIAL),
    _entry(100000, "changeover", "换型", C.SETUP),
    _entry(110000, "cleaning", "清洁", C.SETUP),
    _entry(120000, "emptying", "清空", C.SETUP),
    _entry(130000, "setup", "调机", C.SETUP),
    _entry(140000, "operator absent", "操作员不在", C.OPERATOR),
    _entry(150000, "break", "休息", C.PLANNED, C.OPERATOR),
    _entry(160000, "no shift", "无班次", C.PLANNED),
    _entry(170000, "no order", "无订单", C.PLANNED),
    _entry(180000, "equipment failure", "设备故障", C.FAILURE),
    _entry(190000, "external failure", "外部故障", C.FAILURE),
    _entry(200000, "interference", "干扰", C.FAILURE),
    _entry(210000, "preventive maintenance", "预防性维护", C.PLANNED, C.FAILURE),
    _entry(220000, "technical other", "其他技术停机", C.FAILURE),
)}  # fmt: skip
"""Every base code in code order."""
del C

RUNNING, SLOWER, UNKNOWN, UNSPECIFIED_STOP = 10000, 20000, 30000, 40000
NO_SHIFT, NO_ORDER, PREVENTIVE_MAINTENANCE = 160000, 170000, 210000
FIRST_STOP_REASON = 50000
"""Codes from here on are stop reasons an operator may give; below are running, unknown and the unspecified stop."""
MIN_STATE_CODE = 10000
MAX_STATE_CODE = 230000
"""Exclusive upper bound: codes are 10000..229999."""


class StateCodeError(ValueError):
    """A number that is not the kind of state code a field needs; the message names the field and value."""


def base_of(code: int) -> int:
    """The base code of a (sub-)code: 180001 -> 180000."""
    return code // 10000 * 10000


def sub_of(code: int) -> int:
    """The sub-code part of a code: 180001 -> 1."""
    return code % 10000


def is_state_code(code: float) -> bool:
    """True for an integer state code 10000..229999."""
    return bool(MIN_STATE_CODE <= code < MAX_STATE_CODE and float(code).is_integer())


def is_stop_code(code: int) -> bool:
    """True for a stop code (40000..229999): the unspecified stop and every reason."""
    return UNSPECIFIED_STOP <= code < MAX_STATE_CODE


def is_stop_reason(code: int) -> bool:
    """True for a stop reason an operator may give (50000..229999)."""
    return FIRST_STOP_REASON <= code < MAX_STATE_CODE


def validate_stop_code(value: int) -> int:
    """Return `value` if it is a stop code (40000..229999), else raise StateCodeError naming the value."""
    if not is_stop_code(value):
        raise StateCodeError(f"{value} is not a stop code (40000..229999, DESIGN.md section 4)")
    return value


StopCode = Annotated[int, AfterValidator(validate_stop_code)]
"""A pydantic field type for stop codes (breaks, no-shift periods, failure and changeover codes)."""


def state_name(code: int) -> str:
    """The catalogue name of a code's base ("unknown" outside the catalogue)."""
    entry = CATALOGUE.get(base_of(code))
    return entry.name if entry is not None else "unknown"


def category_of(code: int) -> Category:
    """The default category of a code (UNKNOWN outside the catalogue)."""
    entry = CATALOGUE.get(base_of(code))
    return entry.category if entry is not None else Category.UNKNOWN
