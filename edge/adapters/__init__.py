"""Adapters: one folder per device protocol, registered through the entry-point group `zhizao.adapters`."""
