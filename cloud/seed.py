"""`zhizao cloud seed FILE`: write a scenario's sites, lines, machines and calendars into the database.

The cloud seeds nothing by itself; this is the one place where a scenario file (e.g. seeds/cluster.yaml)
becomes rows. Idempotent: seeding the same file again changes nothing, and a calendar edited through the API
(source 'api') is kept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import psycopg

from zhizao.cloud.storage.db import translate_errors
from zhizao.seeds.model import OeeTarget, Scenario

__all__ = ["SeedCounts", "seed_database"]


@dataclass(frozen=True)
class SeedCounts:
    """How many rows of each kind the scenario holds, and how many calendars were kept as edited."""

    sites: int
    lines: int
    machines: int
    calendars_kept: int
    targets: int = 0


def seed_database(conninfo: str, scenario: Scenario) -> SeedCounts:
    """Upsert the scenario's sites, lines (edge nodes), machines, site calendars and line targets in one transaction."""
    lines = machines = kept = targets = 0
    with translate_errors(), psycopg.connect(conninfo) as conn, conn.transaction():
        for site in scenario.sites:
            conn.execute(
                "INSERT INTO sites (site_id, name, tz) VALUES (%s, %s, %s)"
                " ON CONFLICT (site_id) DO UPDATE SET name = excluded.name, tz = excluded.tz",
                [site.id, site.name or site.id, site.timezone],
            )
            conn.execute("UPDATE sites SET name_zh = %s WHERE site_id = %s", [site.name_zh or None, site.id])
            for line in site.lines:
                lines += 1
                conn.execute(
                    "INSERT INTO edge_nodes (site_id, edge_node_id, name) VALUES (%s, %s, %s)"
                    " ON CONFLICT (site_id, edge_node_id) DO UPDATE SET name = excluded.name",
                    [site.id, line.id, line.name or None],
                )
                conn.execute("UPDATE edge_nodes SET name_zh = %s WHERE site_id = %s AND edge_node_id = %s",
                             [line.name_zh or None, site.id, line.id])
                if line.target is not None:
                    targets += 1
                    _seed_target(conn, site.id, line.id, line.target)
                for machine in line.machines:
                    machines += 1
                    conn.execute(
                        "INSERT INTO machines (site_id, machine_id, edge_node_id, line_id, name, ideal_rate_per_min, kind)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (site_id, machine_id) DO UPDATE"
                        " SET name = excluded.name, ideal_rate_per_min = excluded.ideal_rate_per_min, kind = excluded.kind",
                        [site.id, machine.id, line.id, line.id, machine.name or None, machine.ideal_rate_per_min,
                         machine.kind],  # kind: monitoring rules match it (migration 0008)
                    )
            row = conn.execute(
                "INSERT INTO oee_site_config (site_id, tz, calendar, state_classes, source, microstop_s, startup_s)"
                " VALUES (%s, %s, %s, %s, 'seeds', %s, %s)"
                " ON CONFLICT (site_id) DO UPDATE SET tz = excluded.tz, calendar = excluded.calendar,"
                " state_classes = excluded.state_classes, microstop_s = excluded.microstop_s,"
                " startup_s = excluded.startup_s"
                " WHERE oee_site_config.source = 'seeds' RETURNING site_id",
                [site.id, site.timezone, _json(site.calendar.model_dump(mode="json")),
                 _json(site.state_classes.model_dump(mode="json")), site.oee.microstop_s, site.oee.startup_s],
            ).fetchone()
            kept += row is None
    return SeedCounts(len(scenario.sites), lines, machines, kept, targets)


def _seed_target(conn: psycopg.Connection[Any], site: str, line: str, target: OeeTarget) -> None:
    """Upsert a line's OEE target, keeping one edited through the API (source 'api')."""
    conn.execute(
        "INSERT INTO oee_line_targets (site_id, line_id, oee, availability, performance, quality, source)"
        " VALUES (%s, %s, %s, %s, %s, %s, 'seeds') ON CONFLICT (site_id, line_id) DO UPDATE SET oee = excluded.oee,"
        " availability = excluded.availability, performance = excluded.performance, quality = excluded.quality,"
        " updated_at = now() WHERE oee_line_targets.source = 'seeds' AND (oee_line_targets.oee,"
        " oee_line_targets.availability, oee_line_targets.performance, oee_line_targets.quality)"
        " IS DISTINCT FROM (excluded.oee, excluded.availability, excluded.performance, excluded.quality)",
        [site, line, target.oee, target.availability, target.performance, target.quality],
    )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
