"""The OPC UA factory simulator: serves a scenario's machines (PackML-style nodes) from a vectorized model."""
