"""Zarr source and change benchmark.

Run with ``python -m bench bench_zarr``. Writes ``bench/results/zarr.json`` and ``zarr.md``.

Measured in the same run, on the same real-size synthetic tiles (two cells either side of 72°E,
two years), each step in a child process (peak RSS from ``getrusage``):

* ``publish_npy``: ``run.publish`` of the cells from the ``.npy`` files (the reference);
* ``publish_zarr``: ``run.publish`` of the same cells from a geoemb Zarr v3 store written
  from those files (chunks (1,128,32,32), shards (1,128,4096,4096)); ratio zarr / npy;
* ``join_one_year``: ``watersheds join`` of the real Bhavnagar layer for one year (reference);
* ``change``: the per-MWS change ranking of the same block between the two years (reads both
  years' pixels); ratio change / join.

Serial engine (one core each): the machine is shared, the load average is recorded.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LAYER = (
    HERE.parent.parent
    / "shared"
    / "data"
    / "corestack"
    / "gujarat_bhavnagar_bhavnagar_mws_terrain.geojson"
)
GRIDS = ("grid_71.95_21.85", "grid_72.05_21.85")
YEARS = (2023, 2024)


def _child(target: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``target(*args)`` in a fresh process; its result plus the child's peak RSS (MB)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_wrap, args=(queue, target, args))
    proc.start()
    result: dict[str, Any] = queue.get()
    proc.join()
    return result


def _wrap(queue: Any, target: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> None:
    out = target(*args)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    queue.put(out)


def publish_npy(source: str, dest: str) -> dict[str, Any]:
    from tessera_stac.catalog.model import GridCell
    from tessera_stac.publisher.embeddings import run, tiles

    cells = [GridCell.parse(g) for g in GRIDS]
    sources = tiles.sources_for(source, cells, YEARS)
    start = time.perf_counter()
    report = run.publish(sources, dest, report=None)
    seconds = time.perf_counter() - start
    assert not report.failed, report.failed
    return {"seconds": seconds, "tiles": report.totals["ok"]}


def publish_zarr(store: str, dest: str) -> dict[str, Any]:
    from tessera_stac.publisher.embeddings import run, tiles, zarr_source

    start = time.perf_counter()
    cells = zarr_source.discover(store, tiles.TileFilter(grids=frozenset(GRIDS)))
    report = run.publish(cells, dest, report=None)
    seconds = time.perf_counter() - start
    assert not report.failed, report.failed
    return {"seconds": seconds, "tiles": report.totals["ok"]}


def join_one_year(dest: str) -> dict[str, Any]:
    from tessera_stac.publisher.join.join import cells_covering, find_tiles_local, join_embeddings
    from tessera_stac.publisher.watersheds.layer import read_mws_layer

    layer = read_mws_layer(LAYER)
    found = find_tiles_local(Path(dest), YEARS[1], cells_covering(layer.bbox))
    start = time.perf_counter()
    table = join_embeddings(layer.frame, found, YEARS[1]).table
    return {"seconds": time.perf_counter() - start, "mws": len(table)}


def change(dest: str) -> dict[str, Any]:
    from tessera_stac.publisher.join.change import change_watersheds
    from tessera_stac.publisher.join.join import cells_covering, find_tiles_local
    from tessera_stac.publisher.watersheds.layer import read_mws_layer

    layer = read_mws_layer(LAYER)
    cells = cells_covering(layer.bbox)
    found = [find_tiles_local(Path(dest), y, cells) for y in YEARS]
    start = time.perf_counter()
    result = change_watersheds(layer.frame, found[0], found[1], *YEARS)
    seconds = time.perf_counter() - start
    ranked = result.table.sort_values("distance", ascending=False)
    return {"seconds": seconds, "mws": len(ranked), "top": ranked["uid"].head(3).tolist()}


def main() -> None:
    from tessera_stac.catalog.model import GridCell
    from tessera_stac.publisher.embeddings import tiles
    from tessera_stac.publisher.samples import tiles as sample
    from tessera_stac.publisher.samples.zarr_store import write_store

    base = Path(tempfile.mkdtemp(prefix="bench-zarr-"))
    try:
        source = base / "source"
        change_box = (72.02, 21.82, 72.06, 21.86)
        opts = sample.SampleOptions(change_bbox=change_box, change_from=YEARS[1])
        for grid in GRIDS:
            for year in YEARS:
                sample.write_tile(source, GridCell.parse(grid), year, opts)
        start = time.perf_counter()
        write_store(base / "tessera.zarr", tiles.discover(str(source), "geotessera"))
        store_seconds = time.perf_counter() - start
        load_before = os.getloadavg()
        npy = _child(publish_npy, str(source), str(base / "npy"))
        zarr = _child(publish_zarr, str(base / "tessera.zarr"), str(base / "zarr"))
        joined = _child(join_one_year, str(base / "npy")) if LAYER.exists() else None
        changed = _child(change, str(base / "npy")) if LAYER.exists() else None
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    n = npy["tiles"]
    results: dict[str, Any] = {
        "tiles": n,
        "cells": list(GRIDS),
        "years": list(YEARS),
        "write_store_seconds": round(store_seconds, 2),
        "publish_npy": {**npy, "seconds_per_tile": round(npy["seconds"] / n, 2)},
        "publish_zarr": {**zarr, "seconds_per_tile": round(zarr["seconds"] / n, 2)},
        "ratio_zarr_over_npy": round(zarr["seconds"] / npy["seconds"], 3),
        "join_one_year": joined,
        "change_two_years": changed,
        "ratio_change_over_join": (
            round(changed["seconds"] / joined["seconds"], 3) if joined and changed else None
        ),
        "load_average": {
            "before": [round(v, 2) for v in load_before],
            "after": [round(v, 2) for v in load_after],
        },
        "cpu_count": os.cpu_count(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "zarr.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Zarr source and change benchmark",
        "",
        f"{n} tile-years ({', '.join(GRIDS)} x {YEARS}), serial engine, one process each;",
        f"load average before {results['load_average']['before']}, "
        f"after {results['load_average']['after']} on {os.cpu_count()} cores (shared machine).",
        "",
        "| step | seconds | s/tile | peak RSS MB |",
        "| --- | --- | --- | --- |",
        f"| publish from .npy (reference) | {npy['seconds']:.1f} | "
        f"{results['publish_npy']['seconds_per_tile']} | {npy['peak_rss_mb']} |",
        f"| publish from Zarr | {zarr['seconds']:.1f} | "
        f"{results['publish_zarr']['seconds_per_tile']} | {zarr['peak_rss_mb']} |",
    ]
    if joined and changed:
        lines += [
            f"| join one year, {joined['mws']} MWS (reference) | {joined['seconds']:.2f} | | "
            f"{joined['peak_rss_mb']} |",
            f"| change ranking two years, {changed['mws']} MWS | {changed['seconds']:.2f} | | "
            f"{changed['peak_rss_mb']} |",
        ]
    lines += [
        "",
        f"Ratio publish Zarr / .npy: {results['ratio_zarr_over_npy']}; "
        f"change / join: {results['ratio_change_over_join']}. "
        f"Writing the store: {store_seconds:.1f} s.",
    ]
    (RESULTS / "zarr.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
