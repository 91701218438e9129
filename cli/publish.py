"""``tessera-stac publish SOURCE DEST``, ``tessera-stac sample tiles DEST`` and ``sample mws``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tessera_stac.catalog.args import parse_bbox, parse_years
from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.model import GridCell
from tessera_stac.cli.common import (
    ENGINE_OPTION,
    JSON_OPTION,
    SCHEDULER_OPTION,
    WORKERS_OPTION,
    emit,
    progress,
)
from tessera_stac.publisher.engines.local import open_engine

sample_app = typer.Typer(
    help="Generate sample data (synthetic tiles, catalogues) for demos, tests and benchmarks.",
    no_args_is_help=True,
)


def _cells(bbox: str | None, grids: list[str] | None) -> list[GridCell]:
    from tessera_stac.publisher.samples.tiles import cells_in_bbox

    cells: list[GridCell] = []
    if bbox:
        cells.extend(cells_in_bbox(parse_bbox(bbox)))
    for name in grids or []:
        try:
            cells.append(GridCell.parse(name))
        except ValueError as exc:
            raise InputError(str(exc)) from exc
    if not cells:
        raise InputError("give --bbox W,S,E,N and/or --grid grid_X_Y")
    return list(dict.fromkeys(cells))


@sample_app.command("mws")
def sample_mws(
    dest: Path = typer.Argument(..., help="GeoJSON file to write (parent folders created)."),
    bbox: str = typer.Option(..., "--bbox", help="W,S,E,N in degrees: the area to partition."),
    district: str = typer.Option("district", "--district", help="District name (feature ids)."),
    block: str = typer.Option("block", "--block", help="Block (tehsil) name (feature ids)."),
    target_ha: float = typer.Option(1200.0, "--target-ha", help="Typical MWS area, hectares."),
    seed: int = typer.Option(7, "--seed", help="Random seed (same seed, same layer)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Generate a synthetic CoRE Stack micro-watershed (MWS) layer over a bbox.

    The layer looks like CoRE Stack's WFS output (EPSG:4326 MultiPolygons keyed by a string
    uid, ~1000 ha each, DEM-like edges); publish it with ``tessera-stac watersheds publish``.

    Example: ``tessera-stac sample mws tisri_mws.geojson --bbox 86.0,24.5,86.2,24.7
    --district giridih --block tisri``
    """
    from tessera_stac.publisher.samples.mws import MwsLayerSpec, write_mws_layer

    if target_ha <= 0:
        raise InputError(f"--target-ha must be positive, got {target_ha:g}")
    spec = MwsLayerSpec(
        bbox=parse_bbox(bbox), district=district, block=block, target_ha=target_ha, seed=seed
    )
    count = write_mws_layer(spec, dest)
    emit(
        {"path": str(dest), "mws": count, "bbox": list(spec.bbox), "seed": seed},
        as_json,
        f"wrote {count} micro-watersheds to {dest}",
    )


