"""`zhizao cloud ...`: serve the cloud, apply migrations, create/list/revoke API tokens."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from zhizao.cloud.auth import (
    AuthError,
    Role,
    create_token,
    known_sites,
    list_tokens,
    parse_duration,
    revoke_token,
    rotate_token,
    unknown_sites,
)
from zhizao.cloud.settings import DATABASE_URL_FILE, CloudSettings, SettingsError
from zhizao.cloud.storage.db import StorageError

F = TypeVar("F", bound=Callable[..., Any])


def _settings(**overrides: Any) -> CloudSettings:
    try:
        return CloudSettings.from_env(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _database_option(func: F) -> F:
    return click.option(
        "--database-url", envvar="ZHIZAO_DATABASE_URL", metavar="URL",
        help="PostgreSQL URL (default: $ZHIZAO_DATABASE_URL).",
    )(func)


def _database_url(database_url: str | None) -> str:
    """--database-url, else ZHIZAO_DATABASE_URL, else the database of a `zhizao demo` running in the data dir."""
    settings = _settings(database_url=database_url)
    if not settings.database_url:
        handoff = settings.data_dir / DATABASE_URL_FILE
        if handoff.is_file():
            click.echo(f"using the database of the demo running in {settings.data_dir}", err=True)
            return handoff.read_text().strip()
    try:
        return settings.require_database_url()
    except SettingsError as exc:
        raise click.ClickException(f"{exc} (or run this beside a running `zhizao demo`)") from None


@click.group()
def cloud() -> None:
    """Run the cloud service and manage its tokens and database (configured from ZHIZAO_* variables)."""


@cloud.command()
@_database_option
@click.option("--host", "api_host", metavar="HOST", help="Listen address (default $ZHIZAO_API_HOST or 127.0.0.1).")
@click.option("--port", "api_port", type=int, metavar="PORT", help="Listen port (default $ZHIZAO_API_PORT or 8080).")
@click.option("--no-ingest", is_flag=True, help="Serve the API only (ingest runs in other workers).")
@click.option("--shared-subscription/--no-shared-subscription", "shared", default=None,
              help="One of several ingest workers sharing DATA through $share/zhizao-ingest/... (sessions and acks"
                   " in PostgreSQL, one owner per site); default $ZHIZAO_INGEST_SHARED_SUBSCRIPTION or off.")
@click.option("--sites", metavar="a,b", default=None,
              help="Only these sites (groups) in this worker (default $ZHIZAO_INGEST_SITES or all).")
def serve(database_url: str | None, api_host: str | None, api_port: int | None, no_ingest: bool,
          shared: bool | None, sites: str | None) -> None:  # fmt: skip
    """Run the API and the ingest in one process until SIGINT/SIGTERM."""
    from zhizao.cloud.service import CloudService

    settings = _settings(database_url=database_url, api_host=api_host, api_port=api_port,
                         ingest_shared_subscription=shared, ingest_sites=sites)  # fmt: skip
    try:
        service = CloudService(settings, ingest=not no_ingest)
        service.run()
    except (SettingsError, StorageError) as exc:
        raise click.ClickException(str(exc)) from None


@cloud.command()
@_database_option
def migrate(database_url: str | None) -> None:
    """Apply pending database migrations and set up TimescaleDB or plain-PostgreSQL storage."""
    from zhizao.cloud.storage.migrate import apply_migrations

    settings = _settings(database_url=database_url)
    try:
        info = apply_migrations(_database_url(database_url), horizons=settings.horizons())
    except (SettingsError, StorageError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"storage: {info.kind}")
    click.echo(f"applied: {', '.join(info.applied) if info.applied else 'nothing (up to date)'}")


@cloud.command()
@_database_option
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def seed(ctx: click.Context, database_url: str | None, file: Path | None) -> None:
    """Write the sites, lines, machines and calendars of a scenario FILE (e.g. seeds/cluster.yaml); idempotent."""
    if file is None:
        raise click.UsageError("give a scenario file, e.g. `zhizao cloud seed seeds/cluster.yaml`", ctx)
    from zhizao.cloud.seed import seed_database
    from zhizao.cloud.storage.migrate import apply_migrations
    from zhizao.seeds import ScenarioError, load_scenario

    try:
        scenario = load_scenario(file)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from None
    settings = _settings(database_url=database_url)
    url = _database_url(database_url)
    try:
        apply_migrations(url, horizons=settings.horizons())
        counts = seed_database(url, scenario)
        network = _seed_network(url, file, scenario)
    except (SettingsError, StorageError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"seeded {scenario.name}: {counts.sites} sites, {counts.lines} lines, {counts.machines} machines")
    if network:
        click.echo(f"seeded the manufacturing network ({network})")
    if counts.calendars_kept:
        click.echo(f"kept {counts.calendars_kept} calendars edited through the API", err=True)
    click.echo("next: `zhizao cloud serve`, then `zhizao cloud token create --role admin --sites '*'`", err=True)


@cloud.group()
def token() -> None:
    """API bearer tokens: each has a role and a set of sites; only its hash is stored."""


@token.command("create")
@_database_option
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]),
              help="What the token may do; each role includes the ones before it.")
@click.option("--sites", required=True, metavar="a,b|*", help="Comma-separated site ids, or * for every site.")
@click.option("--name", default=None, metavar="NAME", help="Who or what uses it (default: ROLE@SITES).")
@click.option("--expires-in", default=None, metavar="DURATION",
              help="Lifetime: seconds or 30m, 12h, 90d, 2w (default: never expires).")
def token_create(database_url: str | None, role: str, sites: str, name: str | None, expires_in: str | None) -> None:
    """Create a token and print it once (it cannot be shown again)."""
    url = _database_url(database_url)
    try:
        lifetime = None if expires_in is None else parse_duration(expires_in, "--expires-in")
        unknown = unknown_sites(url, sites)
        if unknown:
            raise click.ClickException(
                f"--sites {sites!r}: {', '.join(map(repr, unknown))} is not a site of this database"
                f" ({', '.join(known_sites(url)) or 'none yet: run `zhizao cloud seed FILE`'})")  # fmt: skip
        value = create_token(url, role, sites, name or f"{role}@{sites}", expires_in_s=lifetime)
    except (AuthError, StorageError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(value)
    until = "never expires" if lifetime is None else f"expires in {expires_in}"
    click.echo(f"role {role}, sites {sites}, {until}. Use it as 'Authorization: Bearer <token>'; it is shown only now.",
               err=True)  # fmt: skip


@token.command("list")
@_database_option
def token_list(database_url: str | None) -> None:
    """List tokens (id, name, role, sites, state); never the tokens themselves."""
    try:
        rows = list_tokens(_database_url(database_url))
    except StorageError as exc:
        raise click.ClickException(str(exc)) from None
    now = datetime.now(UTC)
    for t in rows:
        state = t.state(now)
        if state in ("active", "rotated") and t.expires_at is not None:
            state += f" until {t.expires_at.astimezone(UTC).isoformat(timespec='seconds')}"
        if t.replaced_by is not None:
            state += f" (replaced by {t.replaced_by})"
        sites = "*" if t.sites is None else ",".join(t.sites)
        click.echo(f"{t.token_id}\t{t.name}\t{t.role.value}\t{sites}\t{t.prefix}...\t{state}")


@token.command("rotate")
@_database_option
@click.argument("token_id", type=int)
@click.option("--grace", default="1h", show_default=True, metavar="DURATION",
              help="How long the old token keeps working (0 .. 30d).")
@click.option("--expires-in", default=None, metavar="DURATION",
              help="The new token's lifetime (default: the old token's own; never if it had none).")
def token_rotate(database_url: str | None, token_id: int, grace: str, expires_in: str | None) -> None:
    """Issue a new token with the same name, role and sites, print it once; the old one expires after --grace."""
    try:
        grace_s = parse_duration(grace, "--grace")
        lifetime = None if expires_in is None else parse_duration(expires_in, "--expires-in")
        rotation = rotate_token(_database_url(database_url), token_id, grace_s=grace_s, expires_in_s=lifetime)
    except (AuthError, StorageError) as exc:
        raise click.ClickException(str(exc)) from None
    if rotation is None:
        raise click.ClickException(f"token_id={token_id}: no valid token with this id (revoked, expired or unknown)")
    click.echo(rotation.token)
    old_until = rotation.old_valid_until.isoformat(timespec="seconds") if rotation.old_valid_until else "?"
    new_until = rotation.expires_at.isoformat(timespec="seconds") if rotation.expires_at else "never"
    click.echo(f"token {rotation.new_id} replaces {token_id}, which works until {old_until}; the new one expires: "
               f"{new_until}. It is shown only now.", err=True)  # fmt: skip


@token.command("revoke")
@_database_option
@click.argument("token_id", type=int)
def token_revoke(database_url: str | None, token_id: int) -> None:
    """Revoke a token by id (see `token list`)."""
    try:
        done = revoke_token(_database_url(database_url), token_id)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from None
    if not done:
        raise click.ClickException(f"token_id={token_id}: no active token with this id")
    click.echo(f"revoked token {token_id}")


def _seed_network(url: str, scenario_file: Path, scenario: Any) -> str:
    """Seed `network.yaml` beside the scenario file when it names this scenario (planning, issue 14)."""
    from zhizao.cloud.planning.network import seed_network_beside
    from zhizao.seeds import ScenarioError

    try:
        return seed_network_beside(url, scenario_file, scenario)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from None
