-- zhizao condition monitoring: detector rules and state, anomaly scores, ISA-18.2 alarms with their history,
-- webhooks with a delivery outbox, maintenance work orders. Written so that applying it twice is harmless; it
-- only adds tables and nullable columns, so older data stays readable. anomaly_scores becomes a hypertable on
-- TimescaleDB (cloud/storage/timescale.py), BRIN-indexed on plain PostgreSQL like samples.

-- The machine kind from the seeds (e.g. cnc-machining-center): detector and alarm rules can match it.
ALTER TABLE machines ADD COLUMN IF NOT EXISTS kind text;

-- Detector and alarm rules. A rule applies to the tags (or machines) that match every non-NULL selector;
-- for a tag the most specific detector rule wins (machine > tag name > kind > site > everything).
CREATE TABLE IF NOT EXISTS monitoring_rules (
    id            bigserial PRIMARY KEY,
    rule_type     text NOT NULL CHECK (rule_type IN ('detector', 'threshold', 'rate', 'failure', 'microstops',
                                                     'offline', 'stale')),
    site_id       text,
    machine_kind  text,
    machine_id    text,
    tag_name      text,
    params        jsonb NOT NULL,
    priority      text NOT NULL DEFAULT 'medium' CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    enabled       boolean NOT NULL DEFAULT true,
    source        text NOT NULL DEFAULT 'api',
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text
);

-- One detector state per process-signal tag: the detector's float64 state column, the spec it belongs to
-- (a changed rule starts afresh) and the newest sample time scored (the resume point after a restart).
CREATE TABLE IF NOT EXISTS detector_state (
    tag_id      integer PRIMARY KEY,
    spec_key    text NOT NULL,
    state       bytea NOT NULL,
    last_ts_ms  bigint NOT NULL,
    samples     bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The on/off-delay state of every alarm condition (anomaly, threshold, rate, failure, microstops).
CREATE TABLE IF NOT EXISTS condition_state (
    key          text PRIMARY KEY,
    active       boolean NOT NULL,
    on_since     bigint,
    off_since    bigint,
    last_ts_ms   bigint,
    last_value   double precision
);

-- Anomaly scores per sample of a process signal (NULL: no score, e.g. in the detector's learning period; the row
-- still records that the sample was processed, so a replayed duplicate is never scored twice).
CREATE TABLE IF NOT EXISTS anomaly_scores (
    ts      timestamptz NOT NULL,
    tag_id  integer NOT NULL,
    score   double precision,
    alarm   boolean NOT NULL DEFAULT false,
    CONSTRAINT anomaly_scores_tag_ts UNIQUE (tag_id, ts)
);
CREATE INDEX IF NOT EXISTS anomaly_scores_ts_brin ON anomaly_scores USING brin (ts);

-- Alarm points (ISA-18.2 / IEC 62682): one row per source key, its state as the two booleans of the
-- alarm state model plus the overriding states (shelved, suppressed, out of service).
CREATE TABLE IF NOT EXISTS alarms (
    id              bigserial PRIMARY KEY,
    key             text NOT NULL UNIQUE,
    site_id         text NOT NULL,
    line_id         text,
    machine_id      text,
    tag_id          integer,
    source          text NOT NULL,
    rule_id         bigint,
    priority        text NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    message         text NOT NULL,
    state           text NOT NULL CHECK (state IN ('normal', 'unack', 'ack', 'rtn_unack', 'shelved', 'suppressed',
                                                   'out_of_service')),
    active          boolean NOT NULL,
    acked           boolean NOT NULL,
    shelved_until   timestamptz,
    suppressed      boolean NOT NULL DEFAULT false,
    out_of_service  boolean NOT NULL DEFAULT false,
    chattering      boolean NOT NULL DEFAULT false,
    activations     integer NOT NULL DEFAULT 0,
    value           double precision,
    limit_value     double precision,
    raised_ts       timestamptz,           -- data time of the latest activation
    cleared_ts      timestamptz,           -- data time of the latest return to normal
    acked_at        timestamptz,
    acked_by        text,
    comment         text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alarms_site_state ON alarms (site_id, state);
CREATE INDEX IF NOT EXISTS alarms_machine ON alarms (site_id, machine_id);

-- Every transition of every alarm: what changed, when (wall and data time), who, why.
CREATE TABLE IF NOT EXISTS alarm_history (
    id          bigserial PRIMARY KEY,
    alarm_id    bigint NOT NULL REFERENCES alarms (id),
    site_id     text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    data_ts     timestamptz,
    event       text NOT NULL,          -- activate, clear, acknowledge, shelve, unshelve, ...
    from_state  text NOT NULL,
    to_state    text NOT NULL,
    actor       text NOT NULL,
    comment     text,
    value       double precision
);
CREATE INDEX IF NOT EXISTS alarm_history_alarm ON alarm_history (alarm_id, id);
CREATE INDEX IF NOT EXISTS alarm_history_site ON alarm_history (site_id, data_ts);

-- Webhooks for alarm transitions and their delivery outbox (written in the transaction of the transition).
CREATE TABLE IF NOT EXISTS webhooks (
    id          bigserial PRIMARY KEY,
    site_id     text,                   -- NULL: every site
    url         text NOT NULL,
    secret      text NOT NULL,
    events      text[],                 -- NULL: every event
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id            bigserial PRIMARY KEY,
    webhook_id    bigint NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    alarm_id      bigint,
    event         text NOT NULL,
    payload       jsonb NOT NULL,
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts      integer NOT NULL DEFAULT 0,
    next_at       timestamptz NOT NULL DEFAULT now(),
    last_error    text,
    last_status   integer,
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (status, next_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_hook ON webhook_deliveries (webhook_id, id);

-- Maintenance work orders, their alarms, and the planned stop each may have written into the site calendar.
CREATE TABLE IF NOT EXISTS work_orders (
    id             bigserial PRIMARY KEY,
    site_id        text NOT NULL,
    line_id        text,
    machine_id     text,
    title          text NOT NULL,
    description    text NOT NULL DEFAULT '',
    assignee       text,
    status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'in_progress', 'done')),
    planned_start  timestamptz,
    planned_end    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    done_at        timestamptz
);
CREATE INDEX IF NOT EXISTS work_orders_site ON work_orders (site_id, status);
CREATE TABLE IF NOT EXISTS work_order_alarms (
    work_order_id  bigint NOT NULL REFERENCES work_orders (id) ON DELETE CASCADE,
    alarm_id       bigint NOT NULL REFERENCES alarms (id),
    PRIMARY KEY (work_order_id, alarm_id)
);
ALTER TABLE oee_planned_stops ADD COLUMN IF NOT EXISTS work_order_id bigint;
