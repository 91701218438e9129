"""``tessera-stac demo``: the whole product on one machine, from nothing to a served catalog.

The demo runs the same ``tessera-stac`` commands a person would (each printed as ``$ ...``
before it runs, so the output doubles as a tutorial), in a data folder (``demo-data/``):

1. start the project-local database (PostgreSQL + PostGIS + pgSTAC);
2. generate synthetic TESSERA tiles over a CoRE Stack block (Tisri, Jharkhand);
3. generate a synthetic micro-watershed (MWS) layer for the same block;
4. publish the tiles as COGs, 5. build the static STAC catalog, 6. load it into pgSTAC;
7. publish the MWS layer, 8. join the embeddings to the watersheds;
9. serve the STAC API and STAC Browser on 127.0.0.1 until Ctrl-C.

Each finished step is recorded in ``demo-data/demo-state.json`` with a key of its command
line; a second run skips the steps whose key matches and whose outputs are still there, so it
starts serving in seconds. Steps whose command this installation lacks are reported and skipped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from tessera_stac.catalog.errors import ConfigurationError, TesseraStacError

#: The repository root (this file is cli/demo_run.py in an editable install).
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BROWSER_DIR = ROOT / "browser" / "dist"


class DemoStepError(TesseraStacError):
    """A demo step's command failed (its own output says why)."""

    exit_code = 1


@dataclass(frozen=True)
class DemoRegion:
    """The sample area: a CoRE Stack block and the TESSERA tiles over it.

    Attributes:
        state: State name as CoRE Stack spells it (lower case, underscores).
        district: District name.
        block: Block (tehsil) name.
        bbox: (west, south, east, north); 0.1-degree aligned so it holds whole tiles.
        year: The embedding year to generate and join.
        previous_year: The earlier year compared with ``year`` (default ``year - 1``); its
            land inside :attr:`change_bbox` differs on purpose.
    """

    state: str = "jharkhand"
    district: str = "giridih"
    block: str = "tisri"
    bbox: tuple[float, float, float, float] = (86.0, 24.5, 86.2, 24.7)
    year: int = 2024
    previous_year: int | None = None

    @property
    def years(self) -> tuple[int, int]:
        """(earlier, later): the two years the demo publishes and compares."""
        return (self.previous_year or self.year - 1, self.year)

    @property
    def change_bbox(self) -> tuple[float, float, float, float]:
        """Where land changes on purpose in the later year: the west half of the first tile."""
        west, south = self.bbox[0], self.bbox[1]
        return (west, south, round(west + 0.05, 6), round(south + 0.1, 6))

    @property
    def tile_count(self) -> int:
        """How many 0.1-degree tiles the bbox holds."""
        west, south, east, north = self.bbox
        return round((east - west) * 10) * round((north - south) * 10)

    @property
    def bbox_arg(self) -> str:
        """The bbox as a CLI argument (``W,S,E,N``)."""
        return ",".join(f"{v:g}" for v in self.bbox)


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo keeps its files (all under one data folder)."""

    data: Path

    @property
    def source(self) -> Path:
        """Synthetic TESSERA tiles (geotessera cache layout)."""
        return self.data / "source"

    @property
    def published(self) -> Path:
        """The published product: COGs, previews, STAC JSON (served under /data)."""
        return self.data / "published"

    @property
    def mws(self) -> Path:
        """The synthetic micro-watershed layer (GeoJSON as CoRE Stack's WFS returns it)."""
        return self.data / "mws"

    @property
    def state_file(self) -> Path:
        """Which steps are done, with the key of the command that did them."""
        return self.data / "demo-state.json"


@dataclass(frozen=True)
class Step:
    """One demo step: a ``tessera-stac`` command line or an in-process action.

    Attributes:
        name: Short name (also the key in the state file).
        title: What the step does, for people.
        args: The ``tessera-stac`` arguments (printed and run), or empty for ``action``.
        outputs: Returns True when the step's results are still in place.
        action: In-process work for steps that are not a command (returns a short note).
        needs: Subcommand path that must exist (``("sample", "tiles")``), else skipped.
    """

    name: str
    title: str
    args: tuple[str, ...] = ()
    outputs: Callable[[], bool] = lambda: True
    action: Callable[[], str] | None = None
    needs: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """Identifies what the step did: a hash of its command line."""
        text = json.dumps([self.name, list(self.args)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class StepResult:
    """How a step went: ``done``, ``skipped`` (already done) or ``unavailable``."""

    name: str
    status: str
    seconds: float = 0.0
    note: str = ""


@dataclass
class DemoState:
    """The state file: step name -> key of the command that completed it."""

    path: Path
    done: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> DemoState:
        """Read the state file (a missing or unreadable one means nothing is done)."""
        try:
            data = json.loads(path.read_text())
            done = {str(k): str(v) for k, v in data.get("done", {}).items()}
        except (OSError, ValueError, AttributeError):
            done = {}
        return cls(path, done)

    def mark(self, step: Step) -> None:
        """Record ``step`` as done, atomically."""
        self.done[step.name] = step.key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"done": self.done}, indent=2, sort_keys=True))
        os.replace(tmp, self.path)

    def forget(self, name: str) -> None:
        """Forget a step (its outputs vanished), so it and the steps after it run again."""
        self.done.pop(name, None)


