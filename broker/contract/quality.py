"""Sample quality codes: the Sparkplug `Quality` property values (OPC UA status severities map onto them)."""

from __future__ import annotations

__all__ = ["QUALITY_BAD", "QUALITY_GOOD", "QUALITY_STALE"]

QUALITY_BAD = 0
QUALITY_GOOD = 192
"""Good: also the value of a metric that carries no `Quality` property (and the storage default)."""
QUALITY_STALE = 500
"""Uncertain (OPC UA severity 1): the value may be out of date."""
