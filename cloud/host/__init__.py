"""The Sparkplug B primary host application: MQTT connection, STATE, per-edge-node session state."""

from zhizao.cloud.host.client import HostClient, HostError
from zhizao.cloud.host.session import InMemorySessionStore, NodeKey, NodeSession, SessionStore

__all__ = ["HostClient", "HostError", "InMemorySessionStore", "NodeKey", "NodeSession", "SessionStore"]