def cli_commands() -> set[tuple[str, ...]]:
    """Every command path of the installed ``tessera-stac`` CLI, e.g. ``("db", "start")``."""
    from tessera_stac.cli.main import app

    found: set[tuple[str, ...]] = set()

    def walk(command: Any, path: tuple[str, ...]) -> None:
        found.add(path)
        # click groups (typer may vendor its own click: recognise them by shape)
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def run_command(args: Sequence[str], cwd: Path | None = None) -> None:
    """Run ``tessera-stac ARGS`` in a child process, its output going to ours.

    Raises:
        DemoStepError: The command exited non-zero.
    """
    shown = " ".join(["tessera-stac", *args])
    typer.echo(f"  $ {shown}")
    command = [sys.executable, "-m", "tessera_stac.cli.main", *args]
    proc = subprocess.run(command, cwd=cwd, check=False, stdout=sys.stdout, stderr=sys.stderr)
    if proc.returncode != 0:
        raise DemoStepError(f"`{shown}` failed with exit code {proc.returncode} (output above)")


def run_steps(steps: Sequence[Step], state: DemoState, force: bool = False) -> list[StepResult]:
    """Run the steps in order, skipping those already done; later steps rerun after a rerun.

    Args:
        steps: The demo's steps.
        state: What earlier runs completed.
        force: Run every step even if it is recorded as done.

    Returns:
        One result per step.
    """
    available = cli_commands()
    results: list[StepResult] = []
    rerun = force
    for number, step in enumerate(steps, start=1):
        prefix = f"[{number}/{len(steps)}] {step.title}"
        if step.needs and step.needs not in available:
            typer.echo(f"{prefix}: skipped, `tessera-stac {' '.join(step.needs)}` not available")
            results.append(StepResult(step.name, "unavailable"))
            continue
        if not rerun and state.done.get(step.name) == step.key and step.outputs():
            typer.echo(f"{prefix}: already done")
            results.append(StepResult(step.name, "skipped"))
            continue
        rerun = True  # everything after a step that ran depends on it
        state.forget(step.name)
        typer.echo(f"{prefix}...")
        started = time.monotonic()
        note = step.action() if step.action else ""
        if step.args:
            run_command(step.args)
        state.mark(step)
        seconds = time.monotonic() - started
        typer.echo(f"  done in {seconds:.1f} s" + (f": {note}" if note else ""))
        results.append(StepResult(step.name, "done", round(seconds, 2), note))
    return results


