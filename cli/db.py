"""``tessera-stac db ...``: the project-local PostgreSQL + PostGIS + pgSTAC database."""

from __future__ import annotations

import typer

from tessera_stac.catalog.pgstac.cluster import (
    LocalCluster,
    installed_pgstac_version,
    is_external,
    migrate,
    redact,
    resolve_dsn,
)
from tessera_stac.catalog.settings import DatabaseSettings
from tessera_stac.cli.common import JSON_OPTION, emit

db_app = typer.Typer(
    help="Run the project-local pgSTAC database (or point at an external one).",
    no_args_is_help=True,
)


def _cluster(settings: DatabaseSettings) -> LocalCluster:
    return LocalCluster(settings.home, port=settings.db_port, dbname=settings.db_name)


@db_app.command("init")
def init_cmd(as_json: bool = JSON_OPTION) -> None:
    """Create the local cluster (or migrate the external database) and start it."""
    settings = DatabaseSettings()
    if is_external(settings):
        dsn = resolve_dsn(settings)
        version = migrate(dsn)
        emit(
            {"external": True, "pgstac_version": version},
            as_json,
            f"external database {redact(dsn)}: pgSTAC {version}",
        )
        return
    cluster = _cluster(settings)
    created = cluster.init()
    info = cluster.status()
    emit(
        info,
        as_json,
        f"{'created' if created else 'already initialised'}: "
        f"{info['home']} on port {info['port']}, pgSTAC {info.get('pgstac_version')}",
    )


@db_app.command("start")
def start_cmd(as_json: bool = JSON_OPTION) -> None:
    """Start the local database (initialising it on first use); no-op when running."""
    settings = DatabaseSettings()
    if is_external(settings):
        emit({"external": True}, as_json, "external database configured: nothing to start")
        return
    cluster = _cluster(settings)
    started = cluster.start()
    info = cluster.status()
    emit(
        {**info, "started": started},
        as_json,
        f"{'started' if started else 'already running'} on port {info['port']}",
    )


@db_app.command("stop")
def stop_cmd(as_json: bool = JSON_OPTION) -> None:
    """Stop the local database (data is kept); no-op when stopped."""
    settings = DatabaseSettings()
    if is_external(settings):
        emit({"external": True}, as_json, "external database configured: nothing to stop")
        return
    stopped = _cluster(settings).stop()
    emit({"stopped": stopped}, as_json, "stopped" if stopped else "not running")


@db_app.command("status")
def status_cmd(as_json: bool = JSON_OPTION) -> None:
    """Say whether the database is initialised and running (exit 1 when not running)."""
    settings = DatabaseSettings()
    if is_external(settings):
        dsn = resolve_dsn(settings)
        version = installed_pgstac_version(dsn)
        info = {
            "external": True,
            "url": redact(dsn),
            "running": version is not None,
            "pgstac_version": version,
        }
    else:
        info = _cluster(settings).status()
        info["url"] = redact(str(info["url"])) if "url" in info else None
    text = "running" if info["running"] else "stopped"
    if info.get("pgstac_version"):
        text += f" (pgSTAC {info['pgstac_version']})"
    emit(info, as_json, text)
    if not info["running"]:
        raise typer.Exit(1)


@db_app.command("url")
def url_cmd() -> None:
    """Print the database URL (libpq DSN), for `psql "$(tessera-stac db url)"`."""
    typer.echo(resolve_dsn(DatabaseSettings()))


def register(app: typer.Typer) -> None:
    """Attach the ``db`` group to the root CLI."""
    app.add_typer(db_app, name="db")
