"""Watershed features and vector tiles: our API's ``/features`` (tipg inside the STAC API, behind
its middlewares) against tipg as it ships serving the same table, in the same run.

A synthetic CoRE Stack MWS layer of about 1,000 micro-watersheds (the sample generator, real
polygon shapes and sizes) is published as an MWS item and loaded by ``tessera-stac load`` into
``tessera_features.mws`` of a throwaway pgSTAC database. Both servers are uvicorn subprocesses
(one worker) on that database:

* ``page``: ``/collections/tessera_features.mws/items?limit=1000`` (GeoJSON, every MWS);
* ``tile``: vector tiles (MVT) at zoom 12 over the layer, each request a tile that server has
  not drawn yet (the API's tile cache never answers).

Rounds alternate (bare, ours, ours, bare, ...) so drift on the shared machine hits both.
Target: our p50 <= 1.2x bare tipg. Results: ``bench/results/features.json`` and ``.md``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._support import md_table, percentile, temp_cluster, uvicorn_server, write_results

BBOX = (71.5, 21.5, 72.6, 22.5)
TARGET_HA = 1200.0
ZOOM = 12
ROUNDS = 6
PER_ROUND = 8
TABLE = "tessera_features.mws"


def publish_layer(root: Path) -> int:
    """A ~1,000-MWS sample layer published as a catalog under ``root``; its MWS count."""
    from tessera_stac.publisher.samples.mws import MwsLayerSpec, write_mws_layer
    from tessera_stac.publisher.watersheds.layer import BlockName, publish_mws_layer

    spec = MwsLayerSpec(bbox=BBOX, district="bench", block="thousand", target_ha=TARGET_HA)
    source = root / "layer.geojson"
    count = write_mws_layer(spec, source)
    publish_mws_layer(source, BlockName("Gujarat", "Bench", "Thousand"), root / "cat")
    return count


def tiles() -> list[Any]:
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    return list(tms.tiles(*BBOX, zooms=[ZOOM]))


def drive(fetch: Callable[[], bytes], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fetch()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    import httpx

    from tessera_stac.catalog.pgstac.load import load

    load_before = [round(v, 2) for v in os.getloadavg()]
    with temp_cluster() as cluster, tempfile.TemporaryDirectory() as tmpdir:
        root = Path(tmpdir)
        dsn = cluster.dsn()
        count = publish_layer(root)
        report = load(dsn, str(root / "cat" / "catalog.json"))
        assert report.features.get("mws") == count, report.features
        ours_env = {"TESSERA_STAC_DATABASE_URL": dsn}
        bare_env = {
            "DATABASE_URL": dsn,
            "TIPG_DB_SCHEMAS": json.dumps(["tessera_features"]),
            "TIPG_MAX_FEATURES_PER_QUERY": "10000",
        }
        grid = tiles()
        results: dict[str, Any] = {}
        with (
            uvicorn_server("tessera_stac.api.app:create_app_from_env", ours_env) as ours,
            uvicorn_server("bench._tipg_bare:create_app", bare_env, ping="/healthz") as bare,
        ):
            client = httpx.Client(timeout=120)
            roots = {"ours": f"{ours}/features", "bare": bare}

            def page(base: str) -> Callable[[], bytes]:
                def fetch() -> bytes:
                    r = client.get(f"{base}/collections/{TABLE}/items", params={"limit": 1000})
                    r.raise_for_status()
                    assert len(r.json()["features"]) == min(1000, count)
                    return r.content

                return fetch

            served = {base: 0 for base in roots.values()}

            def tile(base: str) -> Callable[[], bytes]:
                # each request a tile this server has not drawn yet (no cache hit on either)
                def fetch() -> bytes:
                    t = grid[served[base] % len(grid)]
                    served[base] += 1
                    r = client.get(
                        f"{base}/collections/{TABLE}/tiles/WebMercatorQuad/{t.z}/{t.x}/{t.y}"
                    )
                    r.raise_for_status()
                    return r.content

                return fetch

            for name, make in (("page", page), ("tile", tile)):
                samples: dict[str, list[float]] = {"ours": [], "bare": []}
                for side in ("ours", "bare"):  # warm-up: catalogs, pools, first plans
                    drive(make(roots[side]), 2)
                for r in range(ROUNDS):
                    order = ("bare", "ours") if r % 2 == 0 else ("ours", "bare")
                    for side in order:
                        samples[side] += drive(make(roots[side]), PER_ROUND)
                p50 = {k: percentile(v, 50) for k, v in samples.items()}
                results[name] = {
                    "ours_p50_ms": round(p50["ours"] * 1000, 1),
                    "bare_p50_ms": round(p50["bare"] * 1000, 1),
                    "ours_p90_ms": round(percentile(samples["ours"], 90) * 1000, 1),
                    "bare_p90_ms": round(percentile(samples["bare"], 90) * 1000, 1),
                    "ratio_p50": round(p50["ours"] / p50["bare"], 2),
                    "requests_each": len(samples["ours"]),
                }
    report_out = {
        "mws": count,
        "zoom": ZOOM,
        "tiles": len(grid),
        "tiles_requested_each": sum(served.values()) // 2,
        "results": results,
        "target": "ours p50 <= 1.2x bare tipg",
        "load_average_before": load_before,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    write_results("features", report_out, markdown(report_out))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Watershed features and vector tiles: /features vs bare tipg",
        "",
        f"{report['mws']} MWS in `tessera_features.mws`; vector tiles at zoom {report['zoom']} "
        f"({report['tiles']} tiles over the layer). Target: {report['target']}.",
        f"Load average before/after: {report['load_average_before']} / "
        f"{report['load_average_after']} on {report['cpus']} CPUs (shared machine).",
        "",
        *md_table(
            ("scenario", "ours p50 ms", "bare tipg p50 ms", "ratio", "ours p90 ms",
             "bare p90 ms"),
            [
                (name, r["ours_p50_ms"], r["bare_p50_ms"], r["ratio_p50"], r["ours_p90_ms"],
                 r["bare_p90_ms"])
                for name, r in report["results"].items()
            ],
        ),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"
