"""Shared by edge and cloud: the contract (ids, hierarchy, states, calendars), Sparkplug B, extensions, MQTT."""
