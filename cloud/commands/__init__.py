"""Remote commands in the cloud: the dispatcher that signs and sends DCMDs and follows their outcome."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from zhizao.broker.commands import load_or_create_key
from zhizao.cloud.commands.service import CommandService
from zhizao.cloud.settings import CloudSettings

__all__ = ["CommandService", "load_signing_key"]


def load_signing_key(settings: CloudSettings) -> Ed25519PrivateKey:
    """The cloud's command signing key (created on first use under the data directory)."""
    return load_or_create_key(settings.command_key_path())
