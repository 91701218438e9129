"""The metadata-only reader: TESSERA per-pixel scales, AlphaEarth signed square, linear codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.transform import Affine

from tessera_stac.catalog.embedding import EmbeddingExtension, Quantization
from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.profile import EMBEDDINGS, SCALES
from tessera_stac.catalog.reader import EmbeddingReader, dequantize, gdal_path, resolve_href
from tessera_stac.catalog.stac import create_item

SHAPE = (37, 45)  # small, not a multiple of the block size


def write_cog(path: Path, data: np.ndarray, crs: str, transform: Any, nodata: Any) -> None:
    """A tiled GeoTIFF (pixel-interleaved) holding ``data`` shaped (rows, cols, bands)."""
    rows, cols, bands = data.shape
    with rasterio.open(
        path, "w", driver="GTiff", width=cols, height=rows, count=bands,
        dtype=data.dtype.name, crs=crs, transform=transform, nodata=nodata,
        tiled=True, blockxsize=16, blockysize=16, interleave="pixel", compress="zstd",
    ) as dst:  # fmt: skip
        dst.write(np.moveaxis(data, -1, 0))


def tessera_like(rng: np.random.Generator, dims: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Codes and scales with the producer's quantisation and the published files' defects."""
    x = rng.normal(0, 1, (*SHAPE, dims)).astype(np.float32)
    scale = (np.abs(x).max(axis=-1) / 127).astype(np.float32)
    q = np.clip(np.round(x / scale[..., None]), -128, 127).astype(np.int8)
    scale[0, :5] = 0.0  # unprocessed
    scale[1, 0] = np.float32(3.4e38)  # ~FLT_MAX sentinel
    scale[1, 1] = -161685.0
    scale[2, 2] = np.nan
    scale[3, 3] = 1.5  # out of the valid range
    bad = ~(np.isfinite(scale) & (scale > 0) & (scale < 1))
    # what the publisher writes: nodata codes and NaN scales on invalid pixels
    q[bad] = EMBEDDINGS.nodata
    scale = scale.copy()
    scale[bad] = np.nan
    return q, scale


@pytest.fixture
def tessera_item(tmp_path: Path, make_tile: Callable[..., Any]) -> tuple[Path, np.ndarray, Any]:
    tile = make_tile(shape=SHAPE)
    rng = np.random.default_rng(7)
    q, s = tessera_like(rng)
    folder = tmp_path / tile.collection_id / "2024" / tile.cell.name
    folder.mkdir(parents=True)
    transform = Affine(*tile.transform)
    crs = f"EPSG:{tile.epsg}"
    write_cog(folder / EMBEDDINGS.filename, q, crs, transform, EMBEDDINGS.nodata)
    write_cog(folder / SCALES.filename, s[..., None], crs, transform, np.nan)
    item = create_item(tile)
    path = folder / f"{item.id}.json"
    path.write_text(json.dumps(item.to_dict(transform_hrefs=False)))
    expected = q.astype(np.float32) * s[..., None]
    return path, expected, tile


def test_per_pixel_round_trip_bit_exact(tessera_item: tuple[Path, np.ndarray, Any]) -> None:
    path, expected, _ = tessera_item
    item = pystac.Item.from_file(str(path))
    values, valid = EmbeddingReader(item).read()
    assert values.dtype == np.float32 and values.shape == (*SHAPE, 128)
    assert valid.shape == SHAPE
    want_valid = np.isfinite(expected).all(axis=-1)
    assert valid.sum() == SHAPE[0] * SHAPE[1] - 9
    np.testing.assert_array_equal(valid, want_valid)
    # bit for bit in float32 on every valid pixel
    assert np.array_equal(values[valid].view(np.uint32), expected[valid].view(np.uint32))
    assert np.isnan(values[~valid]).all()


def test_windows_match_full_read(tessera_item: tuple[Path, np.ndarray, Any]) -> None:
    path, _, _ = tessera_item
    with EmbeddingReader(pystac.Item.from_file(str(path))) as reader:
        full, full_valid = reader.read()
        part, part_valid = reader.read(((3, 20), (7, 40)))
        edge, edge_valid = reader.read(((-2, 5), (40, 50)))  # overlaps the top-right corner
        away, away_valid = reader.read(((100, 110), (0, 4)))
    assert part.shape == (17, 33, 128)
    np.testing.assert_array_equal(part_valid, full_valid[3:20, 7:40])
    np.testing.assert_array_equal(part, full[3:20, 7:40])
    assert edge.shape == (7, 10, 128) and edge_valid.shape == (7, 10)
    assert not edge_valid[:2].any() and not edge_valid[:, 5:].any()
    np.testing.assert_array_equal(edge_valid[2:, :5], full_valid[0:5, 40:45])
    np.testing.assert_array_equal(edge[2:, :5], full[0:5, 40:45])
    assert away.shape == (10, 4, 128) and not away_valid.any() and np.isnan(away).all()


