"""Embedding <-> micro-watershed join benchmark: ours vs exactextract, same COGs, same run.

Run with ``python -m bench bench_join`` (or ``make bench``). Writes ``bench/results/join.json``
and ``bench/results/join.md``.

Data: the real Bhavnagar MWS layer (``../shared/data/corestack``) and the 2 x 2 published
tiles around 72°E / 21.8°N (two UTM zones), generated and published with the project's own
sample generator and publisher (cached in ``.tessera-stac/bench-join``). The layer needs ~42
tiles to be fully covered; the benchmark joins every MWS against the 4 published tiles (the MWS
outside them get count 0).

* ``ours``: :func:`tessera_stac.publisher.join.join.join_embeddings` (pixel-centre rule, one tile
  per pixel, float64 sums).
* ``exactextract``: per tile, ``exact_extract(embeddings.tif, polygons in the tile CRS,
  "weighted_sum", weights=scales)`` over the 128 bands, divided by the ``sum`` of a 0/1
  raster of owned valid pixels. exactextract has no notion of tile ownership, so the weights
  are the scales where the pixel centre is in the tile's own 0.1° cell and 0 elsewhere (that
  mask is computed inside the timed exactextract run). The means are the same quantity except
  for the pixel rule: exactextract weights every pixel by the fraction of it the polygon
  covers, we count pixels whose centre is inside.

Comparison: per MWS with data, |mean_ours - mean_ee| per dimension against a bound from the
pixel rule: only boundary pixels differ, so the difference is at most about
``2 * (boundary pixels / pixels) * max|value|`` (boundary pixels ~ perimeter / 10 m * 2).
Also the ratio of the pixel counts (sum of coverage fractions vs centre count).

Each method runs in its own process (peak RSS from ``resource.getrusage``); times are the best
of ``REPEATS``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LAYER = (
    ROOT.parent
    / "shared"
    / "data"
    / "corestack"
    / "gujarat_bhavnagar_bhavnagar_mws_terrain.geojson"
)
CACHE = Path(os.environ.get("TESSERA_STAC_BENCH_JOIN_DIR", ROOT / ".tessera-stac" / "bench-join"))
GRIDS = ("grid_71.95_21.75", "grid_72.05_21.75", "grid_71.95_21.85", "grid_72.05_21.85")
YEAR = 2024
REPEATS = 2
EE_REPEATS = 1  # exactextract takes minutes here; one run (a best-of would only favour it)


def published_tiles() -> Path:
    """Generate + publish the benchmark tiles once (cached); return the catalog root."""
    from bench.bench_points import stale_cache
    from tessera_stac.catalog.model import GridCell
    from tessera_stac.publisher.embeddings import run, tiles
    from tessera_stac.publisher.samples import tiles as sample

    dest = CACHE / "published"
    stale_cache(dest)
    cells = [GridCell.parse(g) for g in GRIDS]
    if all(list(dest.glob(f"*/{YEAR}/{c.name}/*.json")) for c in cells):
        return dest
    source = CACHE / "source"
    for cell in cells:
        sample.write_tile(source, cell, YEAR)
    report = run.publish(tiles.sources_for(str(source), cells, [YEAR]), str(dest), report=None)
    if report.failed:
        raise RuntimeError(f"publishing the benchmark tiles failed: {report.failed}")
    return dest


def _tiles_and_layer(dest: Path) -> tuple[Any, Any]:
    from tessera_stac.publisher.join.join import cells_covering, find_tiles_local
    from tessera_stac.publisher.watersheds.layer import read_mws_layer

    layer = read_mws_layer(LAYER)
    return find_tiles_local(dest, YEAR, cells_covering(layer.bbox)), layer


def run_ours(dest: Path, out: Path) -> None:
    """Child process: our join; writes counts and means to ``out`` (.npz)."""
    from tessera_stac.publisher.join.join import MEAN_COLUMNS, join_embeddings

    tiles, layer = _tiles_and_layer(dest)
    start = time.perf_counter()
    table = join_embeddings(layer.frame, tiles, YEAR).table
    elapsed = time.perf_counter() - start
    np.savez(
        out,
        elapsed=elapsed,
        count=table["count"].to_numpy(np.float64),
        means=table[list(MEAN_COLUMNS)].to_numpy(np.float64),
        maxrss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    )


def _owned_weights(tile: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    """Scales where the pixel centre is in the tile's cell (0 elsewhere), and a 0/1 mask."""
    import rasterio
    from pyproj import Transformer

    with rasterio.open(tile.scales_href) as ds:
        s = ds.read(1)
        transform, crs = ds.transform, ds.crs
    h, w = s.shape
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    x = transform.c + cols * transform.a
    y = transform.f + rows * transform.e
    lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(x, y)
    ix, iy = round((tile.cell.lon - 0.05) * 10), round((tile.cell.lat - 0.05) * 10)
    owned = (np.floor(np.asarray(lon) * 10) == ix) & (np.floor(np.asarray(lat) * 10) == iy)
    valid = owned & np.isfinite(s)
    return np.where(valid, s, 0).astype(np.float64), valid.astype(np.float64), (transform, crs)


