"""The wire contract shared by edge and cloud: Sparkplug B codec, topics, zhizao extensions, broker config."""
