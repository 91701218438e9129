"""Heads in the API: ``POST /classify`` with 500 labels, and class tiles, against references
measured in the same run.

Data: the four 768 px windows of ``bench_tiles`` (real grids at 72°E / 21.8°N, two UTM zones,
the published COG profile), a 3-class head fitted by scikit-learn on k-means clusters of their
vectors, and its class map of one window written as a uint8 COG (nodata 0, overviews by
nearest) with ``classification:classes``, all loaded into a throwaway pgSTAC; the API runs as a
uvicorn subprocess (one worker, its tile cache off so every request draws its tile).

* ``POST /classify`` (500 labels, 3 classes, linear probe): read the vectors at the labels,
  fit, random + spatially blocked 5-fold CV, store the temporary model. Reference: the parts
  done directly in the same run: ``POST /embeddings/positions`` of the same 500 points (the
  read, over HTTP) plus scikit-learn's ``LogisticRegression`` fit and one 5-fold
  ``cross_val_predict`` in this process. Ours does one more cross-validation and the storing.
* class tiles: zoom 14, 256 px PNG of the class item, drawn in its classes' colours, against
  bare rio-tiler (``Reader.tile`` + ``render`` with the same colormap) in this process; and
  ``algorithm=classify`` on the embedding item (the head on 129 bands) against bare rio-tiler
  reading both assets, dequantising with numpy and ``Head.predict``.

Rounds alternate (reference, ours, ours, reference...). Results: ``bench/results/
classify_api.json`` and ``classify_api.md``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench._support import (
    COLLECTION,
    md_table,
    percentile,
    temp_cluster,
    uvicorn_server,
    write_ndjson,
)
from bench.bench_tiles import CELLS, YEAR, inside, write_tile

HERE = Path(__file__).resolve().parent
LABELS = 500
ROUNDS = 4
PER_ROUND = 6
CLASSES = [
    {"value": 1, "name": "cropland", "color": "#e8c547"},
    {"value": 2, "name": "forest", "color": "#1b7837"},
    {"value": 3, "name": "water", "color": "#2c7fb8"},
]


def _vectors(item: dict[str, Any], rows: Any, cols: Any) -> Any:
    import rasterio

    with (
        rasterio.open(item["assets"]["embeddings"]["href"]) as ds,
        rasterio.open(item["assets"]["scales"]["href"]) as sd,
    ):
        q = ds.read()
        s = sd.read(1)
        transform, crs = ds.transform, ds.crs
    return q[:, rows, cols].T.astype(np.float32) * s[rows, cols, None], transform, crs, q, s


def fit_head(items: list[dict[str, Any]]) -> Any:
    """A 3-class logistic head (scikit-learn on k-means clusters of sampled vectors)."""
    from sklearn.cluster import KMeans
    from sklearn.linear_model import LogisticRegression

    from tessera_stac.catalog.heads import Head

    rng = np.random.default_rng(0)
    x = np.vstack(
        [_vectors(i, rng.integers(0, 768, 400), rng.integers(0, 768, 400))[0] for i in items]
    )
    clusters = KMeans(3, n_init=4, random_state=0).fit_predict(x)
    fit = LogisticRegression(max_iter=2000).fit(x, clusters)
    return Head.from_dict(
        {
            "type": "tessera-head",
            "version": 1,
            "name": "benchhead",
            "kind": "logistic",
            "task": "classification",
            "collection": COLLECTION,
            "year": YEAR,
            "classes": CLASSES,
            "coef": fit.coef_.tolist(),
            "intercept": fit.intercept_.tolist(),
        }
    )


def class_item(root: Path, item: dict[str, Any], head: Any) -> dict[str, Any]:
    """The class map of ``item`` (uint8 COG, overviews) and its item."""
    import rasterio
    from rasterio.enums import Resampling

    _, transform, crs, q, s = _vectors(item, np.array([0]), np.array([0]))
    values = np.moveaxis(q.astype(np.float32) * s[None], 0, -1)
    valid = (q != -128).all(axis=0) & np.isfinite(s)
    classes, _ = head.predict(values, valid)
    folder = root / "tessera-classes-benchhead" / item["id"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "classes.tif"
    with rasterio.open(
        path, "w", driver="GTiff", height=768, width=768, count=1, dtype="uint8", nodata=0,
        crs=crs, transform=transform, tiled=True, blockxsize=256, blockysize=256,
        compress="zstd",
    ) as dst:  # fmt: skip
        dst.write(classes[None])
        dst.build_overviews([2, 4, 8], Resampling.nearest)
    out = json.loads(json.dumps(item))
    out["collection"] = "tessera-classes-benchhead"
    out["assets"] = {
        "classes": {
            "href": str(path),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "classification:classes": [
                {
                    "value": c["value"],
                    "name": c["name"],
                    "description": c["name"],
                    "color_hint": str(c["color"]).lstrip("#"),
                }
                for c in CLASSES
            ],
        }
    }
    out["links"] = []
    return out


def summarise(latencies: list[float]) -> dict[str, float]:
    return {
        "n": len(latencies),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
    }


def alternate(ours: Callable[[], Any], reference: Callable[[], Any], n: int) -> dict[str, Any]:
    ours()
    reference()
    times: dict[str, list[float]] = {"ours": [], "reference": []}
    for round_ in range(ROUNDS):
        order = ("reference", "ours") if round_ % 2 == 0 else ("ours", "reference")
        for who in order:
            fn = ours if who == "ours" else reference
            for _ in range(n):
                start = time.perf_counter()
                fn()
                times[who].append(time.perf_counter() - start)
    stats: dict[str, Any] = {who: summarise(t) for who, t in times.items()}
    stats["ratio_p50"] = round(stats["ours"]["p50_ms"] / stats["reference"]["p50_ms"], 2)
    return stats


def main() -> None:
    import httpx
    import morecantile
    from rio_tiler.io import Reader
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from tessera_stac.api.classify import classes_colormap
    from tessera_stac.catalog.pgstac.load import load

    load_before = [round(v, 2) for v in os.getloadavg()]
    results: dict[str, Any] = {}
    with temp_cluster() as cluster, tempfile.TemporaryDirectory() as tmpdir:
        root = Path(tmpdir)
        dsn = cluster.dsn()
        items = [write_tile(root, lon, lat) for lon, lat in CELLS]
        head = fit_head(items)
        target = items[1]
        classes_item = class_item(root, target, head)
        from bench._support import collection

        coll = collection()
        ccoll = {**collection(), "id": "tessera-classes-benchhead"}
        load(dsn, str(write_ndjson(root / "a.ndjson", [coll, *items, ccoll, classes_item])))
        # labels: 500 valid pixel centres of the target window, classed by the head
        rng = np.random.default_rng(1)
        rows, cols = rng.integers(0, 768, LABELS), rng.integers(0, 768, LABELS)
        x, transform, crs, _, _ = _vectors(target, rows, cols)
        y, _ = head.predict(x, np.ones(len(x), dtype=bool))
        from pyproj import Transformer
        from rasterio.transform import xy

        xs, ys = xy(transform, rows, cols, offset="center")
        lon, lat = Transformer.from_crs(crs, 4326, always_xy=True).transform(xs, ys)
        names = {c["value"]: c["name"] for c in CLASSES}
        labels = [
            {"lon": float(a), "lat": float(b), "class": names[int(c)]}
            for a, b, c in zip(lon, lat, y, strict=True)
        ]
        points = [{"lon": lab["lon"], "lat": lab["lat"]} for lab in labels]
        with uvicorn_server(
            "tessera_stac.api.app:create_app_from_env",
            # no tile cache: every request draws its tile (the references have none either)
            {"TESSERA_STAC_DATABASE_URL": dsn, "TESSERA_STAC_API_TILE_CACHE_MB": "0"},
        ) as url:
            client = httpx.Client(timeout=300)

            def ours_classify() -> None:
                got = client.post(f"{url}/classify", json={"year": YEAR, "labels": labels})
                got.raise_for_status()

            def reference_classify() -> None:
                got = client.post(
                    f"{url}/embeddings/positions", json={"points": points, "year": YEAR}
                )
                got.raise_for_status()
                vectors = np.array([r["embedding"] for r in got.json()["results"]], np.float32)
                est = LogisticRegression(max_iter=2000)
                cv = StratifiedKFold(5, shuffle=True, random_state=0)
                cross_val_predict(est, vectors, y, cv=cv)
                est.fit(vectors, y)

            results["post_classify_500"] = alternate(ours_classify, reference_classify, 2)
            tiles = inside(target["assets"]["embeddings"]["href"], 72.02, 21.78)
            tms = morecantile.tms.get("WebMercatorQuad")
            assert tms is not None
            colormap = classes_colormap(classes_item["assets"]["classes"]["classification:classes"])
            base = f"{url}/tiles/collections"
            state = {"i": 0}

            def next_tile() -> Any:
                state["i"] += 1
                return tiles[state["i"] % len(tiles)]

            def ours_class_tile() -> None:
                t = next_tile()
                url_ = (
                    f"{base}/tessera-classes-benchhead/items/{target['id']}/tiles/"
                    f"WebMercatorQuad/{t.z}/{t.x}/{t.y}.png?assets=classes"
                )
                try:
                    got = client.get(url_)
                except httpx.HTTPError as exc:
                    raise RuntimeError(f"{url_}: {exc}") from exc
                got.raise_for_status()

            def bare_class_tile() -> None:
                t = next_tile()
                with Reader(classes_item["assets"]["classes"]["href"]) as src:
                    img = src.tile(t.x, t.y, t.z, resampling_method="nearest")
                img.render(img_format="PNG", colormap=colormap)

            results["class_tile"] = alternate(ours_class_tile, bare_class_tile, PER_ROUND)
            # the on-the-fly head needs a published model item: a temporary one from the
            # labels stands in (same kind of head, same work per pixel)
            body = {"year": YEAR, "labels": labels}
            made = client.post(f"{url}/classify", json=body).json()
            params = {"model": made["model"]}
            from tessera_stac.catalog.heads import Head

            temp_head = Head.from_dict(
                client.get(f"{url}/classify/{made['model']}").json()["model"]
            )

            def ours_classify_tile() -> None:
                t = next_tile()
                got = client.get(
                    f"{base}/{COLLECTION}/items/{target['id']}/tiles/WebMercatorQuad/"
                    f"{t.z}/{t.x}/{t.y}.png",
                    params=[("assets", "embeddings"), ("assets", "scales"),
                            ("algorithm", "classify"), ("algorithm_params", json.dumps(params))],
                )  # fmt: skip
                got.raise_for_status()

            def bare_classify_tile() -> None:
                t = next_tile()
                parts = []
                for key in ("embeddings", "scales"):
                    with Reader(target["assets"][key]["href"]) as src:
                        parts.append(src.tile(t.x, t.y, t.z, resampling_method="nearest"))
                codes = np.ma.getdata(parts[0].array)
                scale = np.ma.getdata(parts[1].array)[0]
                values = np.moveaxis(codes.astype(np.float32) * scale[None], 0, -1)
                valid = (codes != -128).all(axis=0) & np.isfinite(scale)
                classes, _ = temp_head.predict(values, valid)
                from rio_tiler.models import ImageData

                ImageData(np.ma.MaskedArray(classes[None], mask=~valid[None])).render(
                    img_format="PNG", colormap=colormap
                )

            results["classify_tile"] = alternate(ours_classify_tile, bare_classify_tile, PER_ROUND)
            client.close()
    report = {
        "labels": LABELS,
        "rounds": ROUNDS,
        "load_average_before": load_before,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
        "scenarios": results,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "classify_api.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "classify_api.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Heads in the API: POST /classify and class tiles against references, same run",
        "",
        f"{report['rounds']} alternating rounds. Load average before/after: "
        f"{report['load_average_before']} / {report['load_average_after']} on "
        f"{report['cpus']} CPUs (shared machine).",
        "",
        *md_table(
            ("scenario", "ours p50 ms", "ours p99 ms", "reference p50 ms", "reference p99 ms",
             "ratio p50"),
            [
                (name, s["ours"]["p50_ms"], s["ours"]["p99_ms"], s["reference"]["p50_ms"],
                 s["reference"]["p99_ms"], s["ratio_p50"])
                for name, s in report["scenarios"].items()
            ],
        ),
    ]  # fmt: skip
    lines += [
        "",
        "References: `post_classify_500` = `POST /embeddings/positions` of the same points + "
        "scikit-learn fit + one 5-fold CV (ours adds the blocked CV and storing the model); "
        "`class_tile` = bare rio-tiler tile + render with the class colormap; `classify_tile` "
        "= bare rio-tiler on both assets + numpy dequantisation + `Head.predict` + render.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