def test_read_point(tessera_item: tuple[Path, np.ndarray, Any]) -> None:
    from pyproj import Transformer

    path, expected, tile = tessera_item
    reader = EmbeddingReader(pystac.Item.from_file(str(path)))
    a, _, x0, _, e, y0 = tile.transform
    to_wgs = Transformer.from_crs(tile.epsg, 4326, always_xy=True)
    for row, col in [(10, 20), (0, 10), (SHAPE[0] - 1, SHAPE[1] - 1)]:
        lon, lat = to_wgs.transform(x0 + a * (col + 0.5), y0 + e * (row + 0.5))
        sample = reader.read_point(lon, lat)
        assert (sample.row, sample.col) == (row, col)
        assert sample.inside and sample.valid
        assert sample.vector is not None and sample.vector.dtype == np.float32
        assert np.array_equal(sample.vector, expected[row, col])
        assert sample.hrefs["codes"].endswith("embeddings.tif")
        assert sample.hrefs["scales"].endswith("scales.tif")
    # an invalid pixel (zero scale) and a point off the raster
    lon, lat = to_wgs.transform(x0 + a * 2.5, y0 + e * 0.5)
    invalid = reader.read_point(lon, lat)
    assert invalid.inside and not invalid.valid and invalid.vector is None
    outside = reader.read_point(lon - 1.0, lat)
    assert not outside.inside and outside.vector is None
    batch = reader.read_points([(lon, lat), (lon - 1.0, lat)])
    assert [(b.row, b.col, b.inside, b.valid) for b in batch] == [
        (invalid.row, invalid.col, True, False),
        (outside.row, outside.col, False, False),
    ]


def test_signed_square_alphaearth_style(tmp_path: Path, make_tile: Callable[..., Any]) -> None:
    rng = np.random.default_rng(3)
    dims = 64
    x = rng.uniform(-1, 1, (*SHAPE, dims)).astype(np.float32)
    # AlphaEarth quantisation: q = round(sign(x) * sqrt(|x|) * 127.5), -128 = nodata
    q = np.clip(np.round(np.sign(x) * np.sqrt(np.abs(x)) * 127.5), -127, 127).astype(np.int8)
    q[5, 6] = -128
    item = single_asset_item(tmp_path, make_tile, q, -128, Quantization.signed_square(), dims)
    values, valid = EmbeddingReader(item).read()
    expected = np.sign(q.astype(np.float32)) * (np.abs(q.astype(np.float32)) / 127.5) ** 2
    assert not valid[5, 6] and valid.sum() == SHAPE[0] * SHAPE[1] - 1
    np.testing.assert_allclose(values[valid], expected[valid], rtol=1e-6)
    # and the decoded values approximate the original embeddings
    assert np.abs(values[valid] - x[valid]).max() < 0.02


def test_linear_per_band(tmp_path: Path, make_tile: Callable[..., Any]) -> None:
    rng = np.random.default_rng(5)
    dims = 4
    q = rng.integers(1, 256, (*SHAPE, dims)).astype(np.uint8)
    q[0, 0, 2] = 0  # one band nodata makes the pixel invalid
    scale, offset = [0.5, 0.25, 2.0, 1.0], [-1.0, 0.0, 3.0, -128.0]
    quant = Quantization.linear(scale, offset, nodata=0, quantized_dtype="uint8")
    item = single_asset_item(tmp_path, make_tile, q, 0, quant, dims)
    values, valid = EmbeddingReader(item).read()
    expected = q.astype(np.float32) * np.float32(scale) + np.float32(offset)
    assert not valid[0, 0] and valid.sum() == SHAPE[0] * SHAPE[1] - 1
    np.testing.assert_array_equal(values[valid], expected[valid])


def test_linear_global_and_none() -> None:
    codes = np.arange(12, dtype=np.int16).reshape(2, 2, 3)
    values, valid = dequantize(codes, Quantization.linear(0.5, 1.0))
    np.testing.assert_array_equal(values, codes * 0.5 + 1.0)
    assert valid.all()
    floats = np.ones((2, 2, 3), np.float32)
    floats[1, 1, 0] = np.nan
    values, valid = dequantize(floats, Quantization.none(nodata=float("nan")))
    assert valid.tolist() == [[True, True], [True, False]]


