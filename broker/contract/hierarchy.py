"""The ISA-95 hierarchy (DESIGN.md section 2): alliance > site > line > machine > signal, and its Sparkplug names.

One edge agent serves one line, so a line id is its Sparkplug `edge_node_id`: `group_id` = site,
`edge_node_id` = edge (line), `device_id` = machine. Signals are Sparkplug metric names (`Counts/Total`).
"""

from __future__ import annotations

from dataclasses import dataclass

from zhizao.broker.contract.ids import ID_RULE, IdError, validate_id

__all__ = ["LineRef", "MachineRef"]


@dataclass(frozen=True)
class LineRef:
    """A line of a site, served by the edge node of the same id."""

    site: str
    edge: str

    def __post_init__(self) -> None:
        validate_id("site", self.site)
        validate_id("edge", self.edge)

    def __str__(self) -> str:
        return f"{self.site}/{self.edge}"


@dataclass(frozen=True)
class MachineRef:
    """A machine: Sparkplug group_id = site, edge_node_id = edge (its line), device_id = machine."""

    site: str
    edge: str
    machine: str

    def __post_init__(self) -> None:
        validate_id("site", self.site)
        validate_id("edge", self.edge)
        validate_id("machine", self.machine)

    @property
    def line(self) -> LineRef:
        """The line (edge node) the machine belongs to."""
        return LineRef(self.site, self.edge)

    def __str__(self) -> str:
        return f"{self.site}/{self.edge}/{self.machine}"

    @staticmethod
    def parse(text: str, field: str = "machine") -> MachineRef:
        """Parse a `site/line/machine` path; raise IdError naming `field` and the text when it is not one."""
        parts = text.split("/") if isinstance(text, str) else []
        if len(parts) != 3:
            raise IdError(field, text, "a site/line/machine path")
        try:
            return MachineRef(*parts)
        except IdError as exc:
            raise IdError(field, text, f"a site/line/machine path ({exc.kind} {exc.value!r}: {ID_RULE})") from None
