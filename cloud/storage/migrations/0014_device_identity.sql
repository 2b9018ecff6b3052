-- Device identity per edge node (issue 10, finding 4). Sparkplug makes a device unique within its edge node
-- (group / edge node / device), while `machines` is keyed by (site, machine): two edge nodes of one site with a
-- device `press01` used to share one row, and their tags mixed under it.
-- `device_id` is the Sparkplug device id a row stands for, under its `edge_node_id`; `machine_id` stays the
-- site-unique name every route, table and kernel uses. NULL means "the same as machine_id", which is what every
-- row written before this migration (and every seeded machine) is, so old data reads unchanged.
-- A device born by a second edge node under an id the site already uses gets its own row, named
-- `{device}--{edge}` (cloud/ingest/registry.py).
ALTER TABLE machines ADD COLUMN IF NOT EXISTS device_id text;
CREATE UNIQUE INDEX IF NOT EXISTS machines_device
    ON machines (site_id, edge_node_id, (coalesce(device_id, machine_id)));
