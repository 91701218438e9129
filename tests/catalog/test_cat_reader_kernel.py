"""The reader kernel: batched points bit-identical to whole-tile reads, each block read once,
polygon streaming equal to an independent computation, and remote opens in <= 3 requests."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.profile import EMBEDDINGS, SCALES
from tessera_stac.catalog.reader import (
    GDAL_READ_OPTIONS,
    ItemRecipe,
    gdal_path,
    iter_polygon_pixels,
    open_raster,
    polygon_sums,
    rasterio_env,
    read_points,
)
from tessera_stac.catalog.stac import embeddings_quantization
from tests.fixtures_catalog import wait_serving

ORIGIN = (605000.0, 2556000.0)  # EPSG:32643; the 6 x 5 km tile straddles 0.1° cells
EPSG = 32643
CELL = GridCell.containing(
    *Transformer.from_crs(EPSG, 4326, always_xy=True).transform(ORIGIN[0] + 2500, ORIGIN[1] - 3000)
)


@pytest.fixture(autouse=True)
def no_block_cache() -> Iterator[None]:
    """Every test here reads the files themselves: no blocks kept by earlier tests of this
    process (an app built in-process sets the API's budget), none left for later ones."""
    from tessera_stac.catalog.reader import tiff

    tiff.set_block_cache(0)
    yield
    tiff.set_block_cache(0)


def _write(path: Path, data: np.ndarray, dtype: str, nodata: Any, profile: Any) -> None:
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=dtype,
        nodata=nodata,
        crs=f"EPSG:{EPSG}",
        transform=Affine(10.0, 0.0, ORIGIN[0], 0.0, -10.0, ORIGIN[1]),
        BLOCKSIZE=profile.blocksize,
        COMPRESS=profile.compress,
        PREDICTOR={1: "NO", 2: "STANDARD", 3: "FLOATING_POINT"}[profile.predictor],
        INTERLEAVE="PIXEL",
        OVERVIEWS="NONE",
    ) as dst:
        dst.write(data)