def single_asset_item(
    tmp_path: Path, make_tile: Callable[..., Any], q: np.ndarray, nodata: Any,
    quant: Quantization, dims: int,
) -> pystac.Item:  # fmt: skip
    """An Item with one codes asset described only by its embedding: metadata."""
    tile = make_tile(shape=SHAPE)
    path = tmp_path / "codes.tif"
    write_cog(path, q, f"EPSG:{tile.epsg}", Affine(*tile.transform), nodata)
    item = create_item(tile)
    for key in list(item.assets):
        del item.assets[key]
    item.add_asset("codes", pystac.Asset("./codes.tif", roles=["data", "embeddings"]))
    EmbeddingExtension.ext(item).dimensions = dims
    EmbeddingExtension.ext(item.assets["codes"]).quantization = quant
    item.set_self_href(str(tmp_path / "item.json"))
    return item


def test_clear_errors(tessera_item: tuple[Path, np.ndarray, Any]) -> None:
    path, _, _ = tessera_item
    d = json.loads(path.read_text())
    no_recipe = json.loads(json.dumps(d))
    del no_recipe["assets"]["embeddings"]["embedding:quantization"]
    with pytest.raises(InputError, match="no embedding:quantization"):
        EmbeddingReader(no_recipe, self_href=str(path))
    no_scales = json.loads(json.dumps(d))
    del no_scales["assets"]["scales"]
    with pytest.raises(InputError, match="scale asset 'scales'"):
        EmbeddingReader(no_scales, self_href=str(path))
    wrong_dims = json.loads(json.dumps(d))
    wrong_dims["properties"]["embedding:dimensions"] = 64
    with pytest.raises(InputError, match="128 bands, but the item says"):
        EmbeddingReader(wrong_dims, self_href=str(path)).read()
    missing = json.loads(json.dumps(d))
    missing["assets"]["embeddings"]["href"] = "./gone.tif"
    with pytest.raises(InputError, match=r"cannot open .*gone\.tif"):
        EmbeddingReader(missing, self_href=str(path)).read()


def test_href_resolution() -> None:
    assert resolve_href("./a.tif", "/d/c/item.json") == "/d/c/a.tif"
    assert resolve_href("../x/a.tif", "s3://b/p/c/item.json") == "s3://b/p/x/a.tif"
    assert resolve_href("a.tif", "https://h/p/item.json") == "https://h/p/a.tif"
    assert resolve_href("https://o/a.tif", "/d/item.json") == "https://o/a.tif"
    assert gdal_path("s3://b/k/a.tif") == "/vsis3/b/k/a.tif"
    assert gdal_path("https://h/a.tif") == "/vsicurl/https://h/a.tif"
    assert gdal_path("/d/a.tif") == "/d/a.tif"


def test_read_from_s3(tessera_item: tuple[Path, np.ndarray, Any], s3: Any) -> None:
    server, bucket = s3
    path, expected, _ = tessera_item
    client = server.client()
    prefix = "cat/tessera-embeddings-v1/2024/grid_0.15_52.05"
    for name in ("embeddings.tif", "scales.tif", path.name):
        client.upload_file(str(path.parent / name), bucket, f"{prefix}/{name}")
    d = json.loads(path.read_text())
    reader = EmbeddingReader(
        d,
        self_href=f"s3://{bucket}/{prefix}/{path.name}",
        gdal_env=server.storage_settings().gdal_env(),
    )
    assert reader.hrefs["codes"] == f"s3://{bucket}/{prefix}/embeddings.tif"
    values, valid = reader.read(((0, 10), (0, 10)))
    ok = valid
    assert np.array_equal(values[ok], expected[:10, :10][ok])


SERVE = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.staticfiles import StaticFiles
app = Starlette()
app.mount("/data", StaticFiles(directory=sys.argv[1]))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


@pytest.fixture
def http_root(tmp_path: Path) -> Any:
    """Serve a directory over HTTP with Range support, from another process (GDAL's reads
    hold the GIL, so a server thread in this process would deadlock)."""
    import subprocess
    import sys

    from tessera_stac.catalog.pgstac.cluster import free_port
    from tests.fixtures_catalog import wait_serving

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(tmp_path), str(port)])
    base = f"http://127.0.0.1:{port}"
    wait_serving(f"{base}/data/", proc, "static file server")
    yield tmp_path, f"{base}/data"
    proc.terminate()
    proc.wait(timeout=10)


def test_read_over_http(tessera_item: tuple[Path, np.ndarray, Any], http_root: Any) -> None:
    path, expected, _ = tessera_item
    root, base = http_root
    rel = path.relative_to(root).as_posix()
    reader = EmbeddingReader(json.loads(path.read_text()), self_href=f"{base}/{rel}")
    assert reader.hrefs["codes"].startswith(f"{base}/")
    values, valid = reader.read(((20, 30), (30, 45)))
    assert valid.any()
    assert np.array_equal(values[valid], expected[20:30, 30:45][valid])
