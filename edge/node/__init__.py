"""Sparkplug B edge-node session (paho-mqtt) and its config sections."""

from edge.node.config import MqttConfig, OutboxConfig, SparkplugConfig, TlsConfig
from edge.node.session import EdgeNode, NodeError, NodeStats

__all__ = ["EdgeNode", "MqttConfig", "NodeError", "NodeStats", "OutboxConfig", "SparkplugConfig", "TlsConfig"]
