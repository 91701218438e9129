"""CLI of the scale area: ``tessera-stac sample catalog`` (synthetic catalogues for scale tests).

The ``--engine dask`` / ``--scheduler`` options of ``publish`` and ``watersheds join`` are built
here (:func:`engine_options` / :func:`make_engine`) so the commands of other areas only pass
them through.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from tessera_stac.catalog.errors import InputError
from tessera_stac.cli.common import JSON_OPTION, emit, progress
from tessera_stac.publisher.engines.local import open_engine

sample_app = typer.Typer(
    help="Generate sample data (synthetic tiles, catalogues) for demos, tests and benchmarks.",
    no_args_is_help=True,
)


@sample_app.command("catalog")
def sample_catalog(
    n_items: int = typer.Argument(..., min=1, help="Number of items to generate."),
    out: Path = typer.Option(..., "--out", "-o", help="Output NDJSON file (one item a line)."),
    years: str = typer.Option("2017-2025", help="Years, e.g. 2017-2025 or 2020,2024."),
    centre: str = typer.Option(
        "78.95,22.55", help="lon,lat the cells grow around (nearest land cells first)."
    ),
    bbox: str | None = typer.Option(None, help="west,south,east,north the cells must lie in."),
    collection: str = typer.Option("tessera-embeddings-v1", help="Collection id of the items."),
    href_base: str = typer.Option("s3://tessera-stac", help="Prefix of the asset hrefs."),
    seed: int = typer.Option(0, help="Seed of sizes, pixel counts and checksums."),
    processed: str = typer.Option(
        "2026-01-01T00:00:00+00:00", help="Processing time recorded in the items (ISO 8601)."
    ),
    exact: bool = typer.Option(
        False, "--exact", help="Build every item with the real item builder (slow, for checks)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write N synthetic STAC items over real 0.1° land cells as NDJSON, without rasters.

    Example: ``tessera-stac sample catalog 1000000 --out items.ndjson --years 2017-2025``
    """
    from tessera_stac.catalog.args import parse_bbox, parse_years
    from tessera_stac.publisher.samples.catalog import SyntheticSpec, floats_from_text, write_ndjson

    try:
        when = datetime.fromisoformat(processed)
    except ValueError:
        raise InputError(f"--processed is not an ISO 8601 time: {processed!r}") from None
    lon, lat = floats_from_text(centre, 2, "--centre")
    box = parse_bbox(bbox) if bbox else None
    spec = SyntheticSpec(
        n_items=n_items,
        years=parse_years(years),
        centre=(lon, lat),
        bbox=(box[0], box[1], box[2], box[3]) if box else None,
        collection_id=collection,
        href_base=href_base,
        processed=when,
        seed=seed,
    )
    start = time.perf_counter()
    with progress(n_items, "items") as bar:
        count = write_ndjson(spec, out, fast=not exact, on_progress=bar.update)
    seconds = time.perf_counter() - start
    result = {
        "items": count,
        "cells": spec.n_cells,
        "years": list(spec.years),
        "out": str(out),
        "bytes": out.stat().st_size,
        "seconds": round(seconds, 3),
        "items_per_s": round(count / seconds, 1) if seconds else None,
    }
    emit(
        result,
        as_json,
        f"wrote {count} items ({spec.n_cells} cells x {len(spec.years)} years) to {out} "
        f"in {seconds:.1f} s ({result['items_per_s']} items/s)",
    )


def run_join(
    engine: str,
    scheduler: str | None,
    workers: int | None,
    frame: Any,
    tiles: Any,
    year: int,
    on_tile: Callable[[Any], None] | None = None,
) -> Any:
    """``watersheds join``'s work on the engine chosen by ``--engine``/``--scheduler``.

    ``serial`` is the in-process join; the others (``process`` by default) run one task per tile
    (:func:`~tessera_stac.publisher.engines.dask_engine.join_on_engine`) and give the same table.
    """
    from tessera_stac.publisher.join.join import join_embeddings

    if engine == "serial" and not scheduler:
        return join_embeddings(frame, tiles, year, on_tile=on_tile)
    from tessera_stac.publisher.engines.dask_engine import join_on_engine

    with open_engine(engine, workers, scheduler) as eng:
        return join_on_engine(eng, frame, tiles, year, on_tile=on_tile)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the root CLI (``sample catalog``)."""
    existing = {group.name for group in app.registered_groups}
    if "sample" in existing:
        # another area created the ``sample`` group first (e.g. ``sample tiles``): join it
        for group in app.registered_groups:
            if group.name == "sample" and group.typer_instance is not None:
                group.typer_instance.registered_commands.extend(sample_app.registered_commands)
        return
    app.add_typer(sample_app, name="sample")
