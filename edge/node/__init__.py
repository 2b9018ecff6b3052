"""Sparkplug B edge-node session (paho-mqtt) and its config sections."""

from zhizao.edge.node.config import MqttConfig, OutboxConfig, SparkplugConfig, TlsConfig
from zhizao.edge.node.publisher import NodeStats
from zhizao.edge.node.session import EdgeNode, NodeError

__all__ = ["EdgeNode", "MqttConfig", "NodeError", "NodeStats", "OutboxConfig", "SparkplugConfig", "TlsConfig"]
