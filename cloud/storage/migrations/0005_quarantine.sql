-- Refused samples of known tags (a clock ahead or never set, a NaN that claims to be good), kept whole so they
-- can be re-ingested once the cause is fixed (GET/POST /api/v1/quarantine...). The cloud acknowledges a batch
-- only after its quarantined samples are committed here, so the edge may delete them.
-- ts_ms is the sample's own epoch-millisecond timestamp as sent, which may lie outside what timestamptz holds.

CREATE TABLE IF NOT EXISTS quarantine (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    tag_id       integer NOT NULL REFERENCES tags (tag_id),
    ts_ms        bigint NOT NULL,
    value        double precision,
    text_value   text,
    quality      smallint NOT NULL,
    live         boolean NOT NULL,
    reason       text NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_tag ON quarantine (tag_id, id);
CREATE INDEX IF NOT EXISTS quarantine_reason ON quarantine (reason, received_at);
