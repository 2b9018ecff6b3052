"""Reports for people: the shift report (JSON, CSV, PDF; English and Chinese) and OEE targets per line."""
