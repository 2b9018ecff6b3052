"""OPC UA adapter (asyncua): the only module on the client side that imports asyncua. See README.md."""

from zhizao.edge.adapters.opcua.adapter import OpcUaAdapter
from zhizao.edge.adapters.opcua.config import OpcUaConfig, PollingConfig, SecurityConfig, SubscriptionConfig

__all__ = ["OpcUaAdapter", "OpcUaConfig", "PollingConfig", "SecurityConfig", "SubscriptionConfig"]
