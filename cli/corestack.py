"""CLI of the CoRE Stack area: ``watersheds publish|join`` and ``corestack import``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from tessera_stac.cli import scale as cli_scale
from tessera_stac.cli.common import (
    ENGINE_OPTION,
    JSON_OPTION,
    SCHEDULER_OPTION,
    WORKERS_OPTION,
    emit,
)

OUT_OPTION = typer.Option(
    Path("published"),
    "--out",
    "-o",
    help="Catalog root folder (the one holding catalog.json and the embedding collection).",
)
S3_OPTION = typer.Option(
    None, "--s3", help="Also upload the same keys under s3://bucket/prefix (TESSERA_STAC_S3_*)."
)

watersheds_app = typer.Typer(
    help="CoRE Stack micro-watershed (MWS) layers: publish, and join to the embeddings.",
    no_args_is_help=True,
)
corestack_app = typer.Typer(help="CoRE Stack's own STAC catalogs.", no_args_is_help=True)


@watersheds_app.command("publish")
def publish_cmd(
    file: Path = typer.Argument(
        ..., help="MWS layer: GeoJSON (WFS output), GeoPackage, shapefile or GeoParquet."
    ),
    state: str = typer.Option(..., "--state", help="State name, e.g. 'Gujarat'."),
    district: str = typer.Option(..., "--district", help="District name, e.g. 'Bhavnagar'."),
    block: str = typer.Option(..., "--block", help="Block (tehsil) name, e.g. 'Bhavnagar'."),
    out: Path = OUT_OPTION,
    s3: str | None = S3_OPTION,
    drop_empty: bool = typer.Option(
        False, "--drop-empty", help="Drop MWS with an empty geometry (warned) instead of failing."
    ),
    valid_years: str | None = typer.Option(
        None,
        "--valid-years",
        help="Years the layer is valid for, e.g. 2017-2025: the item's start/end_datetime "
        "(default: the TESSERA years, 2017 to this year).",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Publish an MWS layer as GeoParquet + GeoJSON and a STAC item in `corestack-mws`.

    The item's time is the years it is valid for (so a year-filtered search finds it beside
    that year's embeddings); the publication time is its `created`/`updated`.

    Example: tessera-stac watersheds publish mws.geojson --state Gujarat --district Bhavnagar
    --block Bhavnagar --out published
    """
    from tessera_stac.catalog.args import parse_years
    from tessera_stac.publisher.watersheds.layer import BlockName, publish_mws_layer

    years = parse_years(valid_years, what="--valid-years") if valid_years else None
    result = publish_mws_layer(
        file,
        BlockName(state, district, block),
        out,
        now=datetime.now(UTC),
        valid_years=(years[0], years[-1]) if years else None,
        drop_empty=drop_empty,
        s3_url=s3,
    )
    for line in result.warnings:
        typer.echo(f"warning: {line}", err=True)
    data = {
        "item_id": result.item_id,
        "item": str(result.item_path),
        "collection": str(result.collection_path),
        "mws": result.row_count,
        "warnings": list(result.warnings),
        "s3_keys": list(result.s3_keys),
    }
    emit(data, as_json, f"published {result.row_count} MWS as {result.item_path}")


