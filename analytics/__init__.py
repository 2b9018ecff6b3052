"""Analytics kernels: numba OEE, losses, MTBF/MTTR and anomaly detectors over arrays, with reference twins."""