def hold_port(host: str, port: int | None, default: int) -> socket.socket:
    """A socket listening on the port to serve on: ``port`` if given (must be free), else
    ``default`` or, when that is taken, one the system picks.

    The demo's steps load ``http://host:port/data/...`` hrefs minutes before it serves: the
    socket is bound now and handed to uvicorn then (:func:`serve`), so no other process can take
    the port in between (a connection made meanwhile waits in the backlog).

    Raises:
        ConfigurationError: An explicitly requested port is in use.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    candidates = [port] if port is not None else [default, 0]
    for candidate in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM)
        # as uvicorn does: a port left in TIME_WAIT by the last run can be bound again (a
        # listening socket still refuses a second binder)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
            sock.listen(2048)
        except OSError as exc:
            sock.close()
            if port is not None:
                raise ConfigurationError(
                    f"port {port} on {host} is in use ({exc.strerror}): pass another --port"
                ) from None
            continue
        return sock
    raise ConfigurationError(f"no free port on {host}")  # pragma: no cover - port 0 failed


def held_port(sock: socket.socket) -> int:
    """The port ``sock`` (from :func:`hold_port`) is bound to."""
    return int(sock.getsockname()[1])


def describe(results: Sequence[StepResult]) -> list[dict[str, Any]]:
    """Step results as JSON-ready dicts."""
    return [
        {"step": r.name, "status": r.status, "seconds": r.seconds, "note": r.note} for r in results
    ]


# ----------------------------------------------------------------------------- the steps
def _joined(published: Path, year: str) -> bool:
    """True when a per-MWS table of ``year`` is written."""
    return _count(published / "corestack-mws-embeddings", f"*_{year}.parquet") > 0


#: the demo's land-cover head and the collection of its per-MWS class areas
HEAD_NAME = "landcover"
MWS_CLASSES = "corestack-mws-classes"


def _mapped(published: Path, year: str, tiles: int) -> bool:
    """True when every tile of ``year`` has its class map."""
    return _count(published / f"tessera-classes-{HEAD_NAME}", f"*_{year}.json") >= tiles


def _count(folder: Path, pattern: str) -> int:
    return sum(1 for _ in folder.rglob(pattern)) if folder.is_dir() else 0


def _loaded_items(dsn: str) -> int:
    """How many items pgSTAC holds (0 when unreachable or not migrated)."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            row = conn.execute("SELECT count(*) FROM pgstac.items").fetchone()
    except psycopg.Error:
        return 0
    return int(row[0]) if row else 0


