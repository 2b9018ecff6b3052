"""OEE service: state intervals and counters from ingested samples, incremental kernels, windows and roll-ups."""
