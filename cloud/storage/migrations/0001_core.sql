-- zhizao core schema: assets from Sparkplug births, the narrow time-series tables, ingest bookkeeping.
-- Written so that applying it twice is harmless (the runner also records it in schema_migrations).
-- Rollups (samples_1m / samples_1h) are created by the storage backend after the migrations:
-- continuous aggregates on TimescaleDB, plain tables maintained by the ingest service otherwise.

CREATE TABLE IF NOT EXISTS sites (
    site_id     text PRIMARY KEY,
    name        text,
    tz          text NOT NULL DEFAULT 'UTC',
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS edge_nodes (
    site_id        text NOT NULL REFERENCES sites (site_id),
    edge_node_id   text NOT NULL,
    online         boolean NOT NULL DEFAULT false,
    bd_seq         integer,
    last_birth     timestamptz,
    last_death     timestamptz,
    last_seen      timestamptz,
    outbox_depth   bigint,
    samples_per_s  double precision,
    reconnects     bigint,
    last_batch     bigint,
    acked_batch    bigint,
    PRIMARY KEY (site_id, edge_node_id)
);

CREATE TABLE IF NOT EXISTS machines (
    site_id       text NOT NULL REFERENCES sites (site_id),
    machine_id    text NOT NULL,
    edge_node_id  text NOT NULL,
    line_id       text NOT NULL,
    online        boolean NOT NULL DEFAULT false,
    last_birth    timestamptz,
    last_death    timestamptz,
    PRIMARY KEY (site_id, machine_id)
);

CREATE TABLE IF NOT EXISTS tags (
    tag_id        serial PRIMARY KEY,
    site_id       text NOT NULL REFERENCES sites (site_id),
    edge_node_id  text NOT NULL,
    machine_id    text,            -- NULL: a metric of the edge node itself
    name          text NOT NULL,
    datatype      smallint NOT NULL,
    unit          text,
    first_seen    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS tags_identity
    ON tags (site_id, edge_node_id, (coalesce(machine_id, '')), name);
CREATE INDEX IF NOT EXISTS tags_machine ON tags (site_id, machine_id);

-- No foreign key to tags: it would cost a lookup per row on the hot path; tag ids come from births.
CREATE TABLE IF NOT EXISTS samples (
    ts       timestamptz NOT NULL,
    tag_id   integer NOT NULL,
    value    double precision,
    quality  smallint NOT NULL DEFAULT 192,
    CONSTRAINT samples_tag_ts UNIQUE (tag_id, ts)
);

CREATE TABLE IF NOT EXISTS samples_text (
    ts       timestamptz NOT NULL,
    tag_id   integer NOT NULL,
    value    text,
    quality  smallint NOT NULL DEFAULT 192,
    CONSTRAINT samples_text_tag_ts UNIQUE (tag_id, ts)
);

-- Latest live value per tag; historical (replayed) samples never move it.
CREATE TABLE IF NOT EXISTS latest_values (
    tag_id      integer PRIMARY KEY,
    ts          timestamptz NOT NULL,
    value       double precision,
    text_value  text,
    quality     smallint NOT NULL DEFAULT 192
);

CREATE TABLE IF NOT EXISTS dead_letters (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text NOT NULL,
    reason       text NOT NULL,
    detail       text,
    payload      bytea
);
CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received_at);
CREATE INDEX IF NOT EXISTS dead_letters_reason ON dead_letters (reason, received_at);
