-- Display names and ideal rates that `zhizao cloud seed FILE` writes from a scenario; the ingest leaves them be.
-- Written so that applying it twice is harmless; it only adds nullable columns.

ALTER TABLE edge_nodes ADD COLUMN IF NOT EXISTS name text;
ALTER TABLE machines ADD COLUMN IF NOT EXISTS name text;
ALTER TABLE machines ADD COLUMN IF NOT EXISTS ideal_rate_per_min double precision;
