"""Sparkplug B edge-node session (paho-mqtt) and its config sections."""

from edge.node.config import MqttConfig, OutboxConfig, SparkplugConfig, TlsConfig
from edge.node.publisher import NodeStats
from edge.node.session import EdgeNode, NodeError

__all__ = ["EdgeNode", "MqttConfig", "NodeError", "NodeStats", "OutboxConfig", "SparkplugConfig", "TlsConfig"]