def demo_steps(region: DemoRegion, paths: DemoPaths, dsn: str, base_url: str) -> list[Step]:
    """The demo's steps for ``region``, writing under ``paths``, loading into ``dsn``.

    ``base_url`` is where the API will serve: asset hrefs are loaded as ``{base_url}/data/...``.
    """
    mws_file = paths.mws / f"{region.state}_{region.district}_{region.block}_mws.geojson"
    year = str(region.year)
    before = str(region.years[0])
    change = ",".join(f"{v:g}" for v in region.change_bbox)
    out = str(paths.published)
    mws_item = f"{region.state}_{region.district}_{region.block}_mws"  # CoRE Stack's id style
    labels = paths.source / "labels" / f"landcover_{before}.geojson"

    return [
        Step(
            "sample",
            f"generate {region.tile_count} synthetic TESSERA tiles over {region.block} for "
            f"{before} and {year} (land changed on purpose in {change})",
            ("sample", "tiles", str(paths.source), "--bbox", region.bbox_arg,
             "--years", f"{before},{year}", "--change", change, "--change-from", year,
             "--landcover"),
            outputs=lambda: _count(paths.source, "*_scales.npy") >= 2 * region.tile_count,
            needs=("sample", "tiles"),
        ),
        Step(
            "mws",
            f"generate a sample micro-watershed layer for {region.block}",
            (
                "sample", "mws", str(mws_file), "--bbox", region.bbox_arg,
                "--district", region.district, "--block", region.block,
            ),
            outputs=mws_file.is_file,
            needs=("sample", "mws"),
        ),
        Step(
            "publish",
            "publish the tiles as Cloud-Optimized GeoTIFFs + previews",
            ("publish", str(paths.source), out),
            outputs=lambda: _count(paths.published, "embeddings.tif") >= 2 * region.tile_count,
            needs=("publish",),
        ),
        Step(
            "catalog",
            "build the static STAC catalog",
            ("catalog", "build", out),
            outputs=(paths.published / "catalog.json").is_file,
            needs=("catalog", "build"),
        ),
        Step(
            "watersheds",
            "publish the micro-watershed layer as STAC (collection corestack-mws)",
            (
                "watersheds", "publish", str(mws_file), "--state", region.state,
                "--district", region.district, "--block", region.block, "--out", out,
            ),
            outputs=(paths.published / "corestack-mws" / mws_item / f"{mws_item}.json").is_file,
            needs=("watersheds", "publish"),
        ),
        *(
            Step(
                name,
                f"join the {y} embeddings to the micro-watersheds",
                ("watersheds", "join", "--year", y, "--mws", mws_item, "--out", out),
                outputs=functools.partial(_joined, paths.published, y),
                needs=("watersheds", "join"),
            )
            for name, y in (("join-previous", before), ("join", year))
        ),
        Step(
            "change",
            f"rank the micro-watersheds by change {before}->{year}",
            ("watersheds", "change", "--mws", mws_item, "--from", before, "--to", year,
             "--out", out),
            outputs=lambda: _count(paths.published / "corestack-mws-change", "*.parquet") > 0,
            needs=("watersheds", "change"),
        ),
        Step(
            "train",
            f"train a land-cover head ({HEAD_NAME}) on the sample's labels of {before}",
            ("classify", "train", str(labels), "--year", before, "--name", HEAD_NAME,
             "--out", out, "--replace"),
            outputs=(paths.published / "tessera-models" / HEAD_NAME / f"{HEAD_NAME}.json").is_file,
            needs=("classify", "train"),
        ),
        *(
            Step(
                name,
                f"map the land-cover classes of {y} (one class COG per tile)",
                ("classify", "map", HEAD_NAME, "--year", y, "--out", out),
                outputs=functools.partial(_mapped, paths.published, y, region.tile_count),
                needs=("classify", "map"),
            )
            for name, y in (("map-previous", before), ("map", year))
        ),
        Step(
            "classes",
            f"hectares of each class per micro-watershed, {before} and {year}, and the change",
            ("watersheds", "classes", "--mws", mws_item, "--model", HEAD_NAME,
             "--from", before, "--to", year, "--out", out),
            outputs=lambda: _count(paths.published / MWS_CLASSES, "*_annual.json") > 0,
            needs=("watersheds", "classes"),
        ),
        Step(
            "load",
            "load everything into pgSTAC (asset hrefs served by the API under /data)",
            ("load", out, "--base-url", f"{base_url}/data"),
            outputs=lambda: _loaded_items(dsn) > 0,
            needs=("load",),
        ),
    ]  # fmt: skip


def start_database() -> str:
    """Start the project-local database (or use the external one); return its DSN."""
    from tessera_stac.catalog.pgstac.cluster import LocalCluster, is_external, redact, resolve_dsn
    from tessera_stac.catalog.settings import DatabaseSettings

    settings = DatabaseSettings()
    if is_external(settings):
        dsn = resolve_dsn(settings)
        typer.echo(f"database: external, {redact(dsn)}")
        return dsn
    cluster = LocalCluster(settings.home, port=settings.db_port, dbname=settings.db_name)
    typer.echo("  $ tessera-stac db start")
    started = cluster.start()
    typer.echo(
        f"database: {'started' if started else 'already running'} on port {cluster.port} "
        f"({cluster.home})"
    )
    return cluster.dsn()


