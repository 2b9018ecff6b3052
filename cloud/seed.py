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
from zhizao.seeds.model import Scenario

__all__ = ["SeedCounts", "seed_database"]


@dataclass(frozen=True)
class SeedCounts:
    """How many rows of each kind the scenario holds, and how many calendars were kept as edited."""

    sites: int
    lines: int
    machines: int
    calendars_kept: int


def seed_database(conninfo: str, scenario: Scenario) -> SeedCounts:
    """Upsert the scenario's sites, lines (edge nodes), machines and site calendars in one transaction."""
    lines = machines = kept = 0
    with translate_errors(), psycopg.connect(conninfo) as conn, conn.transaction():
        for site in scenario.sites:
            conn.execute(
                "INSERT INTO sites (site_id, name, tz) VALUES (%s, %s, %s)"
                " ON CONFLICT (site_id) DO UPDATE SET name = excluded.name, tz = excluded.tz",
                [site.id, site.name or site.id, site.timezone],
            )
            for line in site.lines:
                lines += 1
                conn.execute(
                    "INSERT INTO edge_nodes (site_id, edge_node_id, name) VALUES (%s, %s, %s)"
                    " ON CONFLICT (site_id, edge_node_id) DO UPDATE SET name = excluded.name",
                    [site.id, line.id, line.name or None],
                )
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
                "INSERT INTO oee_site_config (site_id, tz, calendar, state_classes, source) VALUES (%s, %s, %s, %s, 'seeds')"
                " ON CONFLICT (site_id) DO UPDATE SET tz = excluded.tz, calendar = excluded.calendar,"
                " state_classes = excluded.state_classes"
                " WHERE oee_site_config.source = 'seeds' RETURNING site_id",
                [site.id, site.timezone, _json(site.calendar.model_dump(mode="json")),
                 _json(site.state_classes.model_dump(mode="json"))],
            ).fetchone()
            kept += row is None
    return SeedCounts(len(scenario.sites), lines, machines, kept)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
