"""Dask distributed as the publish engine: speed-up of 2 workers over 1, and scheduler overhead.

* Speed-up: the same set of synthetic tiles published through the Dask engine with a
  LocalCluster of 1 worker process, then of 2 (one thread each), to fresh destinations; the
  outputs of the two runs must be byte-identical (asset checksums compared). Target >= 1.8x on 2
  cores.
* Overhead: no-op tasks (:func:`~tessera_stac.publisher.engines.dask_engine.probe_task`) through the
  engine: wall time per task at throughput, and the round trip of one task, next to the same
  no-op tasks through a ``ProcessPoolExecutor``.

Results: ``bench/results/dask.{json,md}``. Env: ``BENCH_DASK_TILES`` (default 8),
``BENCH_DASK_TILE_PX`` (tile side in pixels, default: the real ~1100 px), ``BENCH_DASK_NOTE``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def log(msg: str) -> None:
    """Progress on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def overhead(n_tasks: int = 2000) -> dict[str, Any]:
    """Per-task cost of no-op tasks through the Dask engine and through a process pool."""
    from tessera_stac.publisher.engines.dask_engine import DaskEngine, probe_task

    tasks = [(i, 0.0, False) for i in range(n_tasks)]
    out: dict[str, Any] = {"tasks": n_tasks}
    with DaskEngine(n_workers=2, threads_per_worker=1) as engine:
        list(engine.map(probe_task, tasks[:50]))  # warm-up
        start = time.perf_counter()
        done = sum(1 for _ in engine.map(probe_task, [(i, 0.0, False) for i in range(n_tasks)]))
        wall = time.perf_counter() - start
        assert done == n_tasks
        out["dask_ms_per_task"] = round(1000 * wall / n_tasks, 3)
        out["dask_tasks_per_s"] = round(n_tasks / wall, 1)
        trips = []
        for i in range(50):
            start = time.perf_counter()
            engine.client.submit(probe_task, (i, 0.0, False), pure=False).result()
            trips.append(time.perf_counter() - start)
        out["dask_round_trip_ms_p50"] = round(1000 * statistics.median(trips), 2)
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(probe_task, tasks[:50]))
        start = time.perf_counter()
        done = sum(1 for _ in pool.map(probe_task, tasks, chunksize=1))
        wall = time.perf_counter() - start
        out["pool_ms_per_task"] = round(1000 * wall / n_tasks, 3)
    return out


def speedup(n_tiles: int, tile_px: int | None) -> dict[str, Any]:
    """Publish the same tiles with 1 then 2 Dask workers; compare times and outputs."""
    import importlib.util

    if importlib.util.find_spec("tessera_stac.publisher.engines.local") is None:
        return {"skipped": "the publisher's per-tile task is not on this branch yet"}
    with tempfile.TemporaryDirectory(prefix="tessera-stac-bench-dask-") as tmp:
        return _publish_speedup(Path(tmp), n_tiles, tile_px)


