"""Remote configuration of edge agents: validation with the edge's own model, versions and diffs."""
