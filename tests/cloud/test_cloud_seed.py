"""The cloud seeds nothing by itself; `zhizao cloud seed FILE` writes a scenario's rows, idempotently."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import yaml
from click.testing import CliRunner

from zhizao.cli import cli
from zhizao.cloud.auth import create_token
from zhizao.cloud.service import CloudService
from zhizao.cloud.settings import CloudSettings
from zhizao.seeds import SEEDS_DIR, load_scenario


def _rows(url: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(url) as conn:
        return {
            "sites": conn.execute("SELECT site_id, name, tz FROM sites ORDER BY 1").fetchall(),
            "lines": conn.execute("SELECT site_id, edge_node_id, name FROM edge_nodes ORDER BY 1, 2").fetchall(),
            "machines": conn.execute("SELECT site_id, line_id, machine_id, name, ideal_rate_per_min FROM machines"
                                     " ORDER BY 1, 2, 3").fetchall(),
            "calendars": conn.execute("SELECT site_id, source FROM oee_site_config ORDER BY 1").fetchall(),
        }


def test_serve_seeds_nothing_and_seed_writes_the_scenario(fresh_database: str, tmp_path: Path) -> None:
    service = CloudService(CloudSettings(database_url=fresh_database, api_port=0), ingest=False, warm_up=False)
    url = service.start_in_thread()
    try:
        token = create_token(fresh_database, "engineer", "*", "seed-test")
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as api:
            assert api.get("/api/v1/sites").json() == []
            assert _rows(fresh_database) == {"sites": [], "lines": [], "machines": [], "calendars": []}

            runner = CliRunner()
            env = {"ZHIZAO_DATABASE_URL": fresh_database}
            usage = runner.invoke(cli, ["cloud", "seed"], env=env)
            assert usage.exit_code == 2 and "Usage: " in usage.output and "seeds/cluster.yaml" in usage.output

            r = runner.invoke(cli, ["cloud", "seed", str(SEEDS_DIR / "cluster.yaml")], env=env)
            assert r.exit_code == 0, r.output
            scenario = load_scenario()
            rows = _rows(fresh_database)
            assert rows["sites"] == [(s.id, s.name, s.timezone) for s in sorted(scenario.sites, key=lambda s: s.id)]
            expected = sorted((s.id, ln.id, m.id, m.name or None, m.ideal_rate_per_min)
                              for s in scenario.sites for ln in s.lines for m in ln.machines)
            assert rows["machines"] == expected
            assert len(rows["lines"]) == sum(len(s.lines) for s in scenario.sites)
            assert rows["calendars"] == [(s.id, "seeds") for s in sorted(scenario.sites, key=lambda s: s.id)]
            assert f"{len(scenario.sites)} sites" in r.stdout

            site = scenario.sites[0]
            assert [s["site_id"] for s in api.get("/api/v1/sites").json()] == sorted(s.id for s in scenario.sites)
            calendar = api.get(f"/api/v1/sites/{site.id}/calendar").json()
            assert calendar["source"] == "seeds" and calendar["timezone"] == site.timezone
            assert [s["name"] for s in calendar["shifts"]] == [s.name for s in site.calendar.shifts]
            machine = site.lines[0].machines[0]
            got = api.get(f"/api/v1/sites/{site.id}/machines/{machine.id}").json()
            assert (got["line_id"], got["ideal_rate_per_min"], got["online"]) == (site.lines[0].id,
                                                                                   machine.ideal_rate_per_min, False)

            # An engineer's calendar edit survives a re-seed; everything else is unchanged (idempotent).
            edit = {"shifts": [{"name": "day", "start": "06:00", "hours": 12}]}
            assert api.put(f"/api/v1/sites/{site.id}/calendar", json=edit).status_code == 200
            again = runner.invoke(cli, ["cloud", "seed", str(SEEDS_DIR / "cluster.yaml")], env=env)
            assert again.exit_code == 0 and "kept 1 calendars edited through the API" in again.stderr, again.output
            after = _rows(fresh_database)
            assert after["calendars"] == [(s, "api" if s == site.id else src) for s, src in rows["calendars"]]
            assert {k: v for k, v in after.items() if k != "calendars"} == {k: v for k, v in rows.items() if k != "calendars"}
    finally:
        service.stop()

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "Bad Name", "sites": []}))
    r = CliRunner().invoke(cli, ["cloud", "seed", str(bad)], env={"ZHIZAO_DATABASE_URL": fresh_database})
    assert r.exit_code == 1 and "name: 'Bad Name' not a valid id" in r.output, r.output
