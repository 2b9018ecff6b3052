-- Sparkplug session state shared by every ingest worker of a shared subscription (issue 15): the current
-- edge session of each node (its birth, so any worker can resolve the aliases of DATA another worker saw the
-- birth of), and the ledger of committed batch ids from which the ack watermark of that session is computed.
-- Written by cloud/host/shared.py; only workers with `shared_subscription` use these tables.

-- One row per edge node: its current session. `generation` goes up by one with every new session any worker
-- recorded (an NBIRTH with another bdSeq, timestamp or batch counter); rows of the ledger carry it, so a batch
-- of an earlier session never counts towards a later one.
CREATE TABLE IF NOT EXISTS ingest_sessions (
    site_id               text NOT NULL,
    edge_node_id          text NOT NULL,
    generation            bigint NOT NULL,
    bd_seq                integer,
    birth_ms              bigint NOT NULL,
    birth_batch           bigint,            -- zhizao/Batch of the NBIRTH: the last batch id before this session
    born                  boolean NOT NULL DEFAULT true,   -- false after the session's NDEATH
    nbirth                bytea NOT NULL,    -- the NBIRTH payload (aliases, datatypes, protocol metrics)
    node_tags             jsonb NOT NULL,    -- metric name -> tag id of the node's metrics
    acked_batch           bigint,            -- every batch id in (birth_batch, acked_batch] is committed
    gap_since             timestamptz,       -- a batch beyond the watermark is committed, one before it is not
    rebirth_requested_at  timestamptz,
    PRIMARY KEY (site_id, edge_node_id)
);

-- The DBIRTHs of a session (devices born in it; a DDEATH removes its row).
CREATE TABLE IF NOT EXISTS ingest_session_devices (
    site_id       text NOT NULL,
    edge_node_id  text NOT NULL,
    device_id     text NOT NULL,
    generation    bigint NOT NULL,
    dbirth        bytea NOT NULL,
    tags          jsonb NOT NULL,            -- metric name -> tag id of the device's metrics
    PRIMARY KEY (site_id, edge_node_id, device_id)
);

-- Batch ids whose message was committed whole (stored or quarantined), in the transaction that stored it;
-- rows up to the watermark are deleted as it advances.
CREATE TABLE IF NOT EXISTS ingest_committed_batches (
    site_id       text NOT NULL,
    edge_node_id  text NOT NULL,
    generation    bigint NOT NULL,
    batch_id      bigint NOT NULL,
    PRIMARY KEY (site_id, edge_node_id, generation, batch_id)
);

-- Committed numeric samples per site, for the worker that owns the site (cloud/ingest/owners.py: a session
-- advisory lock per site): with several workers the OEE and condition monitoring of a site run in exactly one
-- of them, fed with what every worker committed. Written in each batch's transaction, deleted as the owner
-- takes them.
CREATE TABLE IF NOT EXISTS ingest_site_feed (
    feed_id   bigserial PRIMARY KEY,
    site_id   text NOT NULL,
    tag_ids   integer[] NOT NULL,
    ts_ms     bigint[] NOT NULL,
    value     double precision[] NOT NULL
);
CREATE INDEX IF NOT EXISTS ingest_site_feed_site ON ingest_site_feed (site_id, feed_id);