@pytest.fixture(scope="module")
def tile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A 600 x 500 x 128 tile with the published block size, invalid pixels of every kind."""
    root = tmp_path_factory.mktemp("kernel")
    rng = np.random.default_rng(5)
    codes = rng.integers(-127, 128, (EMBEDDINGS.count, 600, 500), dtype=np.int8)
    scales = rng.uniform(0.01, 0.2, (1, 600, 500)).astype(np.float32)
    codes[:, 10:40, 10:40] = -128  # nodata codes
    scales[0, 100:110, 200:260] = np.nan  # water
    scales[0, 300:305, 0:50] = 1.5  # outside the valid range
    _write(root / "embeddings.tif", codes, "int8", -128, EMBEDDINGS)
    _write(root / "scales.tif", scales, "float32", float("nan"), SCALES)
    return root, codes, scales[0]


def _lonlat(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xs = ORIGIN[0] + (cols + 0.5) * 10.0
    ys = ORIGIN[1] - (rows + 0.5) * 10.0
    back = Transformer.from_crs(EPSG, 4326, always_xy=True)
    lon, lat = back.transform(xs, ys)
    return np.asarray(lon), np.asarray(lat)


def _expected(codes: np.ndarray, scales: np.ndarray, r: int, c: int) -> np.ndarray | None:
    s = scales[r, c]
    if not (np.isfinite(s) and 0 < s < 1) or (codes[:, r, c] == -128).any():
        return None
    return codes[:, r, c].astype(np.float32) * s


class CountingOpens:
    """``rasterio.DatasetReader.read`` calls counted (each is one decode of a window)."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ds, name)

    def read(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return self.ds.read(*args, **kwargs)


@pytest.mark.parametrize("path", ["direct", "gdal"])
def test_batch_points_bit_identical_and_each_block_decoded_once(
    tile: tuple[Path, np.ndarray, np.ndarray], path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways the kernel reads blocks (decoded directly from the local file, or through GDAL
    for remote files) give the source values bit for bit and decode each touched block once."""
    from tessera_stac.catalog.reader import tiff

    decoded: list[tuple[str, int]] = []
    if path == "gdal":
        monkeypatch.setattr(tiff, "blocks_of", lambda ds: None)
    else:
        real = tiff.TiffBlocks.pick

        def counting(self: tiff.TiffBlocks, index: int, *args: Any) -> np.ndarray:
            decoded.append((self.path, index))
            return real(self, index, *args)

        monkeypatch.setattr(tiff.TiffBlocks, "pick", counting)
    root, codes, scales = tile
    rng = np.random.default_rng(9)
    rows = rng.integers(-5, 605, 400)
    cols = rng.integers(-5, 505, 400)
    rows[:3], cols[:3] = (20, 105, 302), (20, 230, 10)  # nodata, water, bad scale
    rows[3:6], cols[3:6] = 42, 42  # the same pixel three times
    lon, lat = _lonlat(rows, cols)
    q = embeddings_quantization()
    with (
        rasterio_env(),
        open_raster(str(root / "embeddings.tif")) as cds,
        open_raster(str(root / "scales.tif")) as sds,
    ):
        counted = CountingOpens(cds)
        batch = read_points(counted, sds, q, lon, lat)
    inside = (rows >= 0) & (rows < 600) & (cols >= 0) & (cols < 500)
    assert np.array_equal(batch.inside, inside)
    assert np.array_equal(batch.rows[inside], rows[inside])
    assert np.array_equal(batch.cols[inside], cols[inside])
    for i in range(len(rows)):
        want = _expected(codes, scales, rows[i], cols[i]) if inside[i] else None
        assert bool(batch.valid[i]) == (want is not None), i
        if want is not None:
            assert np.array_equal(batch.vectors[i].astype(np.float32), want)
    assert not batch.valid[:3].any() and batch.nodata[0] and not batch.nodata[1]
    bh = EMBEDDINGS.blocksize
    blocks = {(r // bh, c // bh) for r, c in zip(rows[inside], cols[inside], strict=True)}
    if path == "direct":
        # only the touched blocks, each once, in each file; GDAL never decodes a window
        codes_blocks = [i for p, i in decoded if p.endswith("embeddings.tif")]
        assert sorted(codes_blocks) == sorted({r * -(-500 // bh) + c for r, c in blocks})
        assert len(decoded) == 2 * len(blocks)
        assert counted.reads == 0 and batch.blocks == len(blocks)
    else:
        # one read per run of touched blocks: never more reads than touched blocks, and dense
        # points make one run per block row
        assert counted.reads == batch.blocks <= len(blocks)
        assert counted.reads <= len({b[0] for b in blocks})


@pytest.mark.parametrize("ranges", [(0, 600, 0, 500), (13, 377, 21, 250), (5, 6, 0, 500)])
def test_owned_window_equals_the_rule_on_every_pixel(ranges: tuple[int, int, int, int]) -> None:
    """The lattice shortcut gives exactly owned_by_cell of every pixel centre, for the cell
    and its neighbours (the 600 x 500 px tile straddles 0.1° cell edges)."""
    from tessera_stac.catalog.reader import owned_by_cell, owned_window, pixel_centres

    transform = Affine(10.0, 0.0, ORIGIN[0], 0.0, -10.0, ORIGIN[1])
    r0, r1, c0, c1 = ranges
    rows, cols = np.mgrid[r0:r1, c0:c1]
    lon, lat = Transformer.from_crs(EPSG, 4326, always_xy=True).transform(
        *pixel_centres(transform, rows, cols)
    )
    seen = 0
    for dx, dy in [(0, 0), (0.1, 0), (-0.1, 0), (0, 0.1), (0, -0.1), (0.1, 0.1)]:
        cell = GridCell.containing(CELL.lon + dx, CELL.lat + dy)
        want = owned_by_cell(np.asarray(lon), np.asarray(lat), cell)
        got = owned_window(transform, f"EPSG:{EPSG}", cell, ranges)
        assert np.array_equal(got, want), cell.name
        seen += int(want.any() and not want.all())
    if ranges == (0, 600, 0, 500):
        assert seen >= 2  # the tile is cut by cell edges for at least two cells


def test_polygon_mask_equals_contains_xy_on_every_pixel() -> None:
    """A concave polygon with a hole, vertices on pixel centres (boundary points count as
    outside, as shapely.contains_xy says): the lattice shortcut agrees on every pixel."""
    import shapely
    from shapely.geometry import Polygon

    from tessera_stac.catalog.reader import pixel_centres, polygon_mask

    transform = Affine(10.0, 0.0, ORIGIN[0], 0.0, -10.0, ORIGIN[1])
    outer_rc = [(5, 5), (5, 480), (300, 250), (590, 470), (560, 20)]
    hole_rc = [(100, 100), (100, 200), (200, 200), (200, 100)]
    outer = _lonlat(np.array([r for r, _ in outer_rc]), np.array([c for _, c in outer_rc]))
    hole = _lonlat(np.array([r for r, _ in hole_rc]), np.array([c for _, c in hole_rc]))
    poly = Polygon(zip(*outer, strict=True), [list(zip(*hole, strict=True))])
    shapely.prepare(poly)
    ranges = (0, 600, 0, 500)
    rows, cols = np.mgrid[0:600, 0:500]
    lon, lat = Transformer.from_crs(EPSG, 4326, always_xy=True).transform(
        *pixel_centres(transform, rows, cols)
    )
    want = shapely.contains_xy(poly, lon, lat)
    got = polygon_mask(transform, f"EPSG:{EPSG}", poly, ranges)
    assert 50_000 < want.sum() < 290_000  # a real part of the tile, holes and bays out
    assert np.array_equal(got, want)


@pytest.mark.parametrize("per_block", [1, 3, 40])
def test_many_points_in_one_block_bit_identical(
    tile: tuple[Path, np.ndarray, np.ndarray], per_block: int
) -> None:
    """Few or many points per block (the two ways a block's rows are restored) give the
    source values, row 0 / column 0 and the block's last row and column included."""
    root, codes, scales = tile
    rng = np.random.default_rng(per_block)
    bh = EMBEDDINGS.blocksize
    rows = np.r_[rng.integers(bh, 2 * bh, per_block), bh, 2 * bh - 1]
    cols = np.r_[rng.integers(bh, 2 * bh, per_block), 2 * bh - 1, bh]
    lon, lat = _lonlat(rows, cols)
    with (
        rasterio_env(),
        open_raster(str(root / "embeddings.tif")) as cds,
        open_raster(str(root / "scales.tif")) as sds,
    ):
        batch = read_points(cds, sds, embeddings_quantization(), lon, lat)
    assert batch.blocks == 1
    for i in range(len(rows)):
        want = _expected(codes, scales, rows[i], cols[i])
        assert want is not None
        assert np.array_equal(batch.vectors[i].astype(np.float32), want)


def test_corrupt_block_is_a_clear_error_naming_the_file_only(
    tile: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """A block whose bytes are garbage: an InputError naming the file (not its folder), for
    points and windows alike; blocks elsewhere still read right."""
    import shutil

    import tifffile

    from tessera_stac.catalog.errors import InputError
    from tessera_stac.catalog.reader import read_window

    root, codes, scales = tile
    bad = tmp_path / "embeddings.tif"
    shutil.copy(root / "embeddings.tif", bad)
    with tifffile.TiffFile(bad) as tif:
        offset = int(tif.pages.first.dataoffsets[0])
    with open(bad, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00" * 64)
    q = embeddings_quantization()
    lon, lat = _lonlat(np.array([3, 300]), np.array([3, 300]))
    with rasterio_env(), open_raster(str(bad)) as cds, open_raster(str(root / "scales.tif")) as sds:
        with pytest.raises(InputError) as err:
            read_points(cds, sds, q, lon[:1], lat[:1])
        assert "embeddings.tif: block 0" in str(err.value)
        assert str(tmp_path) not in str(err.value)
        with pytest.raises(InputError):
            read_window(cds, 0, 10, 0, 10)
        good = read_points(cds, sds, q, lon[1:], lat[1:])
    assert np.array_equal(good.vectors[0].astype(np.float32), _expected(codes, scales, 300, 300))


def test_windows_read_directly_equal_gdal(tile: tuple[Path, np.ndarray, np.ndarray]) -> None:
    """read_window on the local file equals GDAL's read, edges and partial blocks included."""
    from rasterio.windows import Window

    from tessera_stac.catalog.reader import read_window, tiff

    root, codes, _ = tile
    with rasterio_env(), open_raster(str(root / "embeddings.tif")) as ds:
        assert tiff.blocks_of(ds) is not None
        for r0, r1, c0, c1 in [(0, 600, 0, 500), (7, 133, 250, 499), (599, 600, 0, 1)]:
            got = read_window(ds, r0, r1, c0, c1)
            assert got.shape == (r1 - r0, c1 - c0, 128)
            assert np.array_equal(got, codes[:, r0:r1, c0:c1].transpose(1, 2, 0))
            gdal = ds.read(window=Window(c0, r0, c1 - c0, r1 - r0))
            assert np.array_equal(got.transpose(2, 0, 1), gdal)


def test_polygon_sums_match_independent_computation(
    tile: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    from shapely import contains_xy
    from shapely.geometry import Polygon, mapping

    root, codes, scales = tile
    corners_rc = [(5, 5), (5, 480), (590, 470), (560, 20)]
    lon, lat = _lonlat(np.array([r for r, _ in corners_rc]), np.array([c for _, c in corners_rc]))
    polygon = Polygon(zip(lon, lat, strict=True))
    q = embeddings_quantization()
    with (
        rasterio_env(),
        open_raster(str(root / "embeddings.tif")) as cds,
        open_raster(str(root / "scales.tif")) as sds,
    ):
        got = polygon_sums(iter_polygon_pixels(cds, sds, q, mapping(polygon), CELL), q)
    rr, cc = np.mgrid[0:600, 0:500]
    plon, plat = _lonlat(rr, cc)
    inside = contains_xy(polygon, plon, plat)
    ix, iy = round((CELL.lon - 0.05) * 10), round((CELL.lat - 0.05) * 10)
    inside &= (np.floor(plon * 10) == ix) & (np.floor(plat * 10) == iy)
    assert inside.sum() < contains_xy(polygon, plon, plat).sum()  # the cell rule bites
    ok = inside & np.isfinite(scales) & (scales > 0) & (scales < 1) & ~(codes == -128).any(0)
    assert got.count == int(inside.sum()) and got.valid == int(ok.sum()) > 1000
    want = (codes[:, ok].astype(np.float64) * scales[ok].astype(np.float64)).sum(axis=1)
    assert got.total is not None and np.allclose(got.total, want, rtol=1e-12, atol=1e-9)


def test_item_recipe_resolves_relative_hrefs() -> None:
    item = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": "t",
        "collection": "c",
        "geometry": None,
        "properties": {"datetime": "2024-01-01T00:00:00Z"},
        "links": [],
        "assets": {
            "embeddings": {
                "href": "./embeddings.tif",
                "roles": ["data", "embeddings"],
                "embedding:quantization": embeddings_quantization().to_dict(),
            },
            "scales": {"href": "./scales.tif", "roles": ["data", "scales"]},
        },
    }
    rec = ItemRecipe.of(item, self_href="http://h/x/2024/t.json")
    assert rec.codes_href == "http://h/x/2024/embeddings.tif"
    assert rec.scale_href == "http://h/x/2024/scales.tif"
    assert ItemRecipe.of(item, self_href="http://h/x/2024/t.json") is rec  # memoised


# ----------------------------------------------------------------- remote opens, counted
COUNTING_SERVER = """
import json, sys
import uvicorn
from starlette.applications import Starlette
from starlette.staticfiles import StaticFiles

log = open(sys.argv[3], "a", buffering=1)
files = StaticFiles(directory=sys.argv[1])

async def app(scope, receive, send):
    if scope["type"] == "http":
        headers = dict(scope["headers"])
        log.write(json.dumps([scope["method"], scope["path"],
                              headers.get(b"range", b"").decode()]) + "\\n")
        scope = dict(scope, root_path="", path=scope["path"][len("/data"):] or "/")
    await files(scope, receive, send)

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


@pytest.fixture
def counting_server(
    tile: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """The tile folder over HTTP (Range), every request logged; in another process."""
    from tessera_stac.catalog.pgstac.cluster import free_port

    root = tile[0]
    log = tmp_path / "requests.log"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", COUNTING_SERVER, str(root), str(port), str(log)])
    base = f"http://127.0.0.1:{port}/data"
    wait_serving(f"{base}/nothing-here", proc, "counting server")
    log.write_text("")
    yield base, log
    proc.terminate()
    proc.wait(timeout=10)


def _requests(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def test_remote_open_takes_at_most_three_requests(counting_server: tuple[str, Path]) -> None:
    base, log = counting_server
    href = f"{base}/embeddings.tif"
    with rasterio_env(), open_raster(gdal_path(href), href) as ds:
        assert ds.count == EMBEDDINGS.count and ds.block_shapes[0] == (EMBEDDINGS.blocksize,) * 2
        opened = _requests(log)
        window = ds.read(1, window=((130, 131), (140, 141)))
    assert len(opened) <= 3, opened
    assert all(method == "GET" for method, _, _ in opened), opened  # no HEAD
    assert all(path.endswith("/embeddings.tif") for _, path, _ in opened), opened  # no sidecars
    assert window.shape == (1, 1)
    reads = _requests(log)[len(opened) :]
    assert len(reads) <= 1, reads  # the one block holding the pixel


def test_options_are_the_documented_ones() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for key, value in GDAL_READ_OPTIONS.items():
        assert f"{key}={value}" in readme, key


# --------------------------------------------------- local COGs described without GDAL
def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return True
    return bool(a == b)


@pytest.mark.parametrize("name", ["embeddings.tif", "scales.tif"])
def test_local_raster_has_gdals_georeferencing(
    tile: tuple[Path, np.ndarray, np.ndarray], name: str
) -> None:
    """A local COG the kernel reads itself is not opened with GDAL: its header gives the same
    CRS, transform, size, types, nodata and blocks as rasterio, and DatasetCache hands it out."""
    from tessera_stac.catalog.reader import DatasetCache, tiff

    root, _, _ = tile
    local = tiff.local_raster(str(root / name))
    assert local is not None
    with rasterio_env(), open_raster(str(root / name)) as ds:
        for attr in ("crs", "transform", "height", "width", "count", "dtypes", "nodata", "res"):
            assert _same(getattr(local, attr), getattr(ds, attr)), attr
        assert list(local.block_shapes) == list(ds.block_shapes)
        assert local.overviews(1) == ds.overviews(1)
        assert local.crs.to_string() == ds.crs.to_string()
    with DatasetCache(2).dataset(str(root / name)) as got:
        assert isinstance(got, tiff.LocalRaster)
    with DatasetCache(2, direct=False).dataset(str(root / name)) as got:
        assert not isinstance(got, tiff.LocalRaster)


def test_points_through_local_raster_equal_gdal_open(
    tile: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    """read_points gives the same batch, bit for bit, on the header-only dataset and on
    rasterio's."""
    from tessera_stac.catalog.reader import tiff

    root, _, _ = tile
    rng = np.random.default_rng(11)
    lon, lat = _lonlat(rng.integers(-5, 605, 300), rng.integers(-5, 505, 300))
    q = embeddings_quantization()
    cds, sds = (tiff.local_raster(str(root / n)) for n in ("embeddings.tif", "scales.tif"))
    direct = read_points(cds, sds, q, lon, lat)
    with (
        rasterio_env(),
        open_raster(str(root / "embeddings.tif")) as gc,
        open_raster(str(root / "scales.tif")) as gs,
    ):
        gdal = read_points(gc, gs, q, lon, lat)
    for field in ("rows", "cols", "inside", "valid", "scales", "nodata", "x", "y"):
        assert np.array_equal(getattr(direct, field), getattr(gdal, field), equal_nan=True)
    assert np.array_equal(direct.vectors, gdal.vectors, equal_nan=True)
    assert direct.crs == gdal.crs == f"EPSG:{EPSG}"


def test_unusual_headers_are_opened_with_gdal(tmp_path: Path) -> None:
    """Pixel-is-point rasters and CRSs without an EPSG code are left to GDAL."""
    from tessera_stac.catalog.reader import tiff

    data = np.ones((2, 64, 64), dtype=np.int8)
    kinds = {
        "point.tif": {"crs": f"EPSG:{EPSG}"},
        "custom.tif": {"crs": "+proj=tmerc +lon_0=75.3 +k=0.9996 +x_0=500000 +datum=WGS84"},
        "plain.tif": {"crs": f"EPSG:{EPSG}"},
    }
    for name, extra in kinds.items():
        with rasterio.open(
            tmp_path / name, "w", driver="GTiff", width=64, height=64, count=2, dtype="int8",
            transform=Affine(10.0, 0.0, ORIGIN[0], 0.0, -10.0, ORIGIN[1]), tiled=True,
            blockxsize=32, blockysize=32, **extra,
        ) as dst:  # fmt: skip
            dst.write(data)
            if name == "point.tif":
                dst.update_tags(AREA_OR_POINT="Point")
    assert tiff.local_raster(str(tmp_path / "point.tif")) is None
    assert tiff.local_raster(str(tmp_path / "custom.tif")) is None
    plain = tiff.local_raster(str(tmp_path / "plain.tif"))
    assert plain is not None and plain.nodata is None
    with rasterio.open(tmp_path / "plain.tif") as ds:
        assert plain.transform == ds.transform and plain.crs == ds.crs


def test_recipe_from_dict_equals_pystacs() -> None:
    """Recipes built from Item dicts directly equal those pystac's Item.from_dict gives."""
    from importlib.resources import files

    from tessera_stac.catalog.reader.item import _as_item, _ItemView

    example = json.loads(
        files("tessera_stac.schemas").joinpath("examples", "item.json").read_text()
    )
    self_link = {"rel": "self", "href": "https://h/c/items/x.json", "type": "application/json"}
    linked = {**example, "links": [*example.get("links", []), self_link]}
    for item, href in [(example, None), (example, "http://h/x/2024/t.json"), (linked, None)]:
        view = _ItemView.of(item, href)
        assert view is not None
        fast = ItemRecipe._parse(view, None)  # type: ignore[arg-type]
        slow = ItemRecipe._parse(_as_item(item, href), None)
        assert repr(fast) == repr(slow)
    assert _ItemView.of({**example, "stac_version": "0.9.0"}, None) is None  # pystac migrates


def test_partial_zstd_equals_whole_block_decode(
    tile: tuple[Path, np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Points decompressed only down to their row (streaming ZSTD) equal whole-block decodes."""
    from tessera_stac.catalog.reader import tiff

    assert tiff._partial_zstd() is not None  # zstandard is a dependency
    root, _, _ = tile
    rng = np.random.default_rng(12)
    lon, lat = _lonlat(rng.integers(0, 600, 500), rng.integers(0, 500, 500))
    q = embeddings_quantization()
    cds, sds = (tiff.local_raster(str(root / n)) for n in ("embeddings.tif", "scales.tif"))
    partial = read_points(cds, sds, q, lon, lat)
    monkeypatch.setattr(tiff, "_partial_zstd", lambda: None)
    whole = read_points(cds, sds, q, lon, lat)
    assert np.array_equal(partial.vectors, whole.vectors, equal_nan=True)
    assert np.array_equal(partial.valid, whole.valid)


@pytest.mark.parametrize("bigtiff", ["NO", "YES"])
def test_fast_header_equals_tifffile(tmp_path: Path, bigtiff: str) -> None:
    """The first IFD read with pread alone describes the image as tifffile does (sizes, type,
    block offsets and counts, georeferencing, nodata), for classic TIFF and BigTIFF; whole
    blocks still decode through tifffile's decoder, made on demand."""
    from tessera_stac.catalog.reader import tiff

    rng = np.random.default_rng(13)
    files = {
        "codes.tif": (rng.integers(-127, 128, (128, 130, 70), dtype=np.int8), "int8", -128, 2),
        "scales.tif": (rng.uniform(0, 1, (1, 130, 70)).astype(np.float32), "float32", None, 3),
    }
    for name, (data, dtype, nodata, predictor) in files.items():
        with rasterio.open(
            tmp_path / name, "w", driver="GTiff", width=70, height=130, count=data.shape[0],
            dtype=dtype, nodata=float("nan") if nodata is None else nodata, crs=f"EPSG:{EPSG}",
            transform=Affine(10.0, 0.0, ORIGIN[0], 0.0, -10.0, ORIGIN[1]), tiled=True,
            blockxsize=32, blockysize=32, compress="zstd", predictor=predictor,
            interleave="pixel", BIGTIFF=bigtiff,
        ) as dst:  # fmt: skip
            dst.write(data)
        fast = tiff.TiffBlocks(str(tmp_path / name))
        assert fast._decode is None  # read without tifffile
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tiff, "_first_ifd", lambda fd: None)
            slow = tiff.TiffBlocks(str(tmp_path / name))
        for attr in ("height", "width", "bands", "block", "dtype", "_offsets", "_counts"):
            assert getattr(fast, attr) == getattr(slow, attr), attr
        assert repr(fast.georef) == repr(slow.georef) and fast.georef is not None
        assert fast._floats == slow._floats and (fast._diffs is None) == (slow._diffs is None)
        for index in (0, 5, len(fast._counts) - 1):
            assert np.array_equal(fast.decode(index), slow.decode(index))
        rows, cols = np.array([0, 3, 31]), np.array([1, 31, 7])
        assert np.array_equal(fast.pick(4, rows, cols), slow.decode(4)[rows, cols])


@pytest.fixture
def block_cache() -> Any:
    """The kernel's module, its block cache empty (a test sets the budget it needs)."""
    from tessera_stac.catalog.reader import tiff

    return tiff


def _counting_preads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every block the kernel fetches from a file (one ``os.preadv`` each), counted."""
    import os

    calls: list[int] = []
    real = os.preadv

    def counting(fd: int, buffers: Any, offset: int) -> int:
        calls.append(offset)
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", counting)
    return calls


def test_block_cache_keeps_blocks_read_twice_same_bits(
    tile: tuple[Path, np.ndarray, np.ndarray], block_cache: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block is kept the second time it is decompressed: the third read of the same points
    fetches nothing from the files, and every read gives the source values bit for bit; a point
    lower in a kept block than the rows kept decompresses the block again."""
    tiff = block_cache
    tiff.set_block_cache(64 * 2**20)
    root, codes, scales = tile
    rng = np.random.default_rng(21)
    rows, cols = rng.integers(0, 30, 200), rng.integers(0, 500, 200)  # top rows of blocks
    lon, lat = _lonlat(rows, cols)
    q = embeddings_quantization()
    cds, sds = (tiff.local_raster(str(root / n)) for n in ("embeddings.tif", "scales.tif"))
    preads = _counting_preads(monkeypatch)
    answers, fetched = [], []
    for _ in range(3):
        before = len(preads)
        answers.append(read_points(cds, sds, q, lon, lat))
        fetched.append(len(preads) - before)
    blocks = len({(r // 64, c // 64) for r, c in zip(rows, cols, strict=True)})
    assert fetched[0] == fetched[1] == 2 * blocks and fetched[2] == 0, fetched
    assert tiff.BLOCKS.used > 0
    for batch in answers:
        assert np.array_equal(batch.vectors, answers[0].vectors, equal_nan=True)
        assert np.array_equal(batch.valid, answers[0].valid)
    for i in range(len(rows)):
        want = _expected(codes, scales, rows[i], cols[i])
        assert bool(answers[2].valid[i]) == (want is not None)
        if want is not None:
            assert np.array_equal(answers[2].vectors[i].astype(np.float32), want)
    # rows 30-63 of the kept blocks were never decompressed: read again, then right
    deep_rows = rows + 30
    lon2, lat2 = _lonlat(deep_rows, cols)
    before = len(preads)
    deep = read_points(cds, sds, q, lon2, lat2)
    assert len(preads) - before == blocks  # codes blocks again; scales blocks are kept whole
    for i in range(len(rows)):
        want = _expected(codes, scales, deep_rows[i], cols[i])
        if want is not None:
            assert np.array_equal(deep.vectors[i].astype(np.float32), want)
    # windows (map tiles, zonal reads) read kept whole blocks: same bits as the source
    window = tiff.blocks_of(cds)
    for _ in range(3):
        got = window.read(5, 200, 3, 420)
        assert np.array_equal(got, codes[:, 5:200, 3:420].transpose(1, 2, 0))


def test_block_cache_stays_in_its_budget_and_never_serves_a_rewritten_file(
    tmp_path: Path, block_cache: Any
) -> None:
    """The kept bytes never pass the budget (least recently used dropped first); a file
    rewritten in place is read anew, never from the blocks kept for its old content; a budget
    of 0 forgets everything."""
    tiff = block_cache
    rng = np.random.default_rng(3)
    path = tmp_path / "embeddings.tif"
    old = rng.integers(-127, 128, (EMBEDDINGS.count, 256, 256), dtype=np.int8)
    _write(path, old, "int8", -128, EMBEDDINGS)
    block = 64 * 64 * EMBEDDINGS.count
    tiff.set_block_cache(5 * block)  # five whole blocks; the image has sixteen
    for n in range(3):
        ds = tiff.local_raster(str(path))
        assert np.array_equal(ds.blocks.read(0, 256, 0, 256), old.transpose(1, 2, 0))
        assert (0 if n == 0 else 5 * block) == tiff.BLOCKS.used  # kept from the second read
    assert len(tiff.BLOCKS._entries) == 5
    new = rng.integers(-127, 128, old.shape, dtype=np.int8)
    replacement = tmp_path / "new.tif"
    _write(replacement, new, "int8", -128, EMBEDDINGS)
    replacement.replace(path)  # what a re-publish does: a new file under the same name
    for _ in range(3):
        ds = tiff.local_raster(str(path))
        assert np.array_equal(ds.blocks.read(0, 256, 0, 256), new.transpose(1, 2, 0))
        assert tiff.BLOCKS.used <= 5 * block
    tiff.set_block_cache(0)
    assert tiff.BLOCKS.used == 0 and not tiff.BLOCKS._entries and not tiff.BLOCKS._seen


def test_warm_up_readies_every_decode_thread() -> None:
    """After ``warm_up`` every decode thread holds its buffers and ZSTD decompressor (a
    server's first request decodes at once)."""
    import threading

    from tessera_stac.catalog.reader import tiff

    tiff.warm_up(300_000)
    barrier = threading.Barrier(tiff.DECODE_THREADS)

    def look(_: int) -> tuple[int, bool]:
        barrier.wait(timeout=10)  # one call per thread
        return len(tiff._local.plain), getattr(tiff._local, "zstd", None) is not None

    seen = list(tiff._executor().map(look, range(tiff.DECODE_THREADS)))
    assert all(size >= 300_000 and zstd for size, zstd in seen), seen
