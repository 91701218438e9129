"""Round trip: embeddings * scales read back from the COGs == source q * s, bit for bit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.profile import EMBEDDINGS, SCALES
from tessera_stac.publisher.embeddings import cog, preview, run, tiles
from tessera_stac.publisher.embeddings.georef import rebuild_georef
from tessera_stac.publisher.engines.local import ProcessEngine
from tessera_stac.publisher.samples import tiles as sample

GRIDS = ["grid_78.05_12.05", "grid_0.15_52.05", "grid_-0.15_-0.05", "grid_25.05_70.05"]
YEAR = 2023


@dataclass(frozen=True)
class Published:
    source: Path
    dests: dict[str, Path]  # "landmask" / "rebuilt" -> dest root
    reports: dict[str, run.RunReport]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    base = tmp_path_factory.mktemp("roundtrip")
    source = base / "source"
    cells = [GridCell.parse(g) for g in GRIDS]
    defects = sample.SampleOptions(zero_fraction=0.02, sentinel_fraction=0.0005)
    for cell in cells:
        sample.write_tile(source, cell, YEAR, defects)
    dests, reports = {}, {}
    engine = ProcessEngine(2)  # also exercises the process pool
    for mode in ("landmask", "rebuilt"):
        srcs = tiles.sources_for(str(source), cells, [YEAR], with_landmask=mode == "landmask")
        dests[mode] = base / mode
        reports[mode] = run.publish(srcs, str(dests[mode]), engine=engine, report=None)
    yield Published(source, dests, reports)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


@pytest.mark.slow  # four real-size tiles generated and published twice
@pytest.mark.parametrize("mode", ["landmask", "rebuilt"])
@pytest.mark.parametrize("grid", GRIDS)
def test_round_trip_bit_exact(published: Published, mode: str, grid: str) -> None:
    report = published.reports[mode]
    outcome = next(o for o in report.outcomes if o.grid == grid)
    assert outcome.status == "ok", outcome.reason
    cell = GridCell.parse(grid)
    src = sample.tile_paths(published.source, cell, YEAR)
    q = np.load(src.embeddings)
    s = np.load(src.scales)
    with rasterio.open(src.landmask) as lm_ds:
        landmask = lm_ds.read(1)
        lm_grid = (lm_ds.crs.to_epsg(), tuple(lm_ds.transform)[:6], lm_ds.shape)
    folder = published.dests[mode] / "tessera-embeddings-v1" / str(YEAR) / grid
    emb_path, sc_path = folder / "embeddings.tif", folder / "scales.tif"
    for path in (emb_path, sc_path):
        assert cog_validate(str(path), strict=True, quiet=True)[0]
    with rasterio.open(emb_path) as ds:
        # same grid as the source, whichever way it was obtained (rebuilt == landmask)
        assert (ds.crs.to_epsg(), tuple(ds.transform)[:6], ds.shape) == lm_grid
        assert ds.nodata == -128 and ds.dtypes[0] == "int8" and ds.count == 128
        assert ds.interleaving.name == "pixel"
        assert ds.descriptions[0] == EMBEDDINGS.band_names[0]
        assert ds.tags()["TESSERA_YEAR"] == str(YEAR) and ds.tags()["TESSERA_TILE"] == grid
        assert ds.tags()["TESSERA_MODEL_VERSION"] == "v1"
        assert ds.overviews(1) == list(EMBEDDINGS.overview_levels)
        codes = np.moveaxis(ds.read(), 0, -1)
    with rasterio.open(sc_path) as ds:
        assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata)
        assert ds.overviews(1) == list(SCALES.overview_levels)
        scales = ds.read(1)
    if mode == "landmask":
        valid = np.isfinite(s) & (s > 0) & (s < 1) & (landmask != 0)
    else:  # without a landmask, water pixels with good scales are valid
        valid = np.isfinite(s) & (s > 0) & (s < 1)
    assert valid.sum() > 0 and (~valid).sum() > 0
    got = codes[valid].astype(np.float32) * scales[valid][:, None]
    want = q[valid].astype(np.float32) * s[valid][:, None]
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert (codes[~valid] == -128).all() and np.isnan(scales[~valid]).all()
    assert np.isfinite(scales[valid]).all() and (codes[valid] != -128).all()
    counts = outcome.counts
    assert counts["valid"] == int(valid.sum())
    assert counts["scale_zero"] > 0 and counts["scale_huge"] > 0 and counts["scale_negative"] > 0
    item = json.loads((folder / f"{grid}_{YEAR}.json").read_text())
    assert item["properties"]["proj:shape"] == list(rebuild_georef(cell).shape)


@pytest.mark.slow  # reads the module's four published real-size tiles
def test_overviews_dequantise_to_the_mean(published: Published) -> None:
    grid = "grid_25.05_70.05"
    cell = GridCell.parse(grid)
    src = sample.tile_paths(published.source, cell, YEAR)
    q, s = np.load(src.embeddings), np.load(src.scales)
    with rasterio.open(src.landmask) as ds:
        valid = np.isfinite(s) & (s > 0) & (s < 1) & (ds.read(1) != 0)
    x = q.astype(np.float32) * np.where(valid, s, 0)[..., None]
    folder = published.dests["landmask"] / "tessera-embeddings-v1" / str(YEAR) / grid
    for level, factor in enumerate(EMBEDDINGS.overview_levels):
        with (
            rasterio.open(folder / "embeddings.tif", overview_level=level) as e,
            rasterio.open(folder / "scales.tif", overview_level=level) as f,
        ):
            oq, os_ = np.moveaxis(e.read(), 0, -1), f.read(1)
        h, w = -(-s.shape[0] // factor), -(-s.shape[1] // factor)
        assert oq.shape[:2] == (h, w) == os_.shape
        # independent mean of a few blocks, in float space
        for i, j in [(0, 0), (h // 2, w // 3), (h - 1, w - 1)]:
            block = (slice(i * factor, (i + 1) * factor), slice(j * factor, (j + 1) * factor))
            n = valid[block].sum()
            if n == 0:
                assert np.isnan(os_[i, j]) and (oq[i, j] == -128).all()
                continue
            mean = x[block].reshape(-1, 128).sum(0) / n
            deq = oq[i, j].astype(np.float32) * os_[i, j]
            assert np.abs(deq - mean).max() <= os_[i, j] * 0.5 + 1e-5
            assert np.abs(oq[i, j]).max() == 127


def test_requantise_edge_cases() -> None:
    sums = np.zeros((2, 2, 128), np.float32)
    sums[0, 0] = 1.0
    count = np.array([[2, 3], [0, 1]])
    codes, scales = cog.requantise(sums.copy(), count)
    assert (codes[0, 0] == 127).all() and scales[0, 0] == pytest.approx(0.5 / 127)
    assert (codes[0, 1] == 0).all() and scales[0, 1] > 0  # an all-zero mean stays valid
    assert (codes[1, 0] == -128).all() and np.isnan(scales[1, 0])


@pytest.mark.slow  # reads the module's four published real-size tiles
def test_preview_is_fixed_and_transparent_where_invalid(published: Published) -> None:
    from PIL import Image

    folder = published.dests["landmask"] / "tessera-embeddings-v1" / str(YEAR) / GRIDS[0]
    image = np.asarray(Image.open(folder / "preview.png"))
    with rasterio.open(folder / "scales.tif", overview_level=1) as ds:
        sc = ds.read(1)
    assert image.shape == (*sc.shape, 4)
    assert ((image[..., 3] == 0) == np.isnan(sc)).all()
    # the projection does not depend on the tile: same vector, same colour anywhere
    codes = np.full((1, 2, 128), 10, np.int8)
    rgba = preview.render(codes, np.array([[0.06, 0.06]], np.float32))
    assert (rgba[0, 0] == rgba[0, 1]).all()
    assert preview.projection().shape == (128, 3)
