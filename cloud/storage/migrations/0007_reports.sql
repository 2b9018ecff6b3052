-- Shift reports and OEE targets: operators' comments on a shift report, OEE targets per line, Chinese display
-- names of sites and lines (for reports and the dashboard in Chinese).
-- Written so that applying it twice is harmless; it only adds tables and nullable columns, so older data
-- stays readable. None of these is a time series (a few rows per shift or per line): no hypertables.

ALTER TABLE sites ADD COLUMN IF NOT EXISTS name_zh text;
ALTER TABLE edge_nodes ADD COLUMN IF NOT EXISTS name_zh text;

-- A comment on the report of one shift (identified by its site and start), for one line or (line_id NULL)
-- for the whole site. Written through POST /api/v1/reports/shift/comments (operator and above, audited).
CREATE TABLE IF NOT EXISTS shift_report_comments (
    id           bigserial PRIMARY KEY,
    site_id      text NOT NULL,
    line_id      text,
    shift_start  timestamptz NOT NULL,
    shift_name   text NOT NULL,
    body         text NOT NULL CHECK (length(body) BETWEEN 1 AND 2000),
    author       text NOT NULL,
    token_id     bigint REFERENCES api_tokens (token_id),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS shift_report_comments_shift ON shift_report_comments (site_id, shift_start);

-- OEE target of a line (fractions 0..1; A, P and Q targets are optional). Rows come from the seeds
-- (`zhizao cloud seed FILE`, source 'seeds') and are edited through PUT /api/v1/sites/{site}/lines/{line}/target
-- (engineer and above, audited, source 'api'); seeding again keeps a target edited through the API.
CREATE TABLE IF NOT EXISTS oee_line_targets (
    site_id       text NOT NULL,
    line_id       text NOT NULL,
    oee           double precision NOT NULL CHECK (oee > 0 AND oee <= 1),
    availability  double precision CHECK (availability > 0 AND availability <= 1),
    performance   double precision CHECK (performance > 0 AND performance <= 1),
    quality       double precision CHECK (quality > 0 AND quality <= 1),
    source        text NOT NULL DEFAULT 'seeds',
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text,
    PRIMARY KEY (site_id, line_id)
);
