"""The contract edge and cloud share: ids, the ISA-95 hierarchy, state codes, quality codes, shift calendars."""

from zhizao.broker.contract.calendar import Calendar, CalendarClock, NoShiftPeriod, Shift, StateClasses
from zhizao.broker.contract.hierarchy import LineRef, MachineRef
from zhizao.broker.contract.ids import ID_PATTERN, Id, IdError, is_id, validate_id
from zhizao.broker.contract.quality import QUALITY_BAD, QUALITY_GOOD, QUALITY_STALE
from zhizao.broker.contract.states import CATALOGUE, Category, StateCode, is_state_code

__all__ = [
    "CATALOGUE",
    "ID_PATTERN",
    "QUALITY_BAD",
    "QUALITY_GOOD",
    "QUALITY_STALE",
    "Calendar",
    "CalendarClock",
    "Category",
    "Id",
    "IdError",
    "LineRef",
    "MachineRef",
    "NoShiftPeriod",
    "Shift",
    "StateClasses",
    "StateCode",
    "is_id",
    "is_state_code",
    "validate_id",
]