# --------------------------------------------------------------------- what to show people
@dataclass(frozen=True)
class DemoLinks:
    """The URLs the demo prints and the pystac-client snippet that uses them."""

    urls: dict[str, str]
    snippet: str
    notes: tuple[str, ...] = ()


def _collections(dsn: str) -> list[tuple[str, int]]:
    """Collections in pgSTAC with their item counts, biggest first."""
    import psycopg

    query = (
        "SELECT c.id, count(i.id) FROM pgstac.collections c "
        "LEFT JOIN pgstac.items i ON i.collection = c.id GROUP BY c.id ORDER BY 2 DESC, 1"
    )
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            return [(str(cid), int(n)) for cid, n in conn.execute(query).fetchall()]
    except psycopg.Error:
        return []


def _embedding_collection(dsn: str, region: DemoRegion) -> tuple[str | None, str | None]:
    """(collection, item id) of one embedding item over the region, if loaded."""
    import psycopg

    west, south, east, north = region.bbox
    query = (
        "SELECT collection, id FROM pgstac.items WHERE geometry && "
        "ST_MakeEnvelope(%s, %s, %s, %s, 4326) AND content->'assets' ? 'embeddings' "
        "ORDER BY id LIMIT 1"
    )
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            row = conn.execute(query, (west, south, east, north)).fetchone()
    except psycopg.Error:
        return None, None
    return (str(row[0]), str(row[1])) if row else (None, None)


def land_point(scales_tif: Path) -> tuple[float, float] | None:
    """The lon/lat of the valid (land) pixel nearest the centre of a published tile.

    Reads the full-resolution ``scales`` COG (one float32 band, a few MB) through the reader
    kernel; a pixel is valid by the product's recipe (a finite scale in (0, 1)).
    """
    import numpy as np
    from rasterio.warp import transform

    from tessera_stac.catalog.reader import gdal_path, open_raster, rasterio_env, scale_validity
    from tessera_stac.catalog.stac import embeddings_quantization

    with rasterio_env(), open_raster(gdal_path(str(scales_tif))) as src:
        valid = scale_validity(src.read(1), embeddings_quantization())
        rows, cols = np.nonzero(valid)
        if rows.size == 0:
            return None
        best = int(np.argmin((rows - src.height / 2) ** 2 + (cols - src.width / 2) ** 2))
        x, y = src.xy(int(rows[best]), int(cols[best]))
        lons, lats = transform(src.crs, "EPSG:4326", [x], [y])
    return round(float(lons[0]), 6), round(float(lats[0]), 6)


def best_watershed(published: Path, year: int) -> str | None:
    """The ``uid`` of the MWS with the most valid pixels in the demo's join table, if any."""
    import pyarrow.parquet as pq

    tables = sorted((published / "corestack-mws-embeddings").rglob(f"*_embeddings_{year}.parquet"))
    if not tables:
        return None
    table = pq.read_table(tables[0], columns=["uid", "count"]).to_pydict()
    ranked = sorted(zip(table["count"], table["uid"], strict=True), reverse=True)
    return str(ranked[0][1]) if ranked and ranked[0][0] else None


def watershed_point(published: Path, year: int, uid: str) -> tuple[float, float] | None:
    """A point inside watershed ``uid`` (from the demo's join table), rounded to 1e-6°."""
    import geopandas as gpd

    tables = sorted((published / "corestack-mws-embeddings").rglob(f"*_embeddings_{year}.parquet"))
    if not tables:
        return None
    frame = gpd.read_parquet(tables[0], columns=["uid", "geometry"])
    rows = frame[frame["uid"].astype(str) == uid]
    if rows.empty:
        return None
    point = rows.geometry.iloc[0].representative_point()
    return round(float(point.x), 6), round(float(point.y), 6)


