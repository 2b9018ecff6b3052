-- Networked collaborative manufacturing (issue 14): the manufacturing network (products, families, line kinds
-- and what they make, changeovers per line, transport between sites), orders, versioned plans with their lots,
-- and the production orders an accepted plan gives each line. Written by `zhizao cloud seed` (source 'seeds')
-- and the planning API (source 'api'); a row edited through the API is kept when the seeds are applied again.

CREATE TABLE IF NOT EXISTS plan_families (
    family_id  text PRIMARY KEY,
    name       text,
    source     text NOT NULL DEFAULT 'seeds'
);

CREATE TABLE IF NOT EXISTS plan_products (
    product_id  text PRIMARY KEY,
    name        text,
    family_id   text NOT NULL REFERENCES plan_families (family_id),
    unit        text NOT NULL DEFAULT 'unit',
    source      text NOT NULL DEFAULT 'seeds'
);

CREATE TABLE IF NOT EXISTS plan_line_kinds (
    kind_id         text PRIMARY KEY,
    name            text,
    changeover_min  double precision NOT NULL DEFAULT 30,   -- between families without their own row
    source          text NOT NULL DEFAULT 'seeds'
);

-- Which kind each line is, and which machine's good count is its output ('all': the sum of its machines).
CREATE TABLE IF NOT EXISTS plan_lines (
    site_id         text NOT NULL,
    line_id         text NOT NULL,
    kind_id         text NOT NULL REFERENCES plan_line_kinds (kind_id),
    output_machine  text NOT NULL,
    source          text NOT NULL DEFAULT 'seeds',
    PRIMARY KEY (site_id, line_id)
);

CREATE TABLE IF NOT EXISTS plan_capabilities (
    kind_id          text NOT NULL REFERENCES plan_line_kinds (kind_id),
    product_id       text NOT NULL REFERENCES plan_products (product_id),
    rate_per_min     double precision NOT NULL CHECK (rate_per_min > 0),
    yield            double precision NOT NULL DEFAULT 1 CHECK (yield > 0 AND yield <= 1),
    counts_per_unit  double precision NOT NULL DEFAULT 1 CHECK (counts_per_unit > 0),
    source           text NOT NULL DEFAULT 'seeds',
    PRIMARY KEY (kind_id, product_id)
);

-- Changeover minutes per line between families (from the seeds per kind, editable per line).
CREATE TABLE IF NOT EXISTS plan_changeovers (
    site_id      text NOT NULL,
    line_id      text NOT NULL,
    from_family  text NOT NULL,
    to_family    text NOT NULL,
    minutes      double precision NOT NULL CHECK (minutes >= 0),
    source       text NOT NULL DEFAULT 'seeds',
    PRIMARY KEY (site_id, line_id, from_family, to_family)
);

-- One row per direction.
CREATE TABLE IF NOT EXISTS plan_transport (
    from_site  text NOT NULL,
    to_site    text NOT NULL,
    km         double precision,
    hours      double precision NOT NULL CHECK (hours >= 0),
    cost       double precision NOT NULL DEFAULT 0 CHECK (cost >= 0),
    source     text NOT NULL DEFAULT 'seeds',
    PRIMARY KEY (from_site, to_site)
);

CREATE TABLE IF NOT EXISTS plan_orders (
    order_id       text PRIMARY KEY,
    site_id        text NOT NULL,                 -- the ordering site: it sees the order
    product_id     text NOT NULL REFERENCES plan_products (product_id),
    quantity       double precision NOT NULL CHECK (quantity > 0),
    due_ts         timestamptz NOT NULL,
    weight         double precision NOT NULL DEFAULT 1 CHECK (weight > 0),
    allowed_sites  text[],                        -- NULL: any site of the cluster
    release_ts     timestamptz,
    status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'cancelled', 'done')),
    note           text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    created_by     text,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    updated_by     text
);
CREATE INDEX IF NOT EXISTS plan_orders_site ON plan_orders (site_id, status);

CREATE TABLE IF NOT EXISTS plan_versions (
    plan_id             bigserial PRIMARY KEY,
    created_at          timestamptz NOT NULL DEFAULT now(),
    created_by          text,
    status              text NOT NULL DEFAULT 'proposed'
                        CHECK (status IN ('proposed', 'accepted', 'rejected', 'superseded')),
    reason              text NOT NULL DEFAULT 'plan',     -- plan, replan: <what changed>
    base_plan_id        bigint REFERENCES plan_versions (plan_id),
    origin_ts           timestamptz NOT NULL,
    solver              text NOT NULL,
    solve_s             double precision NOT NULL,
    weighted_tardiness  double precision NOT NULL,
    makespan_s          double precision NOT NULL,
    changeover_s        double precision NOT NULL,
    transport_cost      double precision NOT NULL,
    lower_bound         double precision,
    optimal             boolean NOT NULL DEFAULT false,
    basis               jsonb,            -- what capacity the plan rested on (lines down, planned stops, calendars)
    decided_at          timestamptz,
    decided_by          text
);

CREATE TABLE IF NOT EXISTS plan_lots (
    plan_id       bigint NOT NULL REFERENCES plan_versions (plan_id) ON DELETE CASCADE,
    lot_id        text NOT NULL,
    order_id      text NOT NULL,
    order_site    text NOT NULL,
    product_id    text NOT NULL,
    family_id     text NOT NULL,
    quantity      double precision NOT NULL,
    site_id       text NOT NULL,                 -- where it is made
    line_id       text NOT NULL,
    seq           integer NOT NULL,
    start_ts      timestamptz NOT NULL,          -- changeover starts
    setup_s       double precision NOT NULL,
    end_ts        timestamptz NOT NULL,
    arrival_ts    timestamptz NOT NULL,          -- end + transport to the ordering site
    due_ts        timestamptz NOT NULL,
    tardiness_s   double precision NOT NULL,
    why_late      text,
    PRIMARY KEY (plan_id, lot_id)
);
CREATE INDEX IF NOT EXISTS plan_lots_line ON plan_lots (site_id, line_id, plan_id);

-- The accepted plan's lots as the lines' work: released in sequence, started when sent to the line,
-- progress = good units of the line's output machine counted since started_at.
CREATE TABLE IF NOT EXISTS production_orders (
    po_id          bigserial PRIMARY KEY,
    plan_id        bigint NOT NULL REFERENCES plan_versions (plan_id),
    lot_id         text NOT NULL,
    order_id       text NOT NULL,
    site_id        text NOT NULL,
    line_id        text NOT NULL,
    product_id     text NOT NULL,
    quantity       double precision NOT NULL,
    seq            integer NOT NULL,
    planned_start  timestamptz NOT NULL,
    planned_end    timestamptz NOT NULL,
    status         text NOT NULL DEFAULT 'planned'
                   CHECK (status IN ('planned', 'started', 'done', 'cancelled')),
    started_at     timestamptz,
    finished_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS production_orders_line ON production_orders (site_id, line_id, status, seq);

-- The cluster-planner role (cloud/auth.py): sees and plans across sites.
ALTER TABLE api_tokens DROP CONSTRAINT IF EXISTS api_tokens_role_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_role_check
    CHECK (role IN ('viewer', 'operator', 'engineer', 'cluster-planner', 'admin'));
