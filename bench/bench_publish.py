"""Publisher benchmark: per-tile publish time vs a bare GDAL COG translate, memory, size, profile.

Run with ``python -m bench bench_publish`` (or ``make bench``). Writes
``bench/results/publish.json`` and ``bench/results/publish.md``.

What is measured, all in the same run on the same real-size synthetic tile:

* ``publish``: ``embeddings.run.publish_tile`` end to end (read .npy, validity,
  float-space overviews, embeddings COG, scales COG, preview PNG, verification incl.
  ``cog_validate(strict=True)``, sha256 checksums, move into place, STAC item);
* ``reference``: GDAL's COG driver (what ``gdal_translate -of COG`` runs; the binary when
  present) copying the same tile, from an uncompressed pixel-interleaved GeoTIFF, with the same
  compression, block size and overview levels (``OVERVIEW_RESAMPLING=NEAREST``, GDAL's
  cheapest), embeddings only;
* ratio publish / reference (target <= 1.25), tiles per minute per core (each tile runs on one
  core), peak RSS of a worker process (``resource.getrusage`` in a child; target < 1.5 GB),
  compressed size vs raw int8;
* the profile measurement: codec x block size x predictor -> file size, write time, and the
  time of a cold point read (open + read one pixel's 128-vector), which justified
  ``catalog/profile.py``.

Timings are the minimum of ``REPEATS`` runs (the machine is shared).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GRID = "grid_78.05_12.05"
YEAR = 2024
REPEATS = 2


def _make_tile(root: Path) -> Any:
    from tessera_stac.catalog.model import GridCell
    from tessera_stac.publisher.samples import tiles as sample

    return sample.write_tile(root, GridCell.parse(GRID), YEAR)


def _reference_source(files: Any, path: Path) -> None:
    """The tile as a plain uncompressed pixel-interleaved GeoTIFF (what a user would translate)."""
    from tessera_stac.publisher.embeddings import cog, georef

    q = np.load(files.embeddings)
    s = np.load(files.scales)
    geo, mask = georef.read_landmask(files.landmask)
    valid = cog.validity(q, s, mask).valid
    codes = cog.masked_codes(q, valid)
    import rasterio

    profile = {
        "driver": "GTiff",
        "dtype": "int8",
        "count": 128,
        "height": geo.height,
        "width": geo.width,
        "crs": geo.crs,
        "transform": geo.affine(),
        "interleave": "pixel",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "nodata": -128,
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.moveaxis(codes, -1, 0))


def _reference_options() -> dict[str, Any]:
    from tessera_stac.catalog.profile import EMBEDDINGS
    from tessera_stac.publisher.embeddings.cog import cog_options

    opts = cog_options(EMBEDDINGS)
    opts.update(
        OVERVIEWS="AUTO",
        OVERVIEW_COUNT=len(EMBEDDINGS.overview_levels),
        OVERVIEW_RESAMPLING="NEAREST",
    )
    return opts


def _run_reference(src: str, dst: str, overviews: bool = True) -> float:
    import rasterio
    from rasterio.shutil import copy

    opts = _reference_options()
    if not overviews:
        opts.pop("OVERVIEW_COUNT")
        opts.pop("OVERVIEW_RESAMPLING")
        opts["OVERVIEWS"] = "NONE"
    binary = shutil.which("gdal_translate")
    start = time.perf_counter()
    if binary:
        args = [binary, "-q", "-of", "COG"]
        for key, value in opts.items():
            args += ["-co", f"{key}={value}"]
        subprocess.run([*args, src, dst], check=True)
    else:
        with rasterio.Env(GDAL_CACHEMAX=128):
            copy(src, dst, driver="COG", **opts)
    return time.perf_counter() - start


def _run_publish(files: Any, dest: str, scratch: str) -> tuple[float, dict[str, float]]:
    from tessera_stac.publisher.embeddings import run, tiles

    source = tiles.TileSource(
        grid=GRID,
        year=YEAR,
        embeddings=str(files.embeddings),
        scales=str(files.scales),
        landmask=str(files.landmask),
    )
    options = run.PublishOptions(
        dest=dest, scratch=scratch, processed=datetime(2025, 1, 1, tzinfo=UTC), overwrite=True
    )
    Path(scratch).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    outcome = run.publish_tile(run.TileTask(source, options))
    seconds = time.perf_counter() - start
    if outcome.status != "ok":
        raise RuntimeError(outcome.reason)
    return seconds, outcome.timings


def _vm_hwm() -> int:
    """Peak RSS of this process image (VmHWM), in bytes (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _child(kind: str, args: tuple[Any, ...], queue: Any) -> None:
    import resource

    if kind == "prepare":
        files = _make_tile(args[0])
        _reference_source(files, args[1])
        queue.put((files, 0))
        return
    if kind == "publish":
        seconds, _ = _run_publish(*args)
    elif kind == "reference":
        seconds = _run_reference(*args)
    else:
        seconds = _run_reference(*args, overviews=False)
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, _vm_hwm())
    queue.put((seconds, peak))


