"""Heads benchmark: training on 1,000 labels and mapping a real-size tile, against references
measured in the same run.

Run with ``python -m bench bench_classify``. Writes ``bench/results/classify.json`` and
``bench/results/classify.md``.

Data: two real-size land-cover sample tiles (``SampleOptions.landcover``) across the 72°E UTM
boundary, 2024, 200 labels per class (1,000 labels), generated and published with the
project's own generator and publisher, static catalog built (cached in
``.tessera-stac/bench-classify``).

Training (1,000 labels):

* ``read labels``: our :func:`read_label_vectors` (the reader kernel: each touched block read
  once) against plain rasterio (``DatasetReader.sample`` of the embeddings and scales COGs,
  numpy dequantisation), same vectors.
* ``train``: our ``classify train`` end to end (read, random + blocked 5-fold CV, learning
  curve, final fit, report, chart, publish) for the linear probe and k-NN, against
  tessera-eval's own 5-fold CV of its ``nn`` (k-NN) classifier on the same vectors
  (``run_kfold_cv``, if ``pip install tessera-eval`` is present) and scikit-learn's
  ``cross_val_score`` of the same logistic pipeline. Ours does two cross-validations plus a
  learning curve, so the ratio is an upper bound on our overhead.

Mapping one real-size tile (grid_72.05_21.85):

* ``read``: reading and dequantising the whole tile through the reader kernel (strips).
* ``ours``: :func:`map_tile` (read, :meth:`Head.predict`, class + probability COGs with
  overviews, preview, item): target <= 1.5x the read.
* ``plain``: what a script (or tessera-eval's map export) does: rasterio reads the embeddings
  and scales, numpy dequantises (``tessera_eval.dequantize_int8`` when installed), the
  scikit-learn estimator predicts every valid pixel, rasterio writes a GeoTIFF.

Times are the best of ``REPEATS`` (mapping: ``MAP_REPEATS`` interleaved runs of the read, ours
and plain; k-NN maps: one run); the load average is recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CACHE = Path(
    os.environ.get("TESSERA_STAC_BENCH_CLASSIFY_DIR", ROOT / ".tessera-stac" / "bench-classify")
)
GRIDS = ("grid_71.95_21.85", "grid_72.05_21.85")
MAP_GRID = "grid_72.05_21.85"
YEAR = 2024
PER_CLASS = 200
REPEATS = 2
MAP_REPEATS = 4


def published() -> tuple[Path, Path]:
    """Generate + publish the land-cover tiles once (cached): (catalog root, labels file)."""
    from tessera_stac.catalog.model import GridCell
    from tessera_stac.catalog.static import build_static_catalog
    from tessera_stac.catalog.store import open_store
    from tessera_stac.publisher.embeddings import run, tiles
    from tessera_stac.publisher.samples.landcover import generate_landcover, labels_path

    source, dest = CACHE / "source", CACHE / "published"
    labels = labels_path(source, YEAR)
    if labels.is_file() and (dest / "catalog.json").is_file():
        return dest, labels
    shutil.rmtree(CACHE, ignore_errors=True)
    cells = [GridCell.parse(g) for g in GRIDS]
    generate_landcover(source, cells, [YEAR], per_class=PER_CLASS)
    report = run.publish(tiles.sources_for(str(source), cells, [YEAR]), str(dest), report=None)
    if report.failed:
        raise RuntimeError(f"publishing the benchmark tiles failed: {report.failed}")
    build_static_catalog(open_store(str(dest)))
    return dest, labels


def _best(fn: Any, repeats: int = REPEATS) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


# ------------------------------------------------------------------------------ training
def _plain_label_vectors(dest: Path, lonlat: np.ndarray) -> np.ndarray:
    """The label vectors with plain rasterio: sample both COGs per tile, dequantise."""
    import rasterio
    from pyproj import Transformer

    from tessera_stac.catalog.model import GridCell

    out = np.full((len(lonlat), 128), np.nan, np.float32)
    cells = np.array([GridCell.containing(x, y).name for x, y in lonlat])
    for grid in GRIDS:
        pick = np.flatnonzero(cells == grid)
        folder = dest / "tessera-embeddings-v1" / str(YEAR) / grid
        with (
            rasterio.open(folder / "embeddings.tif") as emb,
            rasterio.open(folder / "scales.tif") as scl,
        ):
            to = Transformer.from_crs("EPSG:4326", emb.crs, always_xy=True)
            xs, ys = to.transform(lonlat[pick, 0], lonlat[pick, 1])
            points = list(zip(xs, ys, strict=True))
            codes = np.array(list(emb.sample(points)), dtype=np.int8)
            scales = np.array(list(scl.sample(points)), dtype=np.float32)[:, 0]
        ok = np.isfinite(scales) & (codes != -128).all(axis=1)
        out[pick[ok]] = codes[ok].astype(np.float32) * scales[ok, None]
    return out


def bench_training(dest: Path, labels: Path) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tessera_stac.catalog.store import open_store
    from tessera_stac.publisher.classify.labels import read_labels
    from tessera_stac.publisher.classify.train import TrainOptions, gather, train
    from tessera_stac.publisher.classify.vectors import list_items, read_label_vectors

    store = open_store(str(dest))
    items = list_items(store, "tessera-embeddings-v1", YEAR)
    lab = read_labels(labels)
    lonlat = np.array([g["coordinates"] for g in lab.geometries], dtype=float)
    t_ours, samples = _best(lambda: read_label_vectors(items, lab.geometries))
    t_plain, plain = _best(lambda: _plain_label_vectors(dest, lonlat))
    same = bool(np.array_equal(samples.vectors, plain[samples.label]))

    out: dict[str, Any] = {
        "labels": len(lab),
        "read_labels": {
            "ours_s": t_ours,
            "rasterio_s": t_plain,
            "ratio": t_ours / t_plain,
            "same_vectors": same,
        },
    }
    for kind in ("logistic", "knn"):
        options = TrainOptions(name=f"bench-{kind}", year=YEAR, kind=kind, replace=True)
        t, result = _best(lambda o=options: train(labels, str(dest), o))
        cv = result.report["cross_validation"]
        out[f"train_{kind}"] = {
            "seconds": t,
            "accuracy_blocked": cv["blocked"]["accuracy"],
            "accuracy_random": cv["random"]["accuracy"],
        }
    data = gather(labels, store, TrainOptions(name="x", year=YEAR))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    t_sk, scores = _best(lambda: cross_val_score(lr, data.x, data.y, cv=folds))
    out["sklearn_lr_cv5"] = {"seconds": t_sk, "accuracy": float(np.mean(scores))}
    try:
        from tessera_eval import __version__ as te_version
        from tessera_eval import run_kfold_cv
    except ImportError:
        out["tessera_eval_nn_cv5"] = None
    else:

        def te_cv() -> list[dict[str, Any]]:
            return list(run_kfold_cv(data.x, data.y - 1, ["nn"], k=5, seed=0))

        t_te, events = _best(te_cv)
        agg = next(e for e in events if e.get("type") == "aggregate")
        out["tessera_eval_nn_cv5"] = {
            "version": te_version,
            "seconds": t_te,
            "metrics": agg["models"]["nn"],
        }
    return out


# ------------------------------------------------------------------------------ mapping
def _read_tile(entry: Any) -> tuple[float, float]:
    """Seconds to read + dequantise the whole tile through the kernel, strip by strip."""
    from tessera_stac.catalog.reader import EmbeddingReader
    from tessera_stac.publisher.classify.map import STRIP_ROWS

    start = time.perf_counter()
    total = 0.0
    with EmbeddingReader(entry.item, self_href=entry.href) as reader:
        height, width = reader.profile().shape
        for r0 in range(0, height, STRIP_ROWS):
            _, valid = reader.read(((r0, min(r0 + STRIP_ROWS, height)), (0, width)))
            total += float(valid.sum())
    return time.perf_counter() - start, total


def _plain_map(folder: Path, estimator: Any, out: Path) -> int:
    """rasterio read, numpy dequantise, sklearn predict on valid pixels, rasterio write."""
    import rasterio

    try:
        from tessera_eval import dequantize_int8
    except ImportError:

        def dequantize_int8(q: np.ndarray, s: np.ndarray) -> np.ndarray:
            return q.astype(np.float32) * s[..., None]

    with rasterio.open(folder / "embeddings.tif") as emb:
        codes = emb.read(out_dtype=np.int8).transpose(1, 2, 0)
        profile = emb.profile
    with rasterio.open(folder / "scales.tif") as scl:
        scales = scl.read(1)
    valid = np.isfinite(scales) & (codes[..., 0] != -128)
    values = dequantize_int8(codes, np.nan_to_num(scales))
    classes = np.zeros(valid.shape, np.uint8)
    classes[valid] = estimator.predict(values[valid])
    profile.update(count=1, dtype="uint8", nodata=0, compress="deflate", interleave="band")
    with rasterio.open(out, "w", **profile) as ds:
        ds.write(classes, 1)
    return int(valid.sum())


def bench_mapping(dest: Path, labels: Path, tmp: Path) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tessera_stac.catalog.heads import Head
    from tessera_stac.catalog.store import open_store
    from tessera_stac.publisher.classify.map import MapOptions, MapTask, map_tile
    from tessera_stac.publisher.classify.train import TrainOptions, gather, load_head
    from tessera_stac.publisher.classify.vectors import list_items

    store = open_store(str(dest))
    entry = next(
        i for i in list_items(store, "tessera-embeddings-v1", YEAR) if i.cell.name == MAP_GRID
    )
    data = gather(labels, store, TrainOptions(name="x", year=YEAR))
    folder = dest / "tessera-embeddings-v1" / str(YEAR) / MAP_GRID
    n_valid = _read_tile(entry)[1]
    reads: list[float] = []
    out: dict[str, Any] = {"tile": MAP_GRID, "valid_pixels": int(n_valid)}
    estimators = {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "knn": KNeighborsClassifier(n_neighbors=5, n_jobs=-1),  # as tessera-eval maps
    }
    for kind, estimator in estimators.items():
        estimator.fit(data.x, data.y)
        head, _ = load_head(store, f"bench-{kind}")
        options = MapOptions(
            dest=str(tmp / "maps"),
            scratch=str(tmp / "scratch"),
            head_json=head.to_json(),
            head_checksum="bench",
            processed=datetime.now(UTC),
            overwrite=True,
        )
        repeats = MAP_REPEATS if kind == "logistic" else 1
        ours, plain = [], []
        for _ in range(repeats):  # interleaved, so a burst of load hits all three alike
            reads.append(_read_tile(entry)[0])
            start = time.perf_counter()
            outcome = map_tile(MapTask(entry, options))
            ours.append(time.perf_counter() - start)
            if outcome.status != "ok":
                raise RuntimeError(outcome.reason)
            start = time.perf_counter()
            _plain_map(folder, estimator, tmp / "plain.tif")
            plain.append(time.perf_counter() - start)
        t_ours, t_plain, t_read = min(ours), min(plain), min(reads)
        out["read_s"] = t_read
        out[kind] = {
            "ours_s": t_ours,
            "ours_timings": outcome.timings,
            "plain_s": t_plain,
            "ours_over_read": t_ours / t_read,
            "ours_over_plain": t_ours / t_plain,
        }
        assert isinstance(head, Head)
    return out


def main() -> None:
    import tempfile

    RESULTS.mkdir(parents=True, exist_ok=True)
    dest, labels = published()
    load_before = os.getloadavg()
    training = bench_training(dest, labels)
    with tempfile.TemporaryDirectory(prefix="tessera-bench-classify-") as tmp:
        mapping = bench_mapping(dest, labels, Path(tmp))
    load_after = os.getloadavg()
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
        "training": training,
        "mapping": mapping,
    }
    (RESULTS / "classify.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    (RESULTS / "classify.md").write_text(_markdown(result))
    print(_markdown(result))


def _markdown(r: dict[str, Any]) -> str:
    t, m = r["training"], r["mapping"]
    te = t.get("tessera_eval_nn_cv5")
    te_row = (
        f"| tessera-eval {te['version']} `run_kfold_cv(['nn'], k=5)` (one CV) | "
        f"{te['seconds']:.2f} | - |\n"
        if te
        else "| tessera-eval (not installed) | - | - |\n"
    )
    return (
        "# Heads benchmark (bench/bench_classify.py)\n\n"
        f"Two real-size land-cover sample tiles ({', '.join(GRIDS)}, {YEAR}), "
        f"{t['labels']} labels; load average {r['load_before']} before, {r['load_after']} "
        f"after, on {r['cores']} cores (shared machine). Best of {REPEATS} runs.\n\n"
        "## Training\n\n"
        "| step | time (s) | accuracy (blocked / random) |\n|---|---|---|\n"
        f"| read 1,000 label vectors, reader kernel | {t['read_labels']['ours_s']:.2f} | - |\n"
        f"| same with rasterio `sample()` + numpy | {t['read_labels']['rasterio_s']:.2f} | - |\n"
        f"| `classify train` linear probe (2 CVs + learning curve + publish) | "
        f"{t['train_logistic']['seconds']:.2f} | {t['train_logistic']['accuracy_blocked']:.3f}"
        f" / {t['train_logistic']['accuracy_random']:.3f} |\n"
        f"| `classify train` k-NN (same) | {t['train_knn']['seconds']:.2f} | "
        f"{t['train_knn']['accuracy_blocked']:.3f} / {t['train_knn']['accuracy_random']:.3f} |\n"
        f"| scikit-learn `cross_val_score` of the same logistic pipeline (one CV) | "
        f"{t['sklearn_lr_cv5']['seconds']:.2f} | - / {t['sklearn_lr_cv5']['accuracy']:.3f} |\n"
        + te_row
        + f"\nLabel reads: kernel / rasterio = **{t['read_labels']['ratio']:.2f}x** "
        f"(same vectors: {t['read_labels']['same_vectors']}).\n\n"
        f"## Mapping one real-size tile ({m['tile']}, {m['valid_pixels']} valid pixels)\n\n"
        "| head | read + dequantise (s) | ours: map_tile (s) | plain rasterio + sklearn (s) | "
        "ours / read | ours / plain |\n|---|---|---|---|---|---|\n"
        + "".join(
            f"| {kind} | {m['read_s']:.2f} | {m[kind]['ours_s']:.2f} | {m[kind]['plain_s']:.2f} | "
            f"**{m[kind]['ours_over_read']:.2f}x** | {m[kind]['ours_over_plain']:.2f}x |\n"
            for kind in ("logistic", "knn")
        )
        + "\nTarget: the linear probe's map within 1.5x of reading the tile. `map_tile` also "
        "writes two COGs with overviews, a preview and the item; the plain script writes one "
        "GeoTIFF without overviews.\n"
    )


if __name__ == "__main__":
    main()