def tile_links(
    base: str,
    collection: str,
    year: int,
    routes: set[str],
    point: tuple[float, float] | None,
) -> dict[str, str]:
    """Map tile URLs of the year's mosaic (QGIS: XYZ Tiles or WMTS) and, given a point, the
    similarity layer of "places like this point"."""
    from tessera_stac.api.tiles import PREFIX, tile_urls

    if not any(r.startswith(f"{PREFIX}/") for r in routes):
        return {}
    pca = tile_urls(base, collection, "pca", year=year)
    urls = {
        f"map tiles {year}, XYZ (QGIS: XYZ Tiles)": pca["xyz"],
        f"map tiles {year}, TileJSON": pca["tilejson"],
        f"map tiles {year}, WMTS (QGIS: WMTS)": pca["wmts"],
    }
    if point:
        similar = tile_urls(base, collection, "similarity", year=year, lon=point[0], lat=point[1])
        urls["places like this point (similarity tiles, XYZ)"] = similar["xyz"]
    return urls


def feature_links(base: str, region: DemoRegion) -> dict[str, str]:
    """The watersheds as OGC API Features (QGIS: Add WFS / OGC API - Features layer, this URL)
    and one filtered request: the block's watersheds that changed most, first."""
    from urllib.parse import urlencode

    from tessera_stac.catalog.constants import (
        FEATURES_SCHEMA,
        MWS_CHANGE_TABLE,
        MWS_EMBEDDINGS_TABLE,
    )

    before, after = region.years
    features = f"{base}/features"
    query = urlencode(
        {
            "filter-lang": "cql2-text",
            "filter": f"block='{region.block}' AND year_from={before} AND year_to={after}",
            "sortby": "-distance",
            "limit": 10,
        }
    )
    return {
        "watersheds as OGC API Features (QGIS: OGC API - Features)": features,
        f"watersheds of {region.block} that changed most {before}->{after} (features)": (
            f"{features}/collections/{FEATURES_SCHEMA}.{MWS_CHANGE_TABLE}/items?{query}"
        ),
        "watersheds as vector tiles (TileJSON)": (
            f"{features}/collections/{FEATURES_SCHEMA}.{MWS_EMBEDDINGS_TABLE}/tiles/"
            "WebMercatorQuad/tilejson.json"
        ),
    }


def pystac_snippet(base: str, region: DemoRegion, collection: str | None) -> str:
    """A pystac-client program that searches the demo's API for the region's items."""
    bbox = ", ".join(f"{v:g}" for v in region.bbox)
    collections = f'collections=["{collection}"], ' if collection else ""
    return (
        "from pystac_client import Client\n"
        "\n"
        f'client = Client.open("{base}/")\n'
        f'search = client.search({collections}bbox=[{bbox}], datetime="{region.year}")\n'
        "items = list(search.items())\n"
        'print(len(items), "items:", ", ".join(item.id for item in items))\n'
        "for key, asset in items[0].assets.items():\n"
        '    print(f"  {key}: {asset.href}")\n'
    )


def _asset_file(dsn: str, collection: str, item: str, key: str, base: str, data: Path) -> Path:
    """Local file of an item's asset whose href is served by the demo under ``{base}/data/``."""
    import psycopg

    query = "SELECT content->'assets'->%s->>'href' FROM pgstac.items WHERE collection=%s AND id=%s"
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute(query, (key, collection, item)).fetchone()
    href = str(row[0]) if row and row[0] else ""
    prefix = f"{base}/data/"
    return data / href[len(prefix) :] if href.startswith(prefix) else Path(href)


