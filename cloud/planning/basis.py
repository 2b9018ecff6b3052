"""What a plan rests on: lines that cannot produce for a while, and the fingerprint of capacity (lines down,
planned stops ahead, calendar versions) a plan stores and the re-plan watcher compares with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Disruption", "Fingerprint"]


@dataclass(frozen=True)
class Disruption:
    """A line that cannot produce in [start, end) (a failure, a long stop, a declared outage)."""

    site: str
    line: str
    start: datetime
    end: datetime
    why: str


@dataclass(frozen=True)
class Fingerprint:
    """What capacity rests on: lines down, planned stops per site, calendar versions per site."""

    down: frozenset[tuple[str, str]]
    stops: frozenset[tuple[str, str, str]]  # (site, start, end)
    calendars: frozenset[tuple[str, str]]  # (site, updated_at)

    def news(self, base: Fingerprint) -> list[tuple[str, str | None, str]]:
        """What this fingerprint has that `base` had not: (site, line or None for the whole site, in words)."""
        out: list[tuple[str, str | None, str]] = [(s, ln, f"{s}/{ln} down") for s, ln in sorted(self.down - base.down)]
        out += [(s, None, f"planned stop at {s} {a}..{b}") for s, a, b in sorted(self.stops - base.stops)]
        out += [(s, None, f"calendar of {s} changed") for s in sorted({s for s, _ in self.calendars - base.calendars})]
        return out

    def to_json(self) -> dict[str, Any]:
        return {"down": sorted(self.down), "stops": sorted(self.stops), "calendars": sorted(self.calendars)}

    @classmethod
    def of_json(cls, data: dict[str, Any]) -> Fingerprint:
        return cls(frozenset(tuple(x) for x in data.get("down", [])),
                   frozenset(tuple(x) for x in data.get("stops", [])),
                   frozenset(tuple(x) for x in data.get("calendars", [])))
