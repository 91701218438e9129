"""Publishing runs: per-tile work (:func:`publish_tile`) and the run around it (:func:`publish`).

Per (tile, year) the publisher writes, under ``{collection}/{year}/{grid}/``::

    embeddings.tif   int8 x 128 COG, nodata -128
    scales.tif       float32 COG, NaN = invalid
    preview.png      fixed-projection RGB preview
    {item_id}.json   the STAC Item - written LAST: its presence marks the tile complete

Each file is written into a scratch folder, verified, checksummed, then moved (local) or
uploaded (S3) into place. A re-run skips a tile whose item exists and whose assets still match
the ``file:size`` / ``file:checksum`` it records (``overwrite`` forces). A run killed at any
moment leaves only complete files in the destination; the next run removes the dead run's
scratch folder and completes what is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tessera_stac.catalog import constants as c
from tessera_stac.catalog.errors import InputError, TesseraStacError
from tessera_stac.catalog.hrefs import is_public, scrub_local_paths
from tessera_stac.catalog.model import AssetRecord, PixelCounts, PublishedTile
from tessera_stac.catalog.profile import (
    EMBEDDINGS,
    PREVIEW_FILENAME,
    PREVIEW_KEY,
    PREVIEW_MEDIA_TYPE,
    SCALES,
    CogProfile,
)
from tessera_stac.catalog.stac import create_item
from tessera_stac.catalog.store import (
    LocalStore,
    S3Store,
    multihash,
    open_store,
    sha256_file,
)
from tessera_stac.catalog.store_settings import StorageSettings
from tessera_stac.publisher.embeddings import cog, preview
from tessera_stac.publisher.embeddings.tiles import LoadedTile, TileSource, load_tile
from tessera_stac.publisher.embeddings.zarr_source import EmptyCellError, ZarrCell
from tessera_stac.publisher.engines.local import Engine, SerialEngine
from tessera_stac.publisher.lifeline import alive

SCRATCH_DIR = ".tessera-stac-tmp"
#: Report warning of a tile published without a landmask (its item has tessera:landmask false).
NO_LANDMASK = (
    "no landmask: water is not masked, its pixels hold embeddings (item tessera:landmask=false)"
)
REPORTS_DIR = "_reports"


def default_collection(model_version: str) -> str:
    """``tessera-embeddings-{model_version}``, e.g. ``tessera-embeddings-v1``."""
    return f"tessera-embeddings-{model_version}"


@dataclass(frozen=True)
class PublishOptions:
    """How a run publishes (shared by all its tile tasks; picklable).

    Attributes:
        dest: local directory or ``s3://bucket/prefix``.
        scratch: this run's scratch folder (local; same file system as a local ``dest``).
        processed: the run's timestamp, recorded in every item.
        model_version: e.g. ``v1``; one collection per model version.
        collection: collection id (default ``tessera-embeddings-{model_version}``).
        overwrite: republish tiles even when their outputs already match.
        storage: S3 settings of the destination as a dict (``StorageSettings(**storage)``).
        source_storage: S3 settings of the sources (default: ``storage``), e.g. anonymous
            reads of a public mirror while writing with credentials.
        threads: GDAL compression threads per tile.
    """

    dest: str
    scratch: str
    processed: datetime
    model_version: str = "v1"
    collection: str | None = None
    overwrite: bool = False
    storage: dict[str, Any] | None = None
    source_storage: dict[str, Any] | None = None
    threads: int = 1
    model_name: str = c.MODEL_NAME
    require_landmask: bool = False

    @property
    def collection_id(self) -> str:
        """The collection the items belong to."""
        return self.collection or default_collection(self.model_version)

    def settings(self) -> StorageSettings | None:
        """S3 settings of the destination, rebuilt in the worker."""
        return StorageSettings(**self.storage) if self.storage is not None else None

    def source_settings(self) -> StorageSettings | None:
        """S3 settings of the sources (the destination's unless given)."""
        if self.source_storage is not None:
            return StorageSettings(**self.source_storage)
        return self.settings()


@dataclass(frozen=True)
class TileTask:
    """One (tile, year) to publish: ``.npy`` files, or a cell of a Zarr store."""

    source: TileSource | ZarrCell
    options: PublishOptions


@dataclass(frozen=True)
class TileOutcome:
    """What happened to one tile: ``ok``, ``skipped`` or ``failed`` (with the reason)."""

    item_id: str
    grid: str
    year: int
    status: str
    seconds: float
    reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    item_href: str = ""
    tile: PublishedTile | None = None
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the run report."""
        out: dict[str, Any] = {
            "item_id": self.item_id,
            "grid": self.grid,
            "year": self.year,
            "status": self.status,
            "seconds": round(self.seconds, 3),
        }
        if self.reason:
            out["reason"] = self.reason
        if self.timings:
            out["timings"] = {k: round(v, 3) for k, v in self.timings.items()}
        if self.counts:
            out["counts"] = self.counts
        if self.item_href:
            out["item"] = self.item_href
        if self.tile is not None:
            out["sources"] = list(self.tile.sources)
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def tile_prefix(collection: str, year: int, grid: str) -> str:
    """Key prefix of a tile's objects: ``{collection}/{year}/{grid}``."""
    return f"{collection}/{year}/{grid}"


def software_versions() -> dict[str, str]:
    """Versions recorded in the items' processing metadata."""
    from importlib.metadata import PackageNotFoundError, version

    import rasterio

    out = {"gdal": str(rasterio.__gdal_version__), "rasterio": str(rasterio.__version__)}
    try:
        out["tessera-stac"] = version("tessera-stac")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        out["tessera-stac"] = "0+unknown"
    return out


# ------------------------------------------------------------------------- one tile
def outputs_match(store: LocalStore | S3Store, prefix: str, item_id: str) -> bool:
    """True when ``{prefix}/{item_id}.json`` exists and every asset it lists still matches."""
    key = f"{prefix}/{item_id}.json"
    if not store.exists(key):
        return False
    try:
        item = json.loads(store.read_bytes(key))
        assets = item["assets"]
        checks = [
            (a["href"], int(a["file:size"]), str(a["file:checksum"])) for a in assets.values()
        ]
    except (ValueError, KeyError, TypeError):
        return False
    if not checks:
        return False
    for href, size, checksum in checks:
        if not href.startswith("./") or not store.matches(f"{prefix}/{href[2:]}", size, checksum):
            return False
    return True


def publish_tile(task: TileTask) -> TileOutcome:
    """Publish one (tile, year); never raises - failures come back as an outcome.

    This is the unit of parallel work (a top-level function, picklable with its task).
    """
    start = time.perf_counter()
    src, opts = task.source, task.options
    timer = _Timer()
    scratch = Path(opts.scratch) / f"{src.item_id}-{uuid.uuid4().hex[:8]}"

    def outcome(status: str, **fields: Any) -> TileOutcome:
        return TileOutcome(
            item_id=src.item_id,
            grid=src.grid,
            year=src.year,
            status=status,
            seconds=time.perf_counter() - start,
            timings=timer.timings,
            **fields,
        )

    try:
        store = open_store(opts.dest, opts.settings())
        prefix = tile_prefix(opts.collection_id, src.year, src.grid)
        item_key = f"{prefix}/{src.item_id}.json"
        if not opts.overwrite:
            with timer("check_existing"):
                done = outputs_match(store, prefix, src.item_id)
            if done:
                reason = "outputs already match (use --overwrite to republish)"
                return outcome("skipped", reason=reason, item_href=store.join(item_key))
        scratch.mkdir(parents=True, exist_ok=False)
        with timer("read"):
            if isinstance(src, ZarrCell):
                loaded = src.load(scratch, opts.source_settings())
            else:
                loaded = load_tile(src, scratch, opts.source_settings())
        warnings: tuple[str, ...] = ()
        if loaded.landmask is None:
            if opts.require_landmask:
                raise InputError(
                    f"{src.embeddings}: no landmask for {src.grid} (refused: --require-landmask)"
                )
            warnings = (NO_LANDMASK,)
        tile, counts = _publish_loaded(loaded, store, prefix, scratch, opts, timer)
        with timer("item"):
            item = create_item(tile).to_dict(include_self_link=False, transform_hrefs=False)
            item_file = scratch / f"{src.item_id}.json"
            item_file.write_bytes(json.dumps(item, indent=2).encode())
            store.put_file(item_file, item_key, c.GEOJSON_MEDIA_TYPE, sha256_file(item_file))
        return outcome(
            "ok", counts=counts, item_href=store.join(item_key), tile=tile, warnings=warnings
        )
    except EmptyCellError as exc:
        return outcome("skipped", reason=str(exc))
    except TesseraStacError as exc:
        return outcome("failed", reason=str(exc))
    except Exception as exc:  # a bug or an environment problem: keep the other tiles going
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return outcome(
            "failed",
            reason=(
                f"{src.embeddings}: internal error {type(exc).__name__}: {exc} "
                f"(at {Path(where.filename).name}:{where.lineno})"
            ),
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_Files = dict[str, tuple[Path, str, tuple[str, ...]]]  # asset key -> (file, media type, roles)


def _publish_loaded(
    loaded: LoadedTile,
    store: LocalStore | S3Store,
    prefix: str,
    scratch: Path,
    opts: PublishOptions,
    timer: _Timer,
) -> tuple[PublishedTile, dict[str, int]]:
    """Write, verify and deliver the three assets of a loaded tile."""
    with timer("validity"):
        check = cog.validity(loaded.embeddings, loaded.scales, loaded.landmask)
    with timer("overviews"):
        levels = cog.build_overviews(
            loaded.embeddings, loaded.scales, check.valid, EMBEDDINGS.overview_levels
        )
    files = _write_files(loaded, check, levels, scratch, opts, timer)
    with timer("verify"):
        for profile in (EMBEDDINGS, SCALES):
            cog.verify_cog(files[profile.asset_key][0], profile, loaded.georef)
    # an older item is withdrawn first: while its assets are replaced the tile reads incomplete
    store.delete(f"{prefix}/{loaded.source.item_id}.json")
    assets: dict[str, AssetRecord] = {}
    for key, (path, media_type, roles) in files.items():
        with timer("checksum"):
            digest = sha256_file(path)
            size = path.stat().st_size
        with timer("deliver"):
            store.put_file(path, f"{prefix}/{path.name}", media_type, digest)
        assets[key] = AssetRecord(key, f"./{path.name}", media_type, size, multihash(digest), roles)
    counts = check.as_dict() | loaded.counts
    tile = PublishedTile(
        cell=loaded.cell,
        year=loaded.year,
        collection_id=opts.collection_id,
        model_name=opts.model_name,
        model_version=opts.model_version,
        epsg=loaded.georef.epsg,
        transform=loaded.georef.transform,
        shape=loaded.georef.shape,
        assets=assets,
        sources=loaded.source.uris,
        counts=PixelCounts(
            valid=counts["valid"],
            invalid=counts["invalid"],
            sanitised=counts["sanitised"],
            water=counts["water"],
        ),
        processed=opts.processed,
        software=software_versions(),
        georef_from=loaded.georef.source,
    )
    return tile, counts


def _write_files(
    loaded: LoadedTile,
    check: cog.Validity,
    levels: list[cog.Overview],
    scratch: Path,
    opts: PublishOptions,
    timer: _Timer,
) -> _Files:
    """Write embeddings.tif, scales.tif and preview.png into ``scratch``."""
    tags = {
        "TESSERA_MODEL": opts.model_name,
        "TESSERA_MODEL_VERSION": opts.model_version,
        "TESSERA_YEAR": str(loaded.year),
        "TESSERA_TILE": loaded.cell.name,
        "TESSERA_GEOREF": loaded.georef.source,
    }
    # (profile, timer name, full-resolution array, overview arrays, content tag): arrays are
    # made one file at a time (lazily) so only one masked copy of the tile is alive at once
    cogs: list[tuple[CogProfile, str, Callable[[], Any], Callable[[], list[Any]], str]] = [
        (
            EMBEDDINGS,
            "embeddings_cog",
            lambda: cog.masked_codes(loaded.embeddings, check.valid),
            lambda: [lv.codes for lv in levels],
            "int8 codes; value = code * scale (scales.tif)",
        ),
        (
            SCALES,
            "scales_cog",
            lambda: cog.masked_scales(loaded.scales, check.valid),
            lambda: [lv.scales for lv in levels if lv.factor in SCALES.overview_levels],
            "per-pixel float32 scale; NaN = invalid",
        ),
    ]
    for profile, name, full, overviews, content in cogs:
        with timer(name):
            cog.write_cog(
                scratch / profile.filename,
                profile,
                full(),
                overviews(),
                loaded.georef,
                {**tags, "TESSERA_CONTENT": content},
                threads=opts.threads,
            )
    emb_path, sc_path = scratch / EMBEDDINGS.filename, scratch / SCALES.filename
    png = scratch / PREVIEW_FILENAME
    with timer("preview"):
        pv = _preview_level(levels)
        png.write_bytes(preview.png_bytes(preview.render(pv.codes, pv.scales)))
    return {
        EMBEDDINGS.asset_key: (emb_path, EMBEDDINGS.media_type, EMBEDDINGS.roles),
        SCALES.asset_key: (sc_path, SCALES.media_type, SCALES.roles),
        PREVIEW_KEY: (png, PREVIEW_MEDIA_TYPE, ("thumbnail", "overview")),
    }


def _preview_level(levels: list[cog.Overview]) -> cog.Overview:
    for level in levels:
        if level.factor == preview.PREVIEW_FACTOR:
            return level
    if levels:
        return levels[-1]
    raise ValueError("previews need at least one overview level")


# ------------------------------------------------------------------------------ a run
@dataclass(frozen=True)
class RunReport:
    """The result of a run (also written as JSON)."""

    run_id: str
    started: datetime
    seconds: float
    source: str
    dest: str
    collection: str
    workers: int
    outcomes: tuple[TileOutcome, ...]
    report_href: str = ""

    @property
    def totals(self) -> dict[str, int]:
        """Tiles per status."""
        out = {"ok": 0, "skipped": 0, "failed": 0}
        for outcome in self.outcomes:
            out[outcome.status] = out.get(outcome.status, 0) + 1
        return out

    @property
    def failed(self) -> list[TileOutcome]:
        """Outcomes of the tiles that failed."""
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def published(self) -> list[PublishedTile]:
        """What the item builder got for every tile written in this run."""
        return [o.tile for o in self.outcomes if o.tile is not None]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready run report."""
        return {
            "run_id": self.run_id,
            "started": self.started.isoformat(),
            "seconds": round(self.seconds, 3),
            "source": self.source,
            "dest": self.dest,
            "collection": self.collection,
            "workers": self.workers,
            "totals": self.totals,
            "warnings": [f"{o.item_id}: {w}" for o in self.outcomes for w in o.warnings],
            "tiles": [o.as_dict() for o in sorted(self.outcomes, key=lambda o: o.item_id)],
        }


def scratch_root(store: LocalStore | S3Store) -> Path:
    """Where runs keep scratch files: beside a local destination, never inside it (so partial
    files are never published nor served under ``/data``) yet on its file system (moves stay
    renames): ``DEST/../.{DEST name}.tessera-stac-tmp``; the system temp dir for S3 or when
    the parent folder is not writable."""
    if isinstance(store, LocalStore):
        root = store.root.resolve()
        if os.access(root.parent, os.W_OK):
            return root.parent / f".{root.name}{SCRATCH_DIR}"
    return Path(tempfile.gettempdir()) / "tessera-stac-scratch"


def clean_stale_scratch(root: Path) -> list[Path]:
    """Remove scratch folders of runs whose process is gone (killed runs); returns them."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for child in root.iterdir():
        parts = child.name.split("-")
        stale = len(parts) >= 3 and parts[0] == "run" and parts[1].isdigit()
        if stale and not alive(int(parts[1])):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed


def worker_memory_bound_mb(tile_pixels: int, gdal_cache_mb: int = 128) -> int:
    """The declared bound of one publish worker's resident memory, in MB.

    A worker holds one tile at a time: its int8 codes and float32 scales as read (132 bytes a
    pixel), the dequantisation checks and the overview arrays beside them, and the COG
    writer's buffers (at most four tile-sized copies in all), plus GDAL's block cache for the
    write (``write_cog``'s ``cache_mb``) and the interpreter with numpy, GDAL and pyproj
    (~250 MB). Measured: 580 MB peak for a 1,100 x 1,100 px tile (bound 1,050 MB);
    ``tests/publisher/test_pub_memory.py`` checks it, ``--workers`` multiplies it.
    """
    return int(250 + gdal_cache_mb + 4 * tile_pixels * 132 / 2**20)


def publish(
    sources: Iterable[TileSource | ZarrCell],
    dest: str,
    *,
    engine: Engine | None = None,
    model_version: str = "v1",
    collection: str | None = None,
    overwrite: bool = False,
    require_landmask: bool = False,
    settings: StorageSettings | None = None,
    source_settings: StorageSettings | None = None,
    now: datetime | None = None,
    source_label: str = "",
    report: str | None = "",
    on_done: Callable[[TileOutcome], None] | None = None,
) -> RunReport:
    """Publish tiles to ``dest``; one bad tile never stops the others.

    Args:
        sources: tiles to publish (see :func:`tessera_stac.publisher.embeddings.tiles.discover`).
        dest: local directory or ``s3://bucket/prefix``.
        engine: how to run tiles (default: serial).
        model_version: model version, e.g. ``v1``.
        collection: collection id (default ``tessera-embeddings-{model_version}``).
        overwrite: republish tiles whose outputs already match.
        require_landmask: fail a tile that has no landmask (default: publish it flagged,
            ``tessera:landmask: false`` on the item and a warning in the report).
        settings: S3 settings of the destination (and of the sources unless given).
        source_settings: S3 settings of the sources (e.g. anonymous reads of a mirror).
        now: the run's timestamp (default: the current time).
        source_label: what to call the source in the report.
        report: where to write the JSON report: ``""`` -> ``{dest}/_reports/publish-{id}.json``,
            a path/URI, or None for no file.
        on_done: called with each outcome as tiles finish (progress bars).

    Returns:
        The :class:`RunReport`.
    """
    started = now or datetime.now(UTC)
    run_engine = engine or SerialEngine()
    store = open_store(dest, settings)
    if isinstance(store, LocalStore):
        store.root.mkdir(parents=True, exist_ok=True)
    root = scratch_root(store)
    clean_stale_scratch(root)
    if isinstance(store, LocalStore):  # scratch of older versions, inside DEST
        clean_stale_scratch(store.root / SCRATCH_DIR)
        with contextlib.suppress(OSError):
            (store.root / SCRATCH_DIR).rmdir()
    run_id = f"{started.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"
    scratch = root / f"run-{os.getpid()}-{run_id}"
    scratch.mkdir(parents=True, exist_ok=True)
    options = PublishOptions(
        dest=store.uri,
        scratch=str(scratch),
        processed=started,
        model_version=model_version,
        collection=collection,
        overwrite=overwrite,
        require_landmask=require_landmask,
        storage=settings.model_dump() if settings is not None else None,
        source_storage=source_settings.model_dump() if source_settings is not None else None,
    )
    tasks = (TileTask(src, options) for src in sources)
    outcomes: list[TileOutcome] = []
    clock = time.perf_counter()
    try:
        for outcome in run_engine.map(publish_tile, tasks, on_error=_engine_failure):
            outcomes.append(outcome)
            if on_done is not None:
                on_done(outcome)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        _remove_if_empty(root)
    result = RunReport(
        run_id=run_id,
        started=started,
        seconds=time.perf_counter() - clock,
        source=source_label,
        dest=store.uri,
        collection=options.collection_id,
        workers=_worker_count(run_engine),
        outcomes=tuple(outcomes),
    )
    if report is None:
        return result
    return _write_report(result, store, report, settings)


def _worker_count(engine: object) -> int:
    count: Any = getattr(engine, "workers", None) or getattr(engine, "n_workers", None) or 1
    return int(count)


def _engine_failure(task: TileTask, error: BaseException) -> TileOutcome:
    src = task.source
    return TileOutcome(
        item_id=src.item_id,
        grid=src.grid,
        year=src.year,
        status="failed",
        seconds=0.0,
        reason=f"{src.embeddings}: worker failed: {type(error).__name__}: {error}",
    )


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def _write_report(
    result: RunReport, store: LocalStore | S3Store, report: str, settings: StorageSettings | None
) -> RunReport:
    # the report is published beside the data: sources and outputs as keys, never local paths
    roots = [store.uri] if isinstance(store, LocalStore) else []
    if result.source and not is_public(result.source):
        roots.append(str(Path(result.source).expanduser().resolve()))
    data = json.dumps(scrub_local_paths(result.as_dict(), roots), indent=2).encode()
    if report == "":
        key = f"{REPORTS_DIR}/publish-{result.run_id}.json"
        store.put_bytes(data, key, "application/json")
        href = store.join(key)
    else:
        if report.startswith("s3://"):
            parent, name = report.rsplit("/", 1)
        else:
            path = Path(report).expanduser().resolve()
            parent, name = str(path.parent), path.name
        target = open_store(parent, settings)
        target.put_bytes(data, name, "application/json")
        href = target.join(name)
    return RunReport(**{**result.__dict__, "report_href": href})