@sample_app.command("tiles")
def sample_tiles(
    dest: Path = typer.Argument(..., help="Folder to write the tiles into (created)."),
    bbox: str = typer.Option(None, "--bbox", help="W,S,E,N in degrees: every cell overlapping."),
    grid: list[str] = typer.Option(None, "--grid", help="Cell name(s), e.g. grid_0.15_52.05."),
    years: str = typer.Option("2024", "--years", help="2024, 2020,2024 or 2017-2025."),
    layout: str = typer.Option("geotessera", help="geotessera (local cache) or mirror."),
    zero_fraction: float = typer.Option(0.0, help="Share zero-filled (unprocessed) pixels."),
    sentinel_fraction: float = typer.Option(0.0, help="Share of huge-sentinel scales."),
    all_water: bool = typer.Option(False, "--all-water", help="Make every tile all water."),
    landmask: bool = typer.Option(True, "--landmask/--no-landmask", help="Write landmasks."),
    change: str = typer.Option(
        None, "--change", help="W,S,E,N where land changes on purpose in the later years."
    ),
    change_from: int = typer.Option(
        None, "--change-from", help="First year of that change (default: the last year)."
    ),
    landcover: bool = typer.Option(
        False,
        "--landcover",
        help="Draw land from land-cover classes; also write labels/landcover_{year}.geojson "
        "and truth/{year}/grid_X_Y.tif for the first year.",
    ),
    labels_per_class: int = typer.Option(
        100, "--labels-per-class", help="With --landcover: labels per class over all cells."
    ),
    seed: int = typer.Option(0, "--seed", help="With --landcover: seed of the label draw."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Generate synthetic TESSERA tiles with the real grid, dtype, scales and defects.

    Example: ``tessera-stac sample tiles data/ --bbox 71.9,21.8,72.1,21.9 --years 2024``
    (add ``--landcover`` for tiles drawn from classes, with labels and truth rasters)
    """
    from tessera_stac.publisher.samples import tiles as sample

    cells = _cells(bbox, grid)
    year_list = parse_years(years)
    options = sample.SampleOptions(
        zero_fraction=zero_fraction,
        sentinel_fraction=sentinel_fraction,
        all_water=all_water,
        landmask=landmask,
        change_bbox=parse_bbox(change) if change else None,
        change_from=(change_from or year_list[-1]) if change else None,
    )
    if landcover:
        from tessera_stac.publisher.samples.landcover import generate_landcover

        if not 1 <= labels_per_class <= 100_000:
            raise InputError("--labels-per-class must be 1..100000")
        made = generate_landcover(
            dest, cells, year_list, None, labels_per_class, seed, options, layout
        )
        emit(
            {
                "root": str(dest),
                "tiles": made.tiles,
                "labels": str(made.labels),
                "truth": {k: str(v) for k, v in made.truth.items()},
            },
            as_json,
            f"wrote {made.tiles} land-cover tiles to {dest}, labels {made.labels}",
        )
        return
    written = []
    with progress(len(cells) * len(year_list), "sample tiles") as bar:
        for files in sample.generate(dest, cells, year_list, options, layout):
            written.append(files)
            bar.update(1)
    emit(
        {
            "root": str(dest),
            "layout": layout,
            "tiles": [
                {"grid": f.cell.name, "year": f.year, "embeddings": str(f.embeddings)}
                for f in written
            ],
        },
        as_json,
        f"wrote {len(written)} tiles ({len(cells)} cells x {len(year_list)} years) to {dest}",
    )


def publish_cmd(
    source: str = typer.Argument(
        ..., help="Tiles: local folder or s3://bucket/prefix; a Zarr store: zarr://PATH-or-S3."
    ),
    dest: str = typer.Argument(..., help="Output: local folder or s3://bucket/prefix."),
    layout: str = typer.Option(
        "auto", help="auto, geotessera, mirror, list (file of .npy) or zarr (a geoemb store)."
    ),
    years: str = typer.Option(None, "--years", help="Only these years (2024, 2017-2025...)."),
    bbox: str = typer.Option(None, "--bbox", help="Only cells overlapping W,S,E,N."),
    grid: list[str] = typer.Option(None, "--grid", help="Only these cells (repeatable)."),
    dataset: str = typer.Option(None, help="Mirror dataset (npy/{dataset}), e.g. v1."),
    landmasks: str = typer.Option(None, help="Folder of grid_X_Y.tiff landmasks (override)."),
    model_version: str = typer.Option("v1", help="Model version; one collection per version."),
    collection: str = typer.Option(None, help="Collection id (tessera-embeddings-{version})."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Republish matching tiles too."),
    require_landmask: bool = typer.Option(
        False, "--require-landmask", help="Fail tiles without a landmask (default: flag them)."
    ),
    workers: int | None = WORKERS_OPTION,
    engine: str = ENGINE_OPTION,
    scheduler: str | None = SCHEDULER_OPTION,
    report: str = typer.Option(
        "", help="Run report path/URI (default: DEST/_reports/publish-<id>.json)."
    ),
    endpoint_url: str = typer.Option(None, help="S3 endpoint (S3-compatible services)."),
    source_endpoint_url: str = typer.Option(None, help="S3 endpoint of SOURCE if different."),
    anonymous: bool = typer.Option(
        False, "--anonymous", help="Unsigned reads of SOURCE (public mirrors)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Publish TESSERA tiles as COGs (embeddings, scales) + preview PNG + STAC Item.

    Tiles run in parallel; re-runs skip tiles whose outputs already match; the run report
    lists every tile (ok / skipped / failed with the reason). Exit code 1 if any tile failed.

    Example: ``tessera-stac publish data/ published/ --years 2024``
    """
    from tessera_stac.catalog.store_settings import StorageSettings
    from tessera_stac.publisher.embeddings import run, tiles

    overrides: dict[str, Any] = {"endpoint_url": endpoint_url} if endpoint_url else {}
    settings = StorageSettings(**overrides)
    source_overrides = dict(overrides)
    if source_endpoint_url:
        source_overrides["endpoint_url"] = source_endpoint_url
    if anonymous:
        source_overrides["anonymous"] = True
    source_settings = StorageSettings(**source_overrides)
    flt = tiles.TileFilter(
        years=frozenset(parse_years(years)) if years else None,
        bbox=parse_bbox(bbox) if bbox else None,
        grids=frozenset(grid) if grid else None,
    )
    from tessera_stac.publisher.embeddings import zarr_source

    sources: list[Any]
    if zarr_source.is_zarr_source(source, layout):
        sources = list(zarr_source.discover(source, flt, source_settings))
    else:
        sources = list(tiles.discover(source, layout, flt, source_settings, dataset, landmasks))
    if not sources:
        raise InputError(f"{source}: no tiles found (layout {layout}, filters {flt})")
    with open_engine(engine, workers, scheduler) as eng, progress(len(sources), "publish") as bar:
        result = run.publish(
            sources,
            dest,
            engine=eng,
            model_version=model_version,
            collection=collection,
            overwrite=overwrite,
            require_landmask=require_landmask,
            settings=settings,
            source_settings=source_settings,
            source_label=source,
            report=report,
            on_done=lambda _outcome: bar.update(1),
        )
    totals = result.totals
    lines = [
        f"{totals['ok']} published, {totals['skipped']} skipped, {totals['failed']} failed "
        f"in {result.seconds:.1f} s -> {result.dest}",
        *(f"failed {o.item_id}: {o.reason}" for o in result.failed),
    ]
    if result.report_href:
        lines.append(f"report: {result.report_href}")
    emit(result.as_dict() | {"report": result.report_href}, as_json, "\n".join(lines))
    if result.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach ``publish`` and ``sample tiles`` to the root CLI."""
    app.command("publish")(publish_cmd)
    for group in app.registered_groups:
        if group.name == "sample" and group.typer_instance is not None:
            group.typer_instance.registered_commands.extend(sample_app.registered_commands)
            return
    app.add_typer(sample_app, name="sample")
