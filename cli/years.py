"""Several years and change: ``sample zarr`` and ``watersheds change``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from tessera_stac.cli.common import JSON_OPTION, emit

OUT_HELP = "Catalog root holding the MWS item and the joins; the change item is written there."


def sample_zarr(
    source: str = typer.Argument(
        ..., help="Sample tiles (geotessera layout), e.g. from sample tiles."
    ),
    dest: Path = typer.Argument(..., help="The store to write (a new folder, e.g. tessera.zarr)."),
    years: str = typer.Option(None, "--years", help="Only these years (2024, 2023,2024...)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write a TESSERA Zarr v3 store (geoemb layout) from .npy tiles, placed as geotessera does.

    Example: ``tessera-stac sample zarr data/ data/tessera.zarr``
    """
    from tessera_stac.catalog.args import parse_years
    from tessera_stac.catalog.errors import InputError
    from tessera_stac.publisher.embeddings import tiles
    from tessera_stac.publisher.samples.zarr_store import write_store

    flt = tiles.TileFilter(years=frozenset(parse_years(years)) if years else None)
    sources = tiles.discover(source, "auto", flt)
    if not sources:
        raise InputError(f"{source}: no tiles found")
    if dest.exists():
        raise InputError(f"{dest}: already exists (a store is written once)")
    summary = write_store(dest, sources)
    zones = ", ".join(f"utm{z:02d}" for z in sorted(summary.grids))
    emit(
        {"store": str(dest), "zones": sorted(summary.grids), "tiles": len(summary.placed)},
        as_json,
        f"wrote {len(summary.placed)} tiles into {dest} ({zones})",
    )


def change_cmd(
    year_from: int = typer.Option(..., "--from", help="The earlier year."),
    year_to: int = typer.Option(..., "--to", help="The later year."),
    mws: str = typer.Option(..., "--mws", help="Id of a published corestack-mws item."),
    out: Path = typer.Option(Path("published"), "--out", help=OUT_HELP),
    tiles: Path | None = typer.Option(
        None, "--tiles", help="Catalog root holding the embedding items (default: --out)."
    ),
    collection: str | None = typer.Option(None, "--collection", help="Embedding collection."),
    threshold: float = typer.Option(
        0.5, "--threshold", help="A pixel changed when its cosine distance exceeds this."
    ),
    csv: bool = typer.Option(False, "--csv", help="Also write the table as CSV."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Change per micro-watershed between two years (GeoParquet + STAC item).

    Cosine distance of each MWS's two mean vectors, and the share of its pixels whose own
    distance exceeds --threshold (pixels valid in both years). Needs both years' joins.

    Example: tessera-stac watersheds change --mws gujarat_bhavnagar_bhavnagar_mws --from 2023
    --to 2024
    """
    from tessera_stac.catalog.errors import InputError
    from tessera_stac.cli.common import progress
    from tessera_stac.publisher.join.change import change_watersheds, write_change
    from tessera_stac.publisher.join.join import cells_covering, find_tiles_local, mws_source

    if year_from == year_to:
        raise InputError("--from and --to must be different years")
    mws_item, mws_href, layer = mws_source(out, mws, None)
    cells = cells_covering(layer.bbox)
    found_from = find_tiles_local(tiles or out, year_from, cells, collection)
    found_to = find_tiles_local(tiles or out, year_to, cells, collection)
    with progress(len(found_from), f"change {year_from}->{year_to}") as bar:
        result = change_watersheds(
            layer.frame,
            found_from,
            found_to,
            year_from,
            year_to,
            threshold,
            on_tile=lambda _t: bar.update(1),
        )
    written = write_change(result, out, mws_item, mws_href, datetime.now(UTC), csv=csv)
    table = result.table.sort_values("distance", ascending=False)
    top = [str(u) for u in table["uid"].head(5)]
    emit(
        {
            "item_id": written.item_id,
            "item": str(written.item_path),
            "parquet": str(written.parquet),
            "csv": str(written.csv) if written.csv else None,
            "mws": len(result.table),
            "tiles_read": len(result.tiles),
            "top": top,
        },
        as_json,
        f"change {year_from}->{year_to} of {len(result.table)} MWS; most changed: "
        f"{', '.join(top)}\nwrote {written.item_path}",
    )


def change_map_cmd(
    dest: Path = typer.Argument(..., help="Folder for the change GeoTIFFs (created)."),
    year_from: int = typer.Option(..., "--from", help="The earlier year."),
    year_to: int = typer.Option(..., "--to", help="The later year."),
    tiles: Path = typer.Option(
        Path("published"), "--tiles", help="Catalog root holding the embedding items."
    ),
    bbox: str = typer.Option(..., "--bbox", help="W,S,E,N: cells overlapping it."),
    collection: str | None = typer.Option(None, "--collection", help="Embedding collection."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Per-pixel change between two years as georeferenced COGs (cosine distance, NaN invalid).

    Example: tessera-stac change-map changes/ --from 2023 --to 2024 --bbox 86,24.5,86.2,24.7
    --tiles published/
    """
    from tessera_stac.catalog.args import parse_bbox
    from tessera_stac.publisher.join.change_map import write_change_layers
    from tessera_stac.publisher.join.join import cells_covering, find_tiles_local

    cells = cells_covering(parse_bbox(bbox))
    found = [find_tiles_local(tiles, y, cells, collection) for y in (year_from, year_to)]
    written = write_change_layers(found[0], found[1], dest)
    emit(
        {"files": [str(p) for p in written]},
        as_json,
        f"wrote {len(written)} change layers {year_from}->{year_to} to {dest}",
    )


def register(app: typer.Typer) -> None:
    """Attach ``sample zarr``, ``watersheds change`` and ``change-map`` to the root CLI."""
    from tessera_stac.cli.corestack import watersheds_app
    from tessera_stac.cli.publish import sample_app

    sample_app.command("zarr")(sample_zarr)
    watersheds_app.command("change")(change_cmd)
    app.command("change-map")(change_map_cmd)