def demo_links(
    base: str, dsn: str, region: DemoRegion, routes: set[str], published: Path
) -> DemoLinks:
    """The URLs worth opening on the demo's API at ``base`` (no trailing slash).

    Args:
        base: The API's URL.
        dsn: The loaded database (to find collections and an item).
        region: The demo's area and year.
        routes: Paths the app serves (its OpenAPI paths, plus ``/browser/`` when STAC
            Browser is mounted): URLs are listed only for routes it has.
        published: The folder served under ``/data`` (to find a land point in a tile).
    """
    urls = {"STAC API (landing page)": f"{base}/"}
    if "/browser/" in routes:
        urls["STAC Browser"] = f"{base}/browser/"
    urls["API documentation"] = f"{base}/api.html"
    urls["collections"] = f"{base}/collections"
    collection, item = _embedding_collection(dsn, region)
    if collection and item:
        urls["embedding items"] = f"{base}/collections/{collection}/items"
        urls["one item"] = f"{base}/collections/{collection}/items/{item}"
        if "/browser/" in routes:
            urls["that item in STAC Browser"] = (
                f"{base}/browser/collections/{collection}/items/{item}"
            )
        scales = _asset_file(dsn, collection, item, "scales", base, published)
        point = (
            land_point(scales) if "/embeddings/position" in routes and scales.is_file() else None
        )
        if point:
            urls["embedding at a point"] = (
                f"{base}/embeddings/position?lon={point[0]}&lat={point[1]}&year={region.year}"
            )
        urls.update(tile_links(base, collection, region.year, routes, point))
    uid = best_watershed(published, region.year) if "/watersheds/{uid}/similar" in routes else None
    if uid:
        urls["one watershed's mean embedding"] = (
            f"{base}/watersheds/{uid}/embedding?year={region.year}"
        )
        urls["the watersheds most like it"] = (
            f"{base}/watersheds/{uid}/similar?year={region.year}&k=5"
        )
        inside = watershed_point(published, region.year, uid)
        if collection and inside:
            similar = tile_links(base, collection, region.year, routes, inside)
            for key, url in similar.items():
                if key.startswith("places like"):
                    urls[f"places like watershed {uid} (similarity tiles, XYZ)"] = url
    if "/watersheds/change" in routes:
        before, after = region.years
        urls[f"watersheds that changed most {before}->{after}"] = (
            f"{base}/watersheds/change?from={before}&to={after}&limit=10"
        )
    notes: list[str] = []
    if "/watersheds/{uid}/classes" in routes:
        urls.update(class_links(base, region, published, collection, notes))
    if "/features/" in routes:
        urls.update(feature_links(base, region))
    for other, count in _collections(dsn):
        if other != collection:
            urls[f"collection {other} ({count} items)"] = f"{base}/collections/{other}"
    return DemoLinks(urls, pystac_snippet(base, region, collection), tuple(notes))


def watershed_hectares(published: Path, year: int) -> tuple[str, list[str]] | None:
    """(uid, "class: ha (percent)" lines) of the MWS with the most classified hectares in the
    demo's per-MWS class table of ``year``."""
    import pandas as pd

    tables = sorted((published / MWS_CLASSES).rglob(f"*_classes_{HEAD_NAME}_{year}.parquet"))
    if not tables:
        return None
    frame = pd.read_parquet(tables[0]).drop(columns="geometry", errors="ignore")
    if frame.empty or not (frame["classified_in_ha"] > 0).any():
        return None
    row = frame.loc[frame["classified_in_ha"].idxmax()]
    stems = [c[: -len("_in_ha")] for c in frame.columns if c.endswith("_in_ha")]
    lines = [
        f"{stem}: {row[f'{stem}_in_ha']:.2f} ha ({row[f'{stem}_percent']:.1f} %)"
        for stem in stems
        if f"{stem}_percent" in frame.columns
    ]
    return str(row["uid"]), lines