def _in_child(kind: str, *args: Any) -> tuple[Any, int]:
    """Run once in a fresh process: (seconds, peak RSS bytes of that worker).

    The parent stays small (the tile is made in a child too): on Linux a spawned child's
    ``ru_maxrss`` starts from its parent's, so a big parent would hide the worker's peak.
    """
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(kind, args, queue))
    proc.start()
    result = queue.get(timeout=900)
    proc.join()
    return result  # type: ignore[no-any-return]


def _profile_matrix(files: Any, work: Path) -> list[dict[str, Any]]:
    """Codec x block x predictor: size, write time, cold point-read time."""
    import rasterio

    from tessera_stac.catalog.profile import EMBEDDINGS
    from tessera_stac.publisher.embeddings import cog, georef

    q = np.load(files.embeddings)
    s = np.load(files.scales)
    geo, mask = georef.read_landmask(files.landmask)
    valid = cog.validity(q, s, mask).valid
    codes = cog.masked_codes(q, valid)
    levels = cog.build_overviews(q, s, valid, EMBEDDINGS.overview_levels)
    variants = [
        ("ZSTD", 9, 1, 128),
        ("ZSTD", 9, 1, 256),
        ("ZSTD", 9, 1, 512),
        ("ZSTD", 9, 2, 256),
        ("ZSTD", 1, 2, 128),
        ("ZSTD", 3, 2, 128),
        ("ZSTD", 9, 2, 128),
        ("ZSTD", 1, 2, 256),
        ("ZSTD", 1, 2, 512),
        ("DEFLATE", 6, 2, 128),
        ("DEFLATE", 6, 1, 256),
        ("LZW", None, 2, 128),
    ]
    rng = np.random.default_rng(0)
    points = [
        (int(r), int(c))
        for r, c in zip(
            rng.integers(0, geo.height, 20), rng.integers(0, geo.width, 20), strict=True
        )
    ]
    rows = []
    for compress, level, predictor, block in variants:
        profile = replace(
            EMBEDDINGS, compress=compress, level=level, predictor=predictor, blocksize=block
        )
        path = work / f"m-{compress}-{level}-{predictor}-{block}.tif"
        start = time.perf_counter()
        cog.write_cog(path, profile, codes, [lv.codes for lv in levels], geo, {})
        best = time.perf_counter() - start
        reads = []
        with rasterio.Env(GDAL_CACHEMAX=0):
            for r, c in points:
                start = time.perf_counter()
                with rasterio.open(path) as ds:
                    ds.read(window=((r, r + 1), (c, c + 1)))
                reads.append(time.perf_counter() - start)
        rows.append(
            {
                "compress": compress,
                "level": level,
                "predictor": predictor,
                "blocksize": block,
                "size_mb": round(path.stat().st_size / 1e6, 2),
                "size_vs_raw": round(path.stat().st_size / q.nbytes, 3),
                "write_s": round(best, 2),
                "point_read_ms": round(1000 * float(np.median(reads)), 2),
                "block_bytes_uncompressed": block * block * 128,
            }
        )
        path.unlink()
        print(f"  profile {rows[-1]}", flush=True)
    return rows