def run_exactextract(dest: Path, out: Path) -> None:
    """Child process: the same means with exactextract (weighted_sum / sum of the mask)."""
    import shapely
    from exactextract import exact_extract
    from exactextract.raster import NumPyRasterSource

    tiles, layer = _tiles_and_layer(dest)
    frame = layer.frame
    n = len(frame)
    start = time.perf_counter()
    sums = np.zeros((n, 128))
    count = np.zeros(n)
    for tile in tiles:
        cell = shapely.box(*tile.cell.bounds)
        index = np.flatnonzero(frame.intersects(cell).to_numpy())
        if not len(index):
            continue
        weights, mask, (transform, crs) = _owned_weights(tile)
        h, w = weights.shape
        extent = dict(
            xmin=transform.c,
            ymax=transform.f,
            xmax=transform.c + w * transform.a,
            ymin=transform.f + h * transform.e,
            srs_wkt=crs.to_wkt(),
        )
        polys = frame.iloc[index].to_crs(crs)
        import rasterio

        with rasterio.open(tile.embeddings_href) as ds:
            weighted = exact_extract(
                ds,
                polys,
                ["weighted_sum"],
                weights=NumPyRasterSource(weights, **extent),
                output="pandas",
            )
        denom = exact_extract(NumPyRasterSource(mask, **extent), polys, ["sum"], output="pandas")
        sums[index] += weighted.to_numpy(np.float64)[:, :128]
        count[index] += denom["sum"].to_numpy(np.float64)
    elapsed = time.perf_counter() - start
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / count[:, None]
    np.savez(
        out,
        elapsed=elapsed,
        count=count,
        means=means,
        maxrss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    )


def _in_child(target: Any, dest: Path, out: Path) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=target, args=(dest, out))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"{target.__name__} failed with exit code {proc.exitcode}")
    data = np.load(out)
    return {k: data[k] for k in data.files}


def _best(target: Any, dest: Path, name: str, repeats: int) -> dict[str, Any]:
    runs = [_in_child(target, dest, CACHE / f"{name}-{i}.npz") for i in range(repeats)]
    best = min(runs, key=lambda r: float(r["elapsed"]))
    best["peak_rss_mb"] = max(float(r["maxrss_kb"]) for r in runs) / 1024
    best["times"] = [round(float(r["elapsed"]), 2) for r in runs]
    return best


def compare(ours: dict[str, Any], ee: dict[str, Any]) -> dict[str, Any]:
    """Differences of the means and counts, and the pixel-rule bound per MWS."""
    from tessera_stac.publisher.watersheds.layer import read_mws_layer

    layer = read_mws_layer(LAYER)
    both = (ours["count"] > 0) & (ee["count"] > 0)
    diff = np.abs(ours["means"][both] - ee["means"][both]).max(axis=1)
    perimeter_m = layer.frame.to_crs(32643).geometry.length.to_numpy()[both]
    boundary_px = 2 * perimeter_m / 10
    max_value = 127 * 0.137  # |q| <= 127, scale p99.99 ~0.137 (DESIGN §1)
    bound = 2 * boundary_px / ours["count"][both] * max_value
    ratio = ee["count"][both] / ours["count"][both]
    return {
        "mws_compared": int(both.sum()),
        "max_abs_mean_diff": float(diff.max()),
        "median_abs_mean_diff": float(np.median(diff)),
        "max_diff_over_bound": float((diff / bound).max()),
        "within_bound": bool((diff <= bound).all()),
        "count_ratio_min": float(ratio.min()),
        "count_ratio_max": float(ratio.max()),
    }


def main() -> None:
    dest = published_tiles()
    ours = _best(run_ours, dest, "ours", REPEATS)
    ee = _best(run_exactextract, dest, "exactextract", EE_REPEATS)
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "tiles": list(GRIDS),
        "year": YEAR,
        "mws": len(ours["count"]),
        "ours_s": round(float(ours["elapsed"]), 2),
        "ours_runs_s": ours["times"],
        "ours_peak_rss_mb": round(ours["peak_rss_mb"], 1),
        "exactextract_s": round(float(ee["elapsed"]), 2),
        "exactextract_runs_s": ee["times"],
        "exactextract_peak_rss_mb": round(ee["peak_rss_mb"], 1),
        "speedup": round(float(ee["elapsed"]) / float(ours["elapsed"]), 2),
        "target_speedup": 2.0,
        "cpu_count": os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        **compare(ours, ee),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "join.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "join.md").write_text(_markdown(result))
    print(json.dumps(result, indent=2))


def _markdown(r: dict[str, Any]) -> str:
    return f"""# Join benchmark (bench/bench_join.py)

Real Bhavnagar MWS layer ({r["mws"]} MWS) against {len(r["tiles"])} published real-size tiles
({", ".join(r["tiles"])}, {r["year"]}; two UTM zones), same COGs, same run, each method in its
own process, ours best of {len(r["ours_runs_s"])} runs, exactextract
{len(r["exactextract_runs_s"])} run(s) (machine shared by several jobs: load average
{r["load_average"]} on {r["cpu_count"]} cores).

| method | time (s) | peak RSS (MB) |
|---|---|---|
| tessera-stac join (pixel centre) | {r["ours_s"]} | {r["ours_peak_rss_mb"]} |
| exactextract weighted_sum / sum | {r["exactextract_s"]} | {r["exactextract_peak_rss_mb"]} |

Speed-up: **{r["speedup"]}x** (target >= {r["target_speedup"]}x).

Agreement over {r["mws_compared"]} MWS with data: max |mean difference| {r["max_abs_mean_diff"]:.2e}
(median {r["median_abs_mean_diff"]:.2e}); largest difference / pixel-rule bound
{r["max_diff_over_bound"]:.3f} (within bound: {r["within_bound"]}); coverage-weighted count /
centre count between {r["count_ratio_min"]:.4f} and {r["count_ratio_max"]:.4f}.

The bound: only pixels on the polygon boundary are treated differently (fractional coverage vs
centre-in), so |difference| <= 2 * (boundary pixels / pixels) * max|value| with boundary pixels
~ 2 * perimeter / 10 m and max|value| = 127 * 0.137.
"""


if __name__ == "__main__":
    sys.exit(main())