def class_links(
    base: str, region: DemoRegion, published: Path, collection: str | None, notes: list[str]
) -> dict[str, str]:
    """Class tiles (published maps and on the fly), one watershed's hectares (URL, and the
    numbers appended to ``notes``) and the ranking by a class."""
    from tessera_stac.api.classify import class_mosaic_urls, classify_urls

    urls: dict[str, str] = {}
    if not (published / f"tessera-classes-{HEAD_NAME}").is_dir():
        return urls
    classes = class_mosaic_urls(base, f"tessera-classes-{HEAD_NAME}", region.year)
    urls[f"land-cover classes {region.year}, XYZ (class colours)"] = classes["xyz"]
    if collection:
        live = classify_urls(base, collection, region.year, HEAD_NAME)
        urls["the same head on the fly (algorithm=classify), XYZ"] = live["xyz"]
    found = watershed_hectares(published, region.year)
    if found:
        uid, lines = found
        urls[f"watershed {uid}: hectares per class"] = (
            f"{base}/watersheds/{uid}/classes?model={HEAD_NAME}&year={region.year}"
        )
        urls[f"watershed {uid}: class areas over the years"] = (
            f"{base}/watersheds/{uid}/classes?model={HEAD_NAME}"
        )
        notes.append(f"watershed {uid}, {region.year} ({HEAD_NAME}): " + "; ".join(lines))
        stem = lines[0].split(":", 1)[0] if lines else None
        if stem:
            urls[f"watersheds ranked by {stem}"] = (
                f"{base}/watersheds/classes?model={HEAD_NAME}&class={stem}&year={region.year}"
            )
    return urls


def print_links(links: DemoLinks) -> None:
    """Print the URLs and the snippet for people."""
    width = max(len(name) for name in links.urls)
    typer.echo("")
    for name, url in links.urls.items():
        typer.echo(f"  {name.ljust(width)}  {url}")
    for note in links.notes:
        typer.echo(f"\n  {note}")
    typer.echo("\nSearch it from Python (pystac-client):\n")
    typer.echo("```python")
    typer.echo(links.snippet.rstrip("\n"))
    typer.echo("```")


# ------------------------------------------------------------------------- STAC Browser
@dataclass
class BrowserBuild:
    """``browser/build.sh`` running in the background while the demo's steps run."""

    out: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, out: Path, log: Path) -> BrowserBuild:
        """Start the (cached) STAC Browser build; a no-op build returns at once."""
        script = ROOT / "browser" / "build.sh"
        build = cls(out, log)
        if not script.is_file():  # an installed package without the repository
            return build
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as sink:
            build.proc = subprocess.Popen(
                ["bash", str(script), str(out)], stdout=sink, stderr=subprocess.STDOUT
            )
        return build

    def wait(self) -> bool:
        """Wait for the build; True when ``out`` holds a usable STAC Browser."""
        if self.proc is not None and self.proc.poll() is None:
            typer.echo("waiting for the STAC Browser build to finish...")
            self.proc.wait()
        ok = (self.out / "index.html").is_file()
        if self.proc is not None and self.proc.returncode != 0:
            last = self.log.read_text(errors="replace").strip().splitlines()[-1:]
            typer.echo(
                f"warning: STAC Browser build failed ({' '.join(last)}); full log: {self.log}",
                err=True,
            )
        return ok


# -------------------------------------------------------------------------------- serving
def build_app(dsn: str, published: Path, browser_dir: Path | None) -> Any:
    """The API app serving the demo's database, published files and STAC Browser."""
    from tessera_stac.api.app import create_app
    from tessera_stac.api.browser import mount_browser
    from tessera_stac.api.settings import ApiSettings

    settings = ApiSettings(data_dir=published.resolve(), browser_dir=browser_dir)
    app = create_app(settings, dsn)
    mounted = any(getattr(r, "path", "").startswith("/browser") for r in app.router.routes)
    if browser_dir is not None and not mounted:
        mount_browser(app, browser_dir)
    return app


def serve(app: Any, sock: socket.socket, on_started: Callable[[], None]) -> None:
    """Serve ``app`` with uvicorn on the held socket ``sock`` (:func:`hold_port`) until Ctrl-C /
    SIGTERM; ``on_started`` once it serves."""
    import uvicorn

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                on_started()

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = _Server(config)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal with the
    # handlers it found: make both a KeyboardInterrupt, which here means "stopped on request"
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise ConfigurationError(f"could not serve on {host}:{port} (see the message above)")
