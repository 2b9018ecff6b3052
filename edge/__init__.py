"""Edge agent: adapters, signal mapping, outbox, Sparkplug B edge node, and the OPC UA factory simulator."""
