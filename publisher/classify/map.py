"""Class maps: a published head applied to every pixel of every embedding tile of a year.

Per embedding item, on the tile's own grid (same CRS, transform and shape):

* ``classes.tif``: uint8 COG, the class value per pixel, 0 (nodata) on water and invalid
  pixels, overviews by mode (regression heads write no classes);
* ``probability.tif``: float32 COG, the winning class's probability (NaN nodata), overviews
  by nearest; ``value.tif`` instead for a regression head;
* ``preview.png``: the classes in their colours (transparent nodata);
* an Item in ``tessera-classes-{name}`` at ``{collection}/{item}/{item}.json``, ``derived_from``
  the embedding item and the model item.

Every pixel is read through the reader kernel (strip by strip) and classified by the head the
tiler and the API use: :meth:`Head.predict` on dequantised vectors, or, for per-pixel-scale
embeddings, :meth:`Head.predict_scaled_codes` on the codes and scales the kernel reads (the same
answer without making the float vectors: ``EmbeddingReader.read_scaled_codes``). Tiles are
independent tasks on the same engines as ``publish`` (serial, processes, Dask); a tile whose
item says it was made by this very head (``tessera:head_checksum``) and whose files still match
is skipped, so a killed run resumes where it stopped. The run report is written to
``_reports/classify-map-{run}.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from tessera_stac.catalog import constants as c
from tessera_stac.catalog.embedding import QuantizationMethod
from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.heads import Head
from tessera_stac.catalog.reader import EmbeddingReader, read_ahead
from tessera_stac.catalog.static import dump_json, put_collection, read_items
from tessera_stac.catalog.store import LocalStore, S3Store, multihash, open_store, sha256_file
from tessera_stac.catalog.store_settings import StorageSettings
from tessera_stac.publisher.classify.stac import (
    ClassAsset,
    class_item_id,
    class_item_key,
    create_class_item,
    create_classes_collection,
)
from tessera_stac.publisher.classify.train import load_head
from tessera_stac.publisher.classify.vectors import CatalogItem, list_items
from tessera_stac.publisher.embeddings.run import (
    clean_stale_scratch,
    outputs_match,
    scratch_root,
)
from tessera_stac.publisher.engines.local import Engine, SerialEngine

STRIP_ROWS = 128  # rows read and classified at once (~70 MB of float32 vectors per strip)
COG_BLOCK = 256
PREVIEW_MAX = 512  # the preview's longest side, in pixels
REPORTS_DIR = "_reports"


@dataclass(frozen=True)
class MapOptions:
    """What every tile task needs (picklable: plain values only)."""

    dest: str
    scratch: str
    head_json: bytes
    head_checksum: str
    processed: datetime
    overwrite: bool = False
    storage: dict[str, Any] | None = None

    def settings(self) -> StorageSettings | None:
        return StorageSettings(**self.storage) if self.storage is not None else None


@dataclass(frozen=True)
class MapTask:
    """One embedding item to map."""

    source: CatalogItem
    options: MapOptions


@dataclass(frozen=True)
class MapOutcome:
    """What happened to one tile."""

    item_id: str
    source_id: str
    status: str  # ok | skipped | failed
    seconds: float
    reason: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "item_id": self.item_id,
            "source": self.source_id,
            "status": self.status,
            "seconds": round(self.seconds, 3),
        }
        if self.reason:
            out["reason"] = self.reason
        if self.counts:
            out["pixels"] = dict(self.counts)
        if self.timings:
            out["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        return out


@dataclass(frozen=True)
class MapReport:
    """The result of a run (also written as JSON)."""

    run_id: str
    started: datetime
    seconds: float
    name: str
    year: int
    dest: str
    collection: str
    workers: int
    outcomes: tuple[MapOutcome, ...]
    report_href: str = ""

    @property
    def totals(self) -> dict[str, int]:
        out = {"ok": 0, "skipped": 0, "failed": 0}
        for outcome in self.outcomes:
            out[outcome.status] = out.get(outcome.status, 0) + 1
        return out

    @property
    def failed(self) -> list[MapOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started": self.started.isoformat(),
            "seconds": round(self.seconds, 3),
            "model": self.name,
            "year": self.year,
            "collection": self.collection,
            "workers": self.workers,
            "totals": self.totals,
            "tiles": [o.as_dict() for o in sorted(self.outcomes, key=lambda o: o.item_id)],
        }


# ------------------------------------------------------------------------------ one tile
def classify_tile(
    reader: EmbeddingReader, head: Head, strip_rows: int = STRIP_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """The head over a whole tile, strip by strip: (classes uint8 | value, probability).

    For a regression head both arrays are the float32 value. Strips are read through the
    kernel one step ahead (``read_ahead``: every read in the same background thread, so the
    reader's open datasets are never used by two threads at once).
    """
    grid = reader.profile()
    height, width = grid.shape
    classification = head.task == "classification"
    first = np.zeros((height, width), np.uint8) if classification else None
    second = np.full((height, width), np.nan, np.float32)
    starts = range(0, height, strip_rows)
    windows = [((r0, min(r0 + strip_rows, height)), (0, width)) for r0 in starts]
    # per-pixel-scale embeddings: the head runs on codes and scales (no float vectors made)
    scaled = reader.quantization.method is QuantizationMethod.PER_PIXEL_SCALE
    read: Callable[[Any], Any] = reader.read_scaled_codes if scaled else reader.read
    jobs = (partial(read, w) for w in windows)
    # the next strip is read (in one background thread) while the head runs on this one
    for r0, got in zip(starts, read_ahead(jobs), strict=True):
        r1 = min(r0 + strip_rows, height)
        a, b = head.predict_scaled_codes(*got) if scaled else head.predict(*got)
        if first is not None:
            first[r0:r1] = a
        second[r0:r1] = b
    return (first if first is not None else second), second


def _write_cog(path: Path, array: np.ndarray, grid: Any, resampling: str) -> None:
    """A COG of one band on the tile's grid (GDAL's COG driver; overviews by ``resampling``)."""
    import rasterio
    from rasterio.transform import Affine

    nodata: float = c.CLASS_NODATA if array.dtype == np.uint8 else float("nan")
    profile = {
        "driver": "COG",
        "dtype": str(array.dtype),
        "count": 1,
        "height": array.shape[0],
        "width": array.shape[1],
        "crs": grid.crs,
        "transform": Affine(*grid.transform[:6]),
        "nodata": nodata,
        "BLOCKSIZE": COG_BLOCK,
        "COMPRESS": "ZSTD",  # level 1: 2x faster than DEFLATE here, as the embedding COGs
        "LEVEL": 1,
        "PREDICTOR": 2 if array.dtype == np.uint8 else 3,
        "RESAMPLING": resampling,
        "OVERVIEWS": "IGNORE_EXISTING",
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(array, 1)


def _preview(path: Path, classes: np.ndarray, head: Head) -> None:
    """The classes in their colours, decimated to at most PREVIEW_MAX px, nodata transparent."""
    from PIL import Image

    step = max(1, -(-max(classes.shape) // PREVIEW_MAX))
    small = classes[::step, ::step]
    lut = np.zeros((256, 4), np.uint8)
    for cl in head.classes:
        lut[cl.value] = cl.rgba()
    Image.fromarray(lut[small], mode="RGBA").save(path, format="PNG")


def _already_done(store: LocalStore | S3Store, key: str, iid: str, checksum: str) -> bool:
    if not store.exists(key):
        return False
    try:
        item = json.loads(store.read_bytes(key))
    except ValueError:
        return False
    if item.get("properties", {}).get(c.HEAD_CHECKSUM_PROP) != checksum:
        return False
    return outputs_match(store, key.rsplit("/", 1)[0], iid)


def map_tile(task: MapTask) -> MapOutcome:
    """Map one embedding tile; never raises (a failure comes back as an outcome)."""
    start = time.perf_counter()
    src, opts = task.source, task.options
    iid = class_item_id(src)
    timings: dict[str, float] = {}
    scratch = Path(opts.scratch) / f"{iid}-{uuid.uuid4().hex[:8]}"
    try:
        head = Head.from_json(opts.head_json)
        settings = opts.settings()
        store = open_store(opts.dest, settings)
        key = class_item_key(head.name, iid)
        if not opts.overwrite and _already_done(store, key, iid, opts.head_checksum):
            return MapOutcome(iid, src.id, "skipped", time.perf_counter() - start)
        t = time.perf_counter()
        gdal_env = settings.gdal_env() if settings is not None else None
        with EmbeddingReader(src.item, gdal_env=gdal_env, self_href=src.href) as reader:
            grid = reader.profile()
            first, second = classify_tile(reader, head)
        timings["classify"] = time.perf_counter() - t
        t = time.perf_counter()
        scratch.mkdir(parents=True, exist_ok=True)
        files: list[tuple[str, str, str]] = []  # asset key, file name, media type
        cog = "image/tiff; application=geotiff; profile=cloud-optimized"
        if head.task == "classification":
            _write_cog(scratch / "classes.tif", first, grid, "MODE")
            _write_cog(scratch / "probability.tif", second, grid, "NEAREST")
            _preview(scratch / "preview.png", first, head)
            files += [
                (c.CLASSES_ASSET, "classes.tif", cog),
                (c.PROBABILITY_ASSET, "probability.tif", cog),
                (c.CLASSES_PREVIEW_ASSET, "preview.png", c.PNG_MEDIA_TYPE),
            ]
            counts = {"nodata": int(np.count_nonzero(first == c.CLASS_NODATA))}
            found = np.bincount(first.ravel(), minlength=256)
            counts.update({cl.name: int(found[cl.value]) for cl in head.classes})
        else:
            _write_cog(scratch / "value.tif", second, grid, "NEAREST")
            files.append((c.VALUE_ASSET, "value.tif", cog))
            nan = int(np.count_nonzero(np.isnan(second)))
            counts = {"nodata": nan, "valid": int(second.size - nan)}
        timings["write"] = time.perf_counter() - t
        t = time.perf_counter()
        folder = key.rsplit("/", 1)[0]
        assets = []
        for asset_key, name, media in files:
            digest = sha256_file(scratch / name)
            size = (scratch / name).stat().st_size
            store.put_file(scratch / name, f"{folder}/{name}", media, digest)  # may move it
            assets.append(ClassAsset(asset_key, f"./{name}", size, multihash(digest)))
        epsg = int(str(grid.crs).split(":")[-1]) if str(grid.crs).startswith("EPSG:") else 0
        item = create_class_item(
            head,
            src,
            {"epsg": epsg, "shape": grid.shape, "transform": grid.transform},
            assets,
            counts,
            opts.head_checksum,
            opts.processed,
        )
        store.put_bytes(dump_json(item), key, c.GEOJSON_MEDIA_TYPE)  # the item last
        timings["upload"] = time.perf_counter() - t
        return MapOutcome(iid, src.id, "ok", time.perf_counter() - start, "", counts, timings)
    except Exception as exc:  # one bad tile never stops the run
        reason = f"{type(exc).__name__}: {exc}"
        return MapOutcome(iid, src.id, "failed", time.perf_counter() - start, reason)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _engine_failure(task: MapTask, error: BaseException) -> MapOutcome:
    return MapOutcome(
        class_item_id(task.source),
        task.source.id,
        "failed",
        0.0,
        f"worker failed: {type(error).__name__}: {error}",
    )


# ------------------------------------------------------------------------------ a run
def map_classes(
    name: str,
    year: int,
    dest: str,
    *,
    engine: Engine | None = None,
    settings: StorageSettings | None = None,
    overwrite: bool = False,
    grids: Iterable[str] | None = None,
    now: datetime | None = None,
    report: bool = True,
    on_done: Callable[[MapOutcome], None] | None = None,
) -> MapReport:
    """Map every embedding tile of ``year`` with the published head ``name``.

    Args:
        name: the head (``tessera-models/{name}``).
        year: the year of embeddings to map (any year of the head's collection).
        dest: the published static catalog (folder or ``s3://bucket/prefix``).
        engine: how to run tiles (default: serial).
        settings: S3 settings.
        overwrite: remap tiles already mapped by this head.
        grids: only these cells (default: every tile of the year).
        now: the run's timestamp.
        report: write ``_reports/classify-map-{run}.json``.
        on_done: called with each outcome (progress bars).

    Raises:
        InputError: no such head, or no embedding tile of that year.
    """
    started = now or datetime.now(UTC)
    store = open_store(dest, settings)
    head, _ = load_head(store, name)
    items = list_items(store, head.collection, year)
    if grids is not None:
        wanted = set(grids)
        items = [i for i in items if i.cell.name in wanted]
    if not items:
        raise InputError(f"{store.uri}: no {head.collection} tiles of {year} to map")
    head_json = head.to_json()
    root = scratch_root(store)
    clean_stale_scratch(root)
    run_id = f"{started.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"
    scratch = root / f"run-{os.getpid()}-{run_id}"
    scratch.mkdir(parents=True, exist_ok=True)
    options = MapOptions(
        dest=store.uri,
        scratch=str(scratch),
        head_json=head_json,
        head_checksum=multihash(hashlib.sha256(head_json).hexdigest()),
        processed=started,
        overwrite=overwrite,
        storage=settings.model_dump() if settings is not None else None,
    )
    run_engine = engine or SerialEngine()
    outcomes: list[MapOutcome] = []
    clock = time.perf_counter()
    try:
        tasks = (MapTask(item, options) for item in items)
        for outcome in run_engine.map(map_tile, tasks, on_error=_engine_failure):
            outcomes.append(outcome)
            if on_done is not None:
                on_done(outcome)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        with contextlib.suppress(OSError):
            root.rmdir()
    cid = c.classes_collection_id(name)
    published = read_items(store, cid)
    if published:
        put_collection(store, create_classes_collection(head, published), published)
    result = MapReport(
        run_id=run_id,
        started=started,
        seconds=time.perf_counter() - clock,
        name=name,
        year=year,
        dest=store.uri,
        collection=cid,
        workers=int(getattr(run_engine, "workers", None) or 1),
        outcomes=tuple(outcomes),
    )
    if not report:
        return result
    key = f"{REPORTS_DIR}/classify-map-{run_id}.json"
    store.put_bytes(json.dumps(result.as_dict(), indent=2).encode(), key, c.JSON_MEDIA_TYPE)
    return MapReport(**{**result.__dict__, "report_href": store.join(key)})
