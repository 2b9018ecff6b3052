"""Sparkplug B edge-node session (paho-mqtt) and its config sections."""
