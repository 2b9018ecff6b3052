-- Exact 64-bit integers (Sparkplug Int64/UInt64 values beyond +-2**53, which float64 only approximates).
-- `samples` keeps the nearest float64 of every such sample (charts, rollups and kernels read one table);
-- this companion keeps the exact value at the same (tag_id, ts), and the API answers with it.
-- Arrays (canonical JSON) and DateTime (ISO 8601) are stored in `samples_text`, by their tag's datatype.
CREATE TABLE IF NOT EXISTS samples_int (
    ts       timestamptz NOT NULL,
    tag_id   integer NOT NULL,
    value    numeric(20, 0) NOT NULL,
    quality  smallint NOT NULL DEFAULT 192,
    CONSTRAINT samples_int_tag_ts UNIQUE (tag_id, ts)
);

-- The exact value of the latest sample when it is one of those integers (NULL otherwise).
ALTER TABLE latest_values ADD COLUMN IF NOT EXISTS int_value numeric(20, 0);
