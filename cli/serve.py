"""``tessera-stac load SOURCE`` (STAC into pgSTAC) and ``tessera-stac serve`` (the STAC API)."""

from __future__ import annotations

from pathlib import Path

import typer

from tessera_stac.cli.common import JSON_OPTION, emit, progress


def load_cmd(
    source: str = typer.Argument(
        ...,
        help="A static catalog (catalog.json/collection.json, a folder holding one, or an "
        "http(s) URL) or NDJSON of collections and items.",
    ),
    method: str = typer.Option(
        "upsert",
        "--method",
        help="upsert (replace changed items), delsert (delete then insert), or insert_ignore "
        "(keep items already loaded).",
    ),
    base_url: str | None = typer.Option(
        None,
        "--base-url",
        help="Public URL the catalog's folder is served at (e.g. http://host:8080/data): "
        "asset hrefs inside the folder are rewritten to it. Without it, local paths are "
        "stored, and the API never shows them: it serves them through its own /data route "
        "when the folder is its --data-dir, and withholds them otherwise.",
    ),
    partition: str = typer.Option(
        "year", "--partition", help="Partition items of the loaded collections by year|month|none."
    ),
    batch_size: int = typer.Option(
        0,
        "--batch-size",
        help="Commit every N items (each batch all-or-nothing). 0: one transaction for all.",
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="Hide the progress bar."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Load collections, then items, into pgSTAC (idempotent: re-running changes nothing).

    Example: tessera-stac load out/catalog.json --base-url http://localhost:8080/data
    """
    from tessera_stac.catalog.errors import InputError
    from tessera_stac.catalog.pgstac.cluster import resolve_dsn
    from tessera_stac.catalog.pgstac.load import LoadMethod, load
    from tessera_stac.catalog.settings import DatabaseSettings

    try:
        load_method = LoadMethod(method)
    except ValueError:
        raise InputError(
            f"--method {method!r}: choose one of {', '.join(m.value for m in LoadMethod)}"
        ) from None
    if partition not in ("year", "month", "none"):
        raise InputError(f"--partition {partition!r}: choose year, month or none")
    if "://" not in source and not Path(source).exists():
        raise InputError(f"{source}: no such file or folder to load")
    dsn = resolve_dsn(DatabaseSettings())
    bar = progress(None, "items", disable=no_progress)

    def set_total(total: int | None) -> None:
        bar.total = total
        bar.refresh()

    try:
        report = load(
            dsn,
            source,
            method=load_method,
            base_url=base_url,
            partition_trunc=None if partition == "none" else partition,
            batch_size=batch_size or None,
            on_item=bar.update,
            on_total=set_total,
        )
    finally:
        bar.close()
    emit(
        {
            "collections": report.collections,
            "items": report.items,
            "batches": report.batches,
            "queryables": report.queryables,
        },
        as_json,
        f"loaded {len(report.collections)} collection(s) and {report.items} item(s)"
        + (f"; queryables registered: {', '.join(report.queryables)}" if report.queryables else ""),
    )


def serve_cmd(
    host: str | None = typer.Option(None, "--host", help="Interface (default 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="Port (default 8080)."),
    workers: int | None = typer.Option(None, "--workers", help="Worker processes (default 1)."),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Serve published files from this folder under /data."
    ),
    reload: bool = typer.Option(False, "--reload", help="Reload on code changes (development)."),
) -> None:
    """Serve the STAC API (stac-fastapi-pgstac + embedding routes) with uvicorn.

    Settings come from TESSERA_STAC_API_* variables (see docs/api.md); options override them.
    Example: tessera-stac serve --port 8080 --data-dir out/
    """
    import os

    import uvicorn

    from tessera_stac.api.settings import ApiSettings

    if data_dir is not None:
        os.environ["TESSERA_STAC_API_DATA_DIR"] = str(data_dir.absolute())
    settings = ApiSettings()
    uvicorn.run(
        "tessera_stac.api.app:create_app_from_env",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        reload=reload,
        log_level="info",
        proxy_headers=True,
    )


def register(app: typer.Typer) -> None:
    """Attach ``load`` and ``serve`` to the root CLI."""
    app.command("load")(load_cmd)
    app.command("serve")(serve_cmd)
