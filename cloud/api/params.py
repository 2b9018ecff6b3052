"""Parameters shared by every route: ids follow the contract's one id rule, so every route answers a bad id alike.

A bad id is a 400 naming the parameter and the value (`site='Site_A': not a valid id (...)`), whichever route.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from zhizao.broker.contract.ids import Id

__all__ = ["LineId", "MachineId", "SiteId", "SiteQuery"]

SiteId = Annotated[Id, Path(description="site id (Sparkplug group_id)")]
LineId = Annotated[Id, Path(description="line id = edge node id (Sparkplug edge_node_id)")]
MachineId = Annotated[Id, Path(description="machine id (Sparkplug device_id)")]
SiteQuery = Annotated[Id, Query(description="site id (Sparkplug group_id)")]
"""A required `site` query parameter; optional id query parameters are `Annotated[Id | None, Query()]`."""