@watersheds_app.command("join")
def join_cmd(
    year: int = typer.Option(..., "--year", help="Year of the embeddings."),
    file: Path | None = typer.Argument(
        None, help="An MWS layer file (instead of --mws): GeoJSON, GeoPackage, shapefile, Parquet."
    ),
    mws: str | None = typer.Option(
        None,
        "--mws",
        help="Id of a published corestack-mws item, e.g. gujarat_bhavnagar_bhavnagar_mws.",
    ),
    out: Path = OUT_OPTION,
    tiles: Path | None = typer.Option(
        None, "--tiles", help="Catalog root holding the embedding items (default: --out)."
    ),
    stac_url: str | None = typer.Option(
        None, "--stac-url", help="Find the embedding items through this STAC API instead."
    ),
    collection: str | None = typer.Option(
        None, "--collection", help="Embedding collection to read when several are published."
    ),
    csv: bool = typer.Option(False, "--csv", help="Also write the table as CSV."),
    engine: str = ENGINE_OPTION,
    scheduler: str | None = SCHEDULER_OPTION,
    workers: int | None = WORKERS_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Mean embedding vector per micro-watershed for one year (GeoParquet + STAC item + map).

    Example: tessera-stac watersheds join --year 2024 --mws gujarat_bhavnagar_bhavnagar_mws
    """
    from tessera_stac.catalog.errors import InputError
    from tessera_stac.cli.common import progress
    from tessera_stac.publisher.join.join import (
        cells_covering,
        find_tiles_api,
        find_tiles_local,
        mws_source,
        write_join,
    )

    if (file is None) == (mws is None):
        raise InputError("give either an MWS layer FILE or --mws ITEM-ID (exactly one)")
    mws_item, mws_href, layer = mws_source(out, mws, file)
    if stac_url and tiles:
        raise InputError("give --tiles or --stac-url, not both")
    if stac_url:
        found = find_tiles_api(stac_url, year, layer.bbox, collection)
    else:
        found = find_tiles_local(tiles or out, year, cells_covering(layer.bbox), collection)
    bar = progress(len(found), f"join {year}")
    try:
        result = cli_scale.run_join(
            engine, scheduler, workers, layer.frame, found, year, lambda _t: bar.update(1)
        )
    finally:
        bar.close()
    written = write_join(result, out, mws_item, mws_href, datetime.now(UTC), csv=csv)
    flags = result.table["flag"].value_counts().to_dict()
    data = {
        "item_id": written.item_id,
        "item": str(written.item_path),
        "parquet": str(written.parquet),
        "csv": str(written.csv) if written.csv else None,
        "map": str(written.map_png),
        "tiles_read": len(result.tiles),
        "missing_cells": list(result.missing_cells),
        "mws": len(result.table),
        "flags": flags,
    }
    emit(
        data,
        as_json,
        (
            f"joined {len(result.table)} MWS with {len(result.tiles)} tiles of {year}: {flags}\n"
            f"wrote {written.item_path}"
        ),
    )


@watersheds_app.command("classes")
def classes_cmd(
    mws: str = typer.Option(
        ...,
        "--mws",
        help="Id of a published corestack-mws item, e.g. gujarat_bhavnagar_bhavnagar_mws.",
    ),
    model: str = typer.Option(..., "--model", help="Name of the head whose class maps to read."),
    year: int | None = typer.Option(None, "--year", help="Year of the class maps."),
    year_from: int | None = typer.Option(
        None, "--from", help="First year (with --to): a table per year and the change."
    ),
    year_to: int | None = typer.Option(None, "--to", help="Last year (with --from)."),
    out: Path = OUT_OPTION,
    tiles: Path | None = typer.Option(
        None, "--tiles", help="Catalog root holding the class maps (default: --out)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Hectares and percent of each class per micro-watershed (GeoParquet + CSV + STAC item).

    With --from/--to: one table per year, the change per class in hectares, and the yearly
    series as JSON in CoRE Stack's `annual` shape.

    Example: tessera-stac watersheds classes --mws gujarat_bhavnagar_bhavnagar_mws
    --model landcover --year 2024
    """
    from tessera_stac.catalog.errors import InputError
    from tessera_stac.cli.common import progress
    from tessera_stac.publisher.classify.watersheds import (
        MAX_YEARS,
        classes_per_watershed,
        write_classes,
    )
    from tessera_stac.publisher.join.join import mws_source

    if year is not None and (year_from is not None or year_to is not None):
        raise InputError("give --year or --from/--to, not both")
    if year is not None:
        years = [year]
    elif year_from is not None and year_to is not None:
        if not year_from < year_to or year_to - year_from >= MAX_YEARS:
            raise InputError(
                f"--from {year_from} --to {year_to}: need from < to, at most {MAX_YEARS} years"
            )
        years = list(range(year_from, year_to + 1))
    else:
        raise InputError("give --year, or both --from and --to")
    mws_item, mws_href, layer = mws_source(out, mws, None)
    bar = progress(len(years), f"classes {years[0]}-{years[-1]}")
    try:
        results = classes_per_watershed(out, model, years, mws_item, layer.frame, tiles_root=tiles)
    finally:
        bar.close()
    written = write_classes(results, out, mws_item, mws_href, datetime.now(UTC))
    last = written[-1]
    data = {
        "items": [w.item_id for w in written],
        "item": str(last.item_path),
        "parquet": str(last.parquet),
        "csv": str(last.csv),
        "annual": str(last.annual) if last.annual else None,
        "years": [r.year for r in results],
        "classes": [c.name for c in results[0].classes],
        "mws": len(results[0].table),
        "tiles_read": sum(len(r.tiles) for r in results),
        "missing_cells": sorted({c for r in results for c in r.missing_cells}),
    }
    emit(
        data,
        as_json,
        f"{len(results[0].table)} MWS x {len(results[0].classes)} classes of {model}, "
        f"{years[0]}-{years[-1]}\nwrote {last.item_path}",
    )


@corestack_app.command("import")
def import_cmd(
    source: str = typer.Argument(
        ..., help="CoRE Stack static catalog: a folder, its catalog.json, or an http(s) URL."
    ),
    out: Path = OUT_OPTION,
    strict: bool = typer.Option(
        False, "--strict", help="Exit 1 when any document had to be skipped."
    ),
    load_db: bool = typer.Option(
        False, "--load", help="Also load the imported collections into pgSTAC (TESSERA_STAC_*)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Import a CoRE Stack static catalog: one collection per block, defects repaired/listed.

    Example: tessera-stac corestack import ./CorestackCatalogs --out published
    """
    from tessera_stac.publisher.watersheds.corestack import read_corestack_catalog, write_import

    result = write_import(read_corestack_catalog(source), out)
    skipped = [d for d in result.defects if d.action == "skipped"]
    loaded = 0
    if load_db:
        from tessera_stac.catalog.pgstac.cluster import resolve_dsn
        from tessera_stac.catalog.pgstac.load import load
        from tessera_stac.catalog.settings import DatabaseSettings

        dsn = resolve_dsn(DatabaseSettings())
        loaded = sum(load(dsn, str(path)).items for path in result.written)
    collections = [str(c["id"]) for c in result.collections]
    data = {
        "source": result.source,
        "collections": collections,
        "items": len(result.items),
        "written": [str(p) for p in result.written],
        "loaded_items": loaded,
        "defects": [d.as_dict() for d in result.defects],
    }
    lines = [
        f"imported {len(result.items)} items into {len(result.collections)} collections "
        f"under {out}: {', '.join(collections)}",
        f"{len(result.defects)} defects ({len(skipped)} documents skipped):",
        *(
            f"  {d.action:8} {d.kind:24} {d.object_id or d.source}: {d.detail}"
            for d in result.defects
        ),
    ]
    emit(data, as_json, "\n".join(lines))
    if strict and skipped:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root CLI."""
    app.add_typer(watersheds_app, name="watersheds")
    app.add_typer(corestack_app, name="corestack")