def _publish_speedup(tmp: Path, n_tiles: int, tile_px: int | None) -> dict[str, Any]:
    from datetime import UTC, datetime

    from tessera_stac.catalog.model import GridCell
    from tessera_stac.publisher.embeddings import run, tiles
    from tessera_stac.publisher.engines.dask_engine import DaskEngine
    from tessera_stac.publisher.samples import tiles as sample

    year = 2024
    cells = [
        GridCell(round(77.05 + 0.1 * (i % 4), 2), round(12.05 + 0.1 * (i // 4), 2))
        for i in range(n_tiles)
    ]
    options = sample.SampleOptions(crop=(tile_px, tile_px) if tile_px else None)
    log(f"generating {n_tiles} tiles")
    for cell in cells:
        sample.write_tile(tmp / "src", cell, year, options)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    seconds: dict[int, float] = {}
    task_seconds: dict[int, float] = {}
    cpu_seconds: dict[int, float] = {}
    checksums: dict[int, dict[str, dict[str, str]]] = {}
    shape = None
    for workers in (1, 2):
        with DaskEngine(n_workers=workers, threads_per_worker=1) as engine:
            # warm the workers (imports, GDAL) outside the timing
            list(engine.map(probe_task_for_warmup, [(i, 0.0, False) for i in range(workers * 2)]))
            sources = tiles.sources_for(str(tmp / "src"), cells, [year])
            start = time.perf_counter()
            result = run.publish(
                sources, str(tmp / f"out{workers}"), engine=engine, now=now, report=None
            )
            seconds[workers] = time.perf_counter() - start
            task_seconds[workers] = statistics.fmean(o.seconds for o in result.outcomes)
            cpu_seconds[workers] = sum(engine.client.run(_worker_cpu_seconds).values())
        if result.failed:
            raise RuntimeError(f"publish failed: {[o.reason for o in result.failed]}")
        checksums[workers] = {
            t.item_id: {k: a.checksum for k, a in t.assets.items()} for t in result.published
        }
        shape = result.published[0].shape
        log(f"{workers} worker(s): {seconds[workers]:.1f} s")
    raw = sum(f.stat().st_size for f in (tmp / "src").rglob("*.npy"))
    written: dict[str, int] = {}
    objects = 0
    for path in (tmp / "out1").rglob("*"):
        if path.is_file() and "_reports" not in path.parts:
            objects += 1
            kind = path.suffix if path.suffix != ".tif" else path.name
            written[kind] = written.get(kind, 0) + path.stat().st_size
    return {
        "tiles": n_tiles,
        "tile_shape": list(shape or ()),
        "source_bytes_per_tile": round(raw / n_tiles),
        "written_bytes_per_tile": {k: round(v / n_tiles) for k, v in sorted(written.items())},
        "objects_written": objects,
        "seconds_1": round(seconds[1], 2),
        "seconds_2": round(seconds[2], 2),
        "seconds_per_tile_1": round(seconds[1] / n_tiles, 2),
        "speedup": round(seconds[1] / seconds[2], 2),
        "mean_task_seconds_1": round(task_seconds[1], 2),
        "mean_task_seconds_2": round(task_seconds[2], 2),
        "worker_cpu_seconds_1": round(cpu_seconds[1], 1),
        "worker_cpu_seconds_2": round(cpu_seconds[2], 1),
        "identical": checksums[1] == checksums[2],
    }


def _per_tile(s: dict[str, Any], key: str) -> Any:
    value = s.get(key)
    return round(value / s["tiles"], 2) if isinstance(value, int | float) else None


def _worker_cpu_seconds() -> float:
    """CPU time (user + system) the calling worker process has used so far."""
    t = os.times()
    return t.user + t.system


def probe_task_for_warmup(task: tuple[int, float, bool]) -> tuple[int, int]:
    """Warm-up task: import the publisher stack in the worker (not timed)."""
    import tessera_stac.publisher.embeddings.run  # noqa: F401
    from tessera_stac.publisher.engines.dask_engine import probe_task

    return probe_task(task)


def write_results(results: dict[str, Any]) -> None:
    """bench/results/dask.json and a short markdown summary."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dask.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    o, s = results["overhead"], results["speedup"]
    lines = [
        "# Dask distributed engine",
        "",
        f"Measured {results['when']} on {results['machine']}. {results['note']}",
        "",
        f"- Scheduler overhead: {o['dask_ms_per_task']} ms per no-op task at throughput "
        f"({o['dask_tasks_per_s']} tasks/s on 2 workers), one task's round trip "
        f"{o['dask_round_trip_ms_p50']} ms (p50); ProcessPoolExecutor: "
        f"{o['pool_ms_per_task']} ms per task.",
    ]
    if "skipped" in s:
        lines.append(f"- Speed-up: not measured ({s['skipped']}).")
    else:
        lines += [
            f"- Speed-up of 2 workers over 1 publishing {s['tiles']} tiles of "
            f"{s['tile_shape']} px (wall clock): {s['speedup']}x ({s['seconds_1']} s -> "
            f"{s['seconds_2']} s); outputs identical: {s['identical']}.",
            f"- CPU used by the workers: {s.get('worker_cpu_seconds_1')} s (1 worker) and "
            f"{s.get('worker_cpu_seconds_2')} s (2 workers), i.e. "
            f"{_per_tile(s, 'worker_cpu_seconds_1')} CPU-s per tile; mean task wall time "
            f"{s.get('mean_task_seconds_1')} s and {s.get('mean_task_seconds_2')} s. "
            "Under contention the CPU share the workers get, not the number of workers, "
            "bounds the wall clock: compare CPU-s per wall-s of the two runs.",
            f"- Per tile: source {s['source_bytes_per_tile'] / 1e6:.1f} MB; written "
            + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in s["written_bytes_per_tile"].items())
            + f"; {s['objects_written'] // max(1, s['tiles'])} objects.",
        ]
    (RESULTS / "dask.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Run both measurements and write the results."""
    n_tiles = int(os.environ.get("BENCH_DASK_TILES", 8))
    px = os.environ.get("BENCH_DASK_TILE_PX")
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "note": os.environ.get(
            "BENCH_DASK_NOTE", "Shared machine (other jobs running): figures under contention."
        ),
    }
    log("scheduler overhead (no-op tasks)")
    results["overhead"] = overhead()
    log(f"overhead: {results['overhead']}")
    log("speed-up of 2 workers over 1")
    results["speedup"] = speedup(n_tiles, int(px) if px else None)
    log(f"speed-up: {results['speedup']}")
    write_results(results)


if __name__ == "__main__":
    main(sys.argv[1:])
