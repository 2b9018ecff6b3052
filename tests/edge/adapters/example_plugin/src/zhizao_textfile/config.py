"""Config model of the text-file adapter (one `adapters[]` entry with `type: textfile`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from zhizao.edge.config import AdapterSettings


class TextFileConfig(AdapterSettings):
    """The file the device rewrites and how often to read it; unknown keys are refused (AdapterSettings)."""

    type: Literal["textfile"]
    path: Path = Field(description="text file of `key value` lines; a source's Signal.metric is its key")
    interval_ms: float = Field(default=1000.0, ge=10.0, le=3_600_000.0, description="read period")