def main() -> None:
    """Run the benchmark and write bench/results/publish.{json,md}."""
    from tessera_stac.catalog.profile import EMBEDDINGS

    RESULTS.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-publish-"))
    try:
        ref_src = work / "reference-src.tif"
        start = time.perf_counter()
        files, _ = _in_child("prepare", work / "src", ref_src)
        generate_s = time.perf_counter() - start
        q_bytes = np.load(files.embeddings, mmap_mode="r").nbytes
        publish_runs, reference_runs, bare_runs = [], [], []
        for i in range(REPEATS):  # interleaved so all see the same machine load
            reference_runs.append(_in_child("reference", str(ref_src), str(work / f"ref{i}.tif")))
            bare_runs.append(_in_child("bare", str(ref_src), str(work / f"bare{i}.tif")))
            publish_runs.append(
                _in_child("publish", files, str(work / "dest"), str(work / "scratch"))
            )
        _, timings = _run_publish(files, str(work / "dest"), str(work / "scratch"))
        pub_s = min(r[0] for r in publish_runs)
        ref_s = min(r[0] for r in reference_runs)
        bare_s = min(r[0] for r in bare_runs)
        folder = work / "dest" / "tessera-embeddings-v1" / str(YEAR) / GRID
        sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
        ref_size = (work / "ref0.tif").stat().st_size
        matrix = _profile_matrix(files, work)
        result = {
            "tile": GRID,
            "shape": list(np.load(files.embeddings, mmap_mode="r").shape),
            "profile": {
                "compress": EMBEDDINGS.compress,
                "level": EMBEDDINGS.level,
                "predictor": EMBEDDINGS.predictor,
                "blocksize": EMBEDDINGS.blocksize,
                "overviews": list(EMBEDDINGS.overview_levels),
            },
            "reference_tool": "gdal_translate"
            if shutil.which("gdal_translate")
            else ("GDAL COG driver via rasterio.shutil.copy (gdal_translate binary not installed)"),
            "generate_tile_and_reference_source_s": round(generate_s, 2),
            "publish_s": round(pub_s, 2),
            "publish_runs_s": [round(r[0], 2) for r in publish_runs],
            "reference_s": round(ref_s, 2),
            "reference_runs_s": [round(r[0], 2) for r in reference_runs],
            "ratio_publish_vs_reference": round(pub_s / ref_s, 3),
            "reference_without_overviews_s": round(bare_s, 2),
            "ratio_publish_vs_reference_without_overviews": round(pub_s / bare_s, 3),
            "ratio_target": 1.25,
            "tiles_per_min_per_core": round(60 / pub_s, 2),
            "peak_rss_worker_mb": round(max(r[1] for r in publish_runs) / 1e6, 1),
            "peak_rss_reference_mb": round(max(r[1] for r in reference_runs) / 1e6, 1),
            "peak_rss_target_mb": 1500,
            "raw_int8_mb": round(q_bytes / 1e6, 1),
            "sizes_bytes": sizes,
            "reference_size_bytes": ref_size,
            "embeddings_vs_raw_int8": round(sizes["embeddings.tif"] / q_bytes, 3),
            "stage_timings_s": {k: round(v, 3) for k, v in timings.items()},
            "profile_matrix": matrix,
            "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()),
            "python": sys.version.split()[0],
        }
        (RESULTS / "publish.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "publish.md").write_text(_markdown(result))
        print(json.dumps({k: v for k, v in result.items() if k != "profile_matrix"}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Publisher benchmark",
        "",
        f"Tile `{r['tile']}` shape {r['shape']} (real size, synthetic values); "
        f"profile {r['profile']}; machine: {r['cpu_count']} cores, load {r['load_average']}.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| publish one tile (all assets, overviews, preview, checks) | {r['publish_s']} s |",
        f"| reference: {r['reference_tool']} | {r['reference_s']} s |",
        f"| ratio (target <= {r['ratio_target']}) | {r['ratio_publish_vs_reference']} |",
        f"| same COG driver copy without overviews (compression only) | "
        f"{r['reference_without_overviews_s']} s |",
        f"| ratio vs that (our whole pipeline vs GDAL's bare compression pass) | "
        f"{r['ratio_publish_vs_reference_without_overviews']} |",
        f"| tiles / min / core | {r['tiles_per_min_per_core']} |",
        f"| peak RSS per worker (target < {r['peak_rss_target_mb']} MB) | "
        f"{r['peak_rss_worker_mb']} MB (reference {r['peak_rss_reference_mb']} MB) |",
        f"| embeddings.tif vs raw int8 ({r['raw_int8_mb']} MB) | {r['embeddings_vs_raw_int8']} |",
        "",
        "Stage timings of one publish (s): "
        + ", ".join(f"{k} {v}" for k, v in r["stage_timings_s"].items()),
        "",
        "## Profile measurement (embeddings COG with overviews 2/4/8)",
        "",
        "| codec | level | predictor | block | size MB | size/raw | write s | point read ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in r["profile_matrix"]:
        lines.append(
            f"| {m['compress']} | {m['level']} | {m['predictor']} | {m['blocksize']} | "
            f"{m['size_mb']} | {m['size_vs_raw']} | {m['write_s']} | {m['point_read_ms']} |"
        )
    lines += ["", *NOTES]
    return "\n".join(lines) + "\n"


NOTES = [
    "## Reading these numbers",
    "",
    "* Times are the minimum of the runs, measured on a 2-core machine shared with other jobs",
    "  (load average above); ratios come from runs interleaved in the same process pattern.",
    "* The reference is GDAL's COG driver (what `gdal_translate -of COG` runs) with the same",
    "  codec, level, predictor, block size and overview levels, from an uncompressed",
    "  pixel-interleaved GeoTIFF of the same tile, overviews with NEAREST (GDAL's cheapest).",
    "  Building overviews of 128 pixel-interleaved bands dominates its time. Without overviews",
    "  (compression only) the same copy is the second reference: the whole publish (overviews,",
    "  scales COG, preview, strict validation, checksums, item) stays below it because the",
    "  publisher hands numpy buffers to GDAL zero-copy and writes the COG in one pass.",
    "* Peak RSS: max of `resource.getrusage(RUSAGE_SELF).ru_maxrss` and `/proc/self/status`",
    "  VmHWM in a fresh child process per run (the parent stays small).",
    "* Values are synthetic (smooth fields + per-pixel noise), so absolute compression ratios on",
    "  real TESSERA tiles will differ; the relative ranking of codecs/blocks is what chose the",
    "  profile: 128 px blocks (point reads 5-15x faster than 256/512 at equal size), horizontal",
    "  predictor (-25 % size), ZSTD level 1 (levels 1-9 equal in size, 1 fastest).",
]


if __name__ == "__main__":
    main()
