"""Remote commands at the edge: signed DCMDs verified, checked against the configured targets and limits,
executed through the adapter (write or method call), read back, and reported to the cloud."""
