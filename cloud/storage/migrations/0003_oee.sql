-- zhizao OEE schema: site calendars and state classes, planned stops, state changes, stop reasons, and the
-- OEE windows the OEE service keeps (additive sums per machine; ratios and roll-ups are derived at query time).
-- Written so that applying it twice is harmless; it only adds tables, so older data stays readable.

-- Shift calendar (seeds.model.Calendar as JSON), time zone and state classes per site. Rows come from the
-- seeds when the OEE service first starts and are edited through PUT /api/v1/sites/{site}/calendar.
CREATE TABLE IF NOT EXISTS oee_site_config (
    site_id        text PRIMARY KEY,
    tz             text NOT NULL,
    calendar       jsonb NOT NULL,
    state_classes  jsonb,              -- NULL: the analytics defaults
    source         text NOT NULL DEFAULT 'seeds',
    updated_at     timestamptz NOT NULL DEFAULT now(),
    updated_by     text
);

-- One-off planned stops of a site (maintenance days, trials): excluded from planned production time.
CREATE TABLE IF NOT EXISTS oee_planned_stops (
    id        bigserial PRIMARY KEY,
    site_id   text NOT NULL,
    start_ts  timestamptz NOT NULL,
    end_ts    timestamptz NOT NULL CHECK (end_ts > start_ts),
    code      integer NOT NULL,
    note      text
);
CREATE INDEX IF NOT EXISTS oee_planned_stops_site ON oee_planned_stops (site_id, start_ts);

-- State changes per machine (a state holds until the next change): the timeline behind /api/v1/states.
CREATE TABLE IF NOT EXISTS oee_state_changes (
    site_id     text NOT NULL,
    machine_id  text NOT NULL,
    ts          timestamptz NOT NULL,
    code        integer NOT NULL,
    PRIMARY KEY (site_id, machine_id, ts)
);

-- A reason an operator gave to an unspecified stop that began at `ts`; it replaces the stop's code in OEE.
CREATE TABLE IF NOT EXISTS oee_stop_reasons (
    site_id     text NOT NULL,
    machine_id  text NOT NULL,
    ts          timestamptz NOT NULL,
    code        integer NOT NULL,
    set_by      text,
    set_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, machine_id, ts)
);

-- OEE windows per machine (kind hour | shift | day), as sums that add up across windows and machines.
CREATE TABLE IF NOT EXISTS oee_windows (
    site_id          text NOT NULL,
    machine_id       text NOT NULL,
    line_id          text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('hour', 'shift', 'day')),
    start_ts         timestamptz NOT NULL,
    end_ts           timestamptz NOT NULL,
    all_s            double precision NOT NULL,   -- elapsed part of the window that was computed
    planned_s        double precision NOT NULL,
    run_s            double precision NOT NULL,
    ideal_s          double precision NOT NULL,   -- ideal cycle time x units made
    good_ideal_s     double precision NOT NULL,   -- ideal cycle time x good units
    total            bigint NOT NULL,
    good             bigint NOT NULL,
    loss_failure_s   double precision NOT NULL,
    loss_setup_s     double precision NOT NULL,
    loss_minor_s     double precision NOT NULL,
    loss_speed_s     double precision NOT NULL,
    loss_defect_s    double precision NOT NULL,
    loss_startup_s   double precision NOT NULL,
    stops            integer NOT NULL,
    failures         integer NOT NULL,
    microstops       integer NOT NULL,
    flags            integer NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, machine_id, kind, start_ts)
);
CREATE INDEX IF NOT EXISTS oee_windows_kind_start ON oee_windows (kind, start_ts);
