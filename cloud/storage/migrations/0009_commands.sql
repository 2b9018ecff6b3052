-- Remote operations (DESIGN.md section 10): commands with their status history, what each edge agent
-- declares it may be commanded (targets and limits), and the agent info behind the fleet console.
-- These are small mutable tables (a command's status changes until it ends), not time series: plain
-- tables on TimescaleDB too.

CREATE TABLE IF NOT EXISTS commands (
    command_id       uuid PRIMARY KEY,
    site_id          text NOT NULL REFERENCES sites (site_id),
    edge_node_id     text NOT NULL,
    machine_id       text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('write', 'call')),
    name             text NOT NULL,        -- the signal written, or Method/Start etc.
    datatype         smallint NOT NULL,    -- Sparkplug datatype of the DCMD metric
    value            jsonb,                -- the value written (true for a method)
    reason           text NOT NULL,
    idempotency_key  text,
    status           text NOT NULL CHECK (status IN ('awaiting_approval', 'queued', 'sent', 'delivered',
                         'confirmed', 'failed', 'refused', 'timed_out', 'expired', 'cancelled')),
    requested_by     text NOT NULL,
    token_id         bigint,
    approved_by      text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    sent_at          timestamptz,
    delivered_at     timestamptz,
    finished_at      timestamptz,
    readback         jsonb,
    status_code      bigint,               -- OPC UA status code of a failure
    status_name      text,
    message          text
);
CREATE UNIQUE INDEX IF NOT EXISTS commands_idempotency ON commands (site_id, machine_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS commands_machine ON commands (site_id, machine_id, created_at DESC);
CREATE INDEX IF NOT EXISTS commands_open ON commands (site_id, edge_node_id, created_at)
    WHERE status IN ('queued', 'sent', 'delivered');

CREATE TABLE IF NOT EXISTS command_events (
    id          bigserial PRIMARY KEY,
    command_id  uuid NOT NULL REFERENCES commands (command_id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    status      text NOT NULL,
    detail      jsonb
);
CREATE INDEX IF NOT EXISTS command_events_command ON command_events (command_id, id);

-- What an agent declares in its info (zhizao/v1/edge/{site}/{edge}): replaced whole at every info message.
CREATE TABLE IF NOT EXISTS command_targets (
    site_id         text NOT NULL,
    edge_node_id    text NOT NULL,
    machine_id      text NOT NULL,
    name            text NOT NULL,
    kind            text NOT NULL,
    datatype        smallint,
    min_value       double precision,
    max_value       double precision,
    step            double precision,
    allowed_states  integer[],
    role            text NOT NULL,
    critical        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (site_id, machine_id, name)
);

CREATE TABLE IF NOT EXISTS edge_agents (
    site_id         text NOT NULL,
    edge_node_id    text NOT NULL,
    agent_version   text,
    config_version  text,
    info            jsonb NOT NULL,
    received_at     timestamptz NOT NULL,
    clock_skew_ms   bigint,               -- the agent's clock minus the cloud's, from the info timestamp
    PRIMARY KEY (site_id, edge_node_id)
);

-- Remote configuration: agent configs by version (validated with the edge's own model before they are stored),
-- and pushes of a version to its agent (NCMD), one after another in a staged rollout over a site's agents.
CREATE TABLE IF NOT EXISTS agent_configs (
    site_id       text NOT NULL,
    edge_node_id  text NOT NULL,
    version       integer NOT NULL,
    document      text NOT NULL,
    comment       text,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, edge_node_id, version)
);

CREATE TABLE IF NOT EXISTS config_pushes (
    push_id        uuid PRIMARY KEY,
    site_id        text NOT NULL,
    edge_node_id   text NOT NULL,
    version        integer NOT NULL,
    rollback_after_s double precision NOT NULL,
    rollout_id     uuid,                  -- pushes of one staged rollout, sent in `stage` order
    stage          integer NOT NULL DEFAULT 0,
    status         text NOT NULL CHECK (status IN ('queued', 'sent', 'delivered', 'applied', 'refused',
                       'rolled_back', 'timed_out', 'expired', 'cancelled')),
    requested_by   text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    sent_at        timestamptz,
    finished_at    timestamptz,
    message        text,
    FOREIGN KEY (site_id, edge_node_id, version) REFERENCES agent_configs (site_id, edge_node_id, version)
);
CREATE INDEX IF NOT EXISTS config_pushes_node ON config_pushes (site_id, edge_node_id, created_at DESC);
CREATE INDEX IF NOT EXISTS config_pushes_rollout ON config_pushes (rollout_id, stage) WHERE rollout_id IS NOT NULL;
