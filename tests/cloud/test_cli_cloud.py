"""`zhizao cloud migrate` and `zhizao cloud token create|list|revoke` through click's CliRunner."""

from __future__ import annotations

import hashlib
import re

import psycopg
from click.testing import CliRunner

from zhizao.cli import cli


def test_migrate_then_token_lifecycle(fresh_database: str) -> None:
    runner = CliRunner()
    env = {"ZHIZAO_DATABASE_URL": fresh_database}
    r = runner.invoke(cli, ["cloud", "migrate"], env=env)
    assert r.exit_code == 0, r.output
    assert "0002_api.sql" in r.output
    assert re.search(r"storage: (PostgreSQL \d+\.\d+ \(plain|TimescaleDB \S+ on PostgreSQL \d+)", r.output), r.output
    again = runner.invoke(cli, ["cloud", "migrate"], env=env)
    assert "nothing (up to date)" in again.output

    r = runner.invoke(cli, ["cloud", "token", "create", "--role", "operator", "--sites", "site-a,site-b",
                            "--name", "shift lead"], env=env)
    assert r.exit_code != 0 and "'site-a', 'site-b' is not a site of this database" in r.output, r.output
    assert "zhizao cloud seed FILE" in r.output
    with psycopg.connect(fresh_database) as conn:
        conn.execute("INSERT INTO sites (site_id, name) VALUES ('site-a', 'A'), ('site-b', 'B')")
    r = runner.invoke(cli, ["cloud", "token", "create", "--role", "operator", "--sites", "site-a,site-b",
                            "--name", "shift lead"], env=env)
    assert r.exit_code == 0, r.output
    token = r.stdout.strip()
    assert token.startswith("zz_") and "\n" not in token
    assert "shown only now" in r.stderr
    with psycopg.connect(fresh_database) as conn:
        row = conn.execute("SELECT name, role, sites, token_hash FROM api_tokens").fetchone()
    assert row is not None
    assert row[:3] == ("shift lead", "operator", ["site-a", "site-b"])
    assert bytes(row[3]) == hashlib.sha256(token.encode()).digest()

    listed = runner.invoke(cli, ["cloud", "token", "list"], env=env)
    assert listed.exit_code == 0 and "shift lead\toperator\tsite-a,site-b" in listed.output
    assert token not in listed.output
    token_id = listed.output.split("\t", 1)[0]
    r = runner.invoke(cli, ["cloud", "token", "revoke", token_id], env=env)
    assert r.exit_code == 0 and f"revoked token {token_id}" in r.output
    r = runner.invoke(cli, ["cloud", "token", "revoke", token_id], env=env)
    assert r.exit_code == 1 and f"token_id={token_id}: no active token" in r.output


def test_token_create_all_sites_and_option_url(fresh_database: str) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["cloud", "migrate", "--database-url", fresh_database]).exit_code == 0
    r = runner.invoke(cli, ["cloud", "token", "create", "--role", "admin", "--sites", "*",
                            "--database-url", fresh_database])
    assert r.exit_code == 0, r.output
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT name, sites FROM api_tokens").fetchone() == ("admin@*", None)


def test_token_create_errors_name_the_problem(fresh_database: str) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["cloud", "token", "create", "--role", "root", "--sites", "*"],
                      env={"ZHIZAO_DATABASE_URL": fresh_database})
    assert r.exit_code == 2 and "'root' is not one of" in r.output
    r = runner.invoke(cli, ["cloud", "token", "create", "--role", "viewer", "--sites", "Bad Site"],
                      env={"ZHIZAO_DATABASE_URL": fresh_database})
    assert r.exit_code == 1 and "sites: 'Bad Site' is not a site id" in r.output
    r = runner.invoke(cli, ["cloud", "token", "create", "--role", "viewer", "--sites", "*"],
                      env={"ZHIZAO_DATABASE_URL": ""})
    assert r.exit_code == 1 and "ZHIZAO_DATABASE_URL is not set" in r.output
    r = runner.invoke(cli, ["cloud", "migrate"], env={"ZHIZAO_DATABASE_URL": fresh_database,
                                                     "ZHIZAO_API_PORT": "eighty"})
    assert r.exit_code == 1 and "ZHIZAO_API_PORT='eighty'" in r.output


def test_cloud_commands_find_the_database_of_a_running_demo(tmp_path, fresh_database: str) -> None:  # type: ignore[no-untyped-def]
    """The demo leaves its private database's URL in the data dir; `token create` uses it without flags."""
    from zhizao.cloud.settings import DATABASE_URL_FILE

    runner = CliRunner()
    env = {"ZHIZAO_DATA_DIR": str(tmp_path), "ZHIZAO_DATABASE_URL": ""}
    r = runner.invoke(cli, ["cloud", "token", "create", "--role", "viewer", "--sites", "*"], env=env)
    assert r.exit_code != 0 and "running `zhizao demo`" in r.output, r.output
    assert runner.invoke(cli, ["cloud", "migrate", "--database-url", fresh_database]).exit_code == 0
    (tmp_path / DATABASE_URL_FILE).write_text(fresh_database + "\n")
    r = runner.invoke(cli, ["cloud", "token", "create", "--role", "viewer", "--sites", "*"], env=env)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().startswith("zz_") and "using the database of the demo" in r.stderr


def test_token_create_cluster_planner(fresh_database: str) -> None:
    """The planning docs' first step: a cluster-planner token from the command line."""
    runner = CliRunner()
    assert runner.invoke(cli, ["cloud", "migrate", "--database-url", fresh_database]).exit_code == 0
    r = runner.invoke(cli, ["cloud", "token", "create", "--role", "cluster-planner", "--sites", "*",
                            "--database-url", fresh_database])
    assert r.exit_code == 0, r.output
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT name, role, sites FROM api_tokens").fetchone() == (
            "cluster-planner@*", "cluster-planner", None)
