"""Catalog: item building, static catalog build and validation throughput.

What it measures (results in ``bench/results/catalog.{json,md}``):

* ``create_item``: items/s of the pure builder;
* ``catalog build``: seconds for N item JSONs on local disk (collection, model, root,
  stac-geoparquet index), items/s;
* validation: items/s of ``StacValidator`` (core + 6 extensions, offline schema mirror) against
  pystac's ``JsonSchemaSTACValidator`` (the reference tool) on the same items, as a ratio.

Run: ``python -m bench bench_catalog`` (env ``BENCH_CATALOG_ITEMS``, default 2000;
``BENCH_CATALOG_VALIDATE`` items validated per tool, default 300).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHARED = HERE.parent.parent / "shared"


def tiles(n: int) -> list[Any]:
    """``n`` PublishedTiles on a block of cells around 78.95E 22.55N, years 2023-2024."""
    from pyproj import Transformer

    from tessera_stac.catalog.model import AssetRecord, GridCell, PixelCounts, PublishedTile

    cog = "image/tiff; application=geotiff; profile=cloud-optimized"
    out: list[Any] = []
    side = int((n / 2) ** 0.5) + 1
    transformers: dict[int, Any] = {}
    for i in range(side * side):
        cell = GridCell(round(78.05 + 0.1 * (i % side), 2), round(22.05 + 0.1 * (i // side), 2))
        to_utm = transformers.setdefault(
            cell.utm_epsg, Transformer.from_crs(4326, cell.utm_epsg, always_xy=True)
        )
        w, s, e, nn = cell.bounds
        x0 = min(to_utm.transform(w, s)[0], to_utm.transform(w, nn)[0])
        y0 = max(to_utm.transform(w, nn)[1], to_utm.transform(e, nn)[1])
        for year in (2023, 2024):
            assets = {
                k: AssetRecord(k, f"./{f}", m, 1000, "1220" + "ab" * 32, ())
                for k, f, m in (
                    ("embeddings", "embeddings.tif", cog),
                    ("scales", "scales.tif", cog),
                    ("preview", "preview.png", "image/png"),
                )
            }
            out.append(
                PublishedTile(
                    cell,
                    year,
                    "tessera-embeddings-v1",
                    "TESSERA",
                    "v1",
                    cell.utm_epsg,
                    (10.0, 0.0, x0, 0.0, -10.0, y0),
                    (1110, 1030),
                    assets,
                    (),
                    PixelCounts(1, 0),
                    datetime(2025, 1, 1, tzinfo=UTC),
                    {"tessera-stac": "0.1.0"},
                )
            )
            if len(out) == n:
                return out
    return out


def main() -> None:
    """Run the benchmark and write bench/results/catalog.{json,md}."""
    from tessera_stac.catalog.stac import create_item, item_key
    from tessera_stac.catalog.static import build_static_catalog
    from tessera_stac.catalog.store import LocalStore
    from tessera_stac.catalog.validate import StacValidator

    n = int(os.environ.get("BENCH_CATALOG_ITEMS", "2000"))
    nv = int(os.environ.get("BENCH_CATALOG_VALIDATE", "300"))
    ts = tiles(n)
    t0 = time.perf_counter()
    items = [create_item(t).to_dict(include_self_link=False, transform_hrefs=False) for t in ts]
    t_build_items = time.perf_counter() - t0
    results: dict[str, Any] = {
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "items": n,
        "create_item_per_s": round(n / t_build_items, 1),
    }
    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as tmp:
        root = Path(tmp)
        for t, d in zip(ts, items, strict=True):
            path = root / item_key(t.collection_id, t.year, t.cell.name, t.item_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(d, indent=2))
        t0 = time.perf_counter()
        report = build_static_catalog(LocalStore(root))
        t_static = time.perf_counter() - t0
        assert report.ok, report.problems
        results["static_build_s"] = round(t_static, 2)
        results["static_build_items_per_s"] = round(n / t_static, 1)

    sample = items[:nv]
    ours = StacValidator(schema_dir=SHARED / "stac-schemas", offline=True)
    ours.validate(sample[0])  # warm the schema cache, as the reference's is pre-filled
    t0 = time.perf_counter()
    assert all(ours.validate(d).status == "valid" for d in sample)
    t_ours = time.perf_counter() - t0

    sys.path.insert(0, str(SHARED / "tools"))
    import pystac
    import stac_offline

    from tessera_stac.catalog import embedding

    stac_offline.install(extra={embedding.SCHEMA_URI: str(embedding.schema_path())})
    reference = stac_offline.pystac_validator()
    pystac.validation.validate_dict(sample[0], validator=reference)
    t0 = time.perf_counter()
    for d in sample:
        pystac.validation.validate_dict(d, validator=reference)
    t_ref = time.perf_counter() - t0
    results["validate_items"] = nv
    results["validate_ours_items_per_s"] = round(nv / t_ours, 1)
    results["validate_pystac_items_per_s"] = round(nv / t_ref, 1)
    results["validate_ratio_ours_over_pystac"] = round(t_ref / t_ours, 2)

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "catalog.json").write_text(json.dumps(results, indent=2) + "\n")
    md = [
        "# Catalog: builders, static build, validation",
        "",
        f"Measured {results['measured']} on {results['machine']} (shared machine: figures "
        "under contention).",
        "",
        "| what | result |",
        "|---|---|",
        f"| create_item | {results['create_item_per_s']} items/s |",
        f"| catalog build ({n} items, with geoparquet) | {results['static_build_s']} s "
        f"({results['static_build_items_per_s']} items/s) |",
        f"| validate, ours (core + all extensions, every error) | "
        f"{results['validate_ours_items_per_s']} items/s |",
        f"| validate, pystac JsonSchemaSTACValidator (first error only) | "
        f"{results['validate_pystac_items_per_s']} items/s |",
        f"| speed ratio ours / pystac | {results['validate_ratio_ours_over_pystac']} |",
        "",
    ]
    (RESULTS / "catalog.md").write_text("\n".join(md))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
