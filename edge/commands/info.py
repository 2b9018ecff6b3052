"""The agent info the cloud's fleet console shows: versions, command targets, outbox, devices, errors, clock.

Published retained on `zhizao/v1/edge/{site}/{edge}` (broker/commands.py) at every NBIRTH and every
`sparkplug.health_interval_s` while online, so the cloud always holds the latest one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import zhizao
from zhizao.edge.config import AgentConfig


def config_version(config: AgentConfig) -> str:
    """A short fingerprint of the effective config (secrets masked by pydantic): equal configs, equal versions."""
    text = config.model_dump_json(exclude_none=True, serialize_as_any=True)  # adapter sections whole
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def encode_info(doc: dict[str, Any]) -> bytes:
    """The info payload (JSON)."""
    return json.dumps({"agent_version": zhizao.__version__, **doc}, default=str).encode()
