"""Change between two years, per pixel and per MWS, against an independent numpy computation
from the source .npy arrays (the real Bhavnagar layer, two tiles either side of 72°E)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer

from tessera_stac.catalog.change import cosine_distance
from tessera_stac.catalog.model import GridCell
from tessera_stac.catalog.reader import EmbeddingReader
from tessera_stac.publisher.join.change import change_watersheds
from tessera_stac.publisher.join.join import find_tiles_local
from tessera_stac.publisher.samples import tiles as sample
from tests.fixtures_corestack import CHANGE_THRESHOLD, GRIDS, YEARS, TwoYears

#: end to end: four real-size tiles (two years) generated and published, then the CLI path
pytestmark = pytest.mark.slow

THRESHOLD = CHANGE_THRESHOLD


class Dequantised:
    """A tile's source vectors ``q * s`` (float32, NaN where invalid), computed for the pixels
    asked for: ``values[r, c]`` (scalars or index arrays) as ``(..., 128)``, ``values.flat(i)``
    at flat pixel indices. The same numbers as the whole (h, w, 128) product, without
    materialising it (620 MB of float32 a tile-year, built 14 times in this module)."""

    def __init__(self, q: np.ndarray, s: np.ndarray, valid: np.ndarray) -> None:
        self.q, self.s, self.valid = q, s, valid

    def _dequantise(self, q: np.ndarray, s: Any, valid: Any) -> np.ndarray:
        values = q.astype(np.float32) * np.asarray(s, dtype=np.float32)[..., None]
        return np.where(np.asarray(valid)[..., None], values, np.float32(np.nan))

    def __getitem__(self, index: tuple[Any, Any]) -> np.ndarray:
        return self._dequantise(self.q[index], self.s[index], self.valid[index])

    def flat(self, index: np.ndarray) -> np.ndarray:
        h, w = self.s.shape
        q = self.q.reshape(h * w, -1)
        return self._dequantise(q[index], self.s.ravel()[index], self.valid.ravel()[index])


def _source_values(root: Path, cell: GridCell, year: int) -> tuple[Dequantised, np.ndarray, Any]:
    """Dequantised source vectors (h, w, 128) float32, NaN invalid (computed where asked:
    :class:`Dequantised`), and the landmask grid."""
    folder = root / sample.REPRESENTATION_DIR / str(year) / cell.name
    q = np.load(folder / f"{cell.name}.npy")
    s = np.load(folder / f"{cell.name}_scales.npy")
    with rasterio.open(root / sample.LANDMASK_DIR / f"{cell.name}.tiff") as ds:
        land = ds.read(1) != 0
        transform, epsg = ds.transform, ds.crs.to_epsg()
    with np.errstate(invalid="ignore"):
        valid = land & np.isfinite(s) & (s > 0) & (s < 1) & (q.min(axis=2) != -128)
    return Dequantised(q, s, valid), valid, (transform, epsg)


def _numpy_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return 1.0 - (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _item(dest: Path, grid: str, year: int) -> Path:
    return dest / "tessera-embeddings-v1" / str(year) / grid / f"{grid}_{year}.json"


def test_pixel_change_at_200_random_points(two_years: TwoYears) -> None:
    rng = np.random.default_rng(14)
    lon = rng.uniform(71.9, 72.1, 200)
    lat = rng.uniform(21.8, 21.9, 200)
    # some points inside the changed box, so large distances are tested too
    west, south, east, north = two_years.change_bbox
    lon[:40] = rng.uniform(west, east, 40)
    lat[:40] = rng.uniform(south, north, 40)
    checked = big = 0
    for grid in GRIDS:
        cell = GridCell.parse(grid)
        pick = np.array([GridCell.containing(x, y) == cell for x, y in zip(lon, lat, strict=True)])
        pts = list(zip(lon[pick].tolist(), lat[pick].tolist(), strict=True))
        got = []
        for year in YEARS:
            path = _item(two_years.dest, grid, year)
            with EmbeddingReader(json.loads(path.read_text()), self_href=str(path)) as reader:
                got.append(reader.read_points(pts))
        src = [_source_values(two_years.source, cell, y) for y in YEARS]
        transform, epsg = src[0][2]
        xs, ys = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon[pick], lat[pick])
        rows, cols = (
            np.asarray(v, dtype=np.int64)
            for v in rasterio.transform.rowcol(transform, xs, ys, op=np.floor)
        )
        for k, (r, c) in enumerate(zip(rows, cols, strict=True)):
            a, b = got[0][k], got[1][k]
            va, vb = src[0][0][r, c], src[1][0][r, c]
            both = src[0][1][r, c] and src[1][1][r, c]
            assert (a.valid and b.valid) == both
            if not both:
                continue
            assert a.vector is not None and b.vector is not None
            dist, ok = cosine_distance(a.vector, b.vector)
            want = _numpy_distance(va, vb)
            assert bool(ok) and abs(float(dist) - float(want)) <= 1e-6
            checked += 1
            big += want > THRESHOLD
    assert checked >= 150 and big >= 20


def reference_change(two_years: TwoYears) -> dict[str, np.ndarray]:
    """Per polygon, from the .npy arrays: pixel centres in lon/lat, in the tile's own cell,
    inside the polygon (shapely), valid in both years."""
    frame = two_years.layer.frame
    n = len(frame)
    sums = np.zeros((2, n, 128))
    count = np.zeros(n, dtype=np.int64)
    changed = np.zeros(n, dtype=np.int64)
    cells_seen = np.zeros(n, dtype=np.int64)
    zones: list[set[int]] = [set() for _ in range(n)]
    for grid in GRIDS:
        cell = GridCell.parse(grid)
        (va, ok_a, (transform, epsg)), (vb, ok_b, _) = (
            _source_values(two_years.source, cell, y) for y in YEARS
        )
        h, w = ok_a.shape
        rows, cols = np.mgrid[0:h, 0:w]
        x, y = rasterio.transform.xy(transform, rows.ravel(), cols.ravel(), offset="center")
        lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)
        lon, lat = np.asarray(lon), np.asarray(lat)
        mine = (np.floor(lon * 10) == round((cell.lon - 0.05) * 10)) & (
            np.floor(lat * 10) == round((cell.lat - 0.05) * 10)
        )
        both = (ok_a & ok_b).ravel()
        for i, poly in enumerate(frame.geometry):
            x0, y0, x1, y1 = poly.bounds
            cand = np.flatnonzero((lon >= x0) & (lon <= x1) & (lat >= y0) & (lat <= y1) & mine)
            inside = cand[shapely.contains_xy(poly, lon[cand], lat[cand])]
            good = inside[both[inside]]
            if len(good) == 0:
                continue
            cells_seen[i] += 1
            zones[i].add(epsg)
            count[i] += len(good)
            fa, fb = va.flat(good), vb.flat(good)
            sums[0, i] += fa.astype(np.float64).sum(axis=0)
            sums[1, i] += fb.astype(np.float64).sum(axis=0)
            changed[i] += int((_numpy_distance(fa, fb) > THRESHOLD).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        distance = _numpy_distance(sums[0] / count[:, None], sums[1] / count[:, None])
        share = changed / count
    return {"distance": distance, "share": share, "count": count, "cells": cells_seen}


def test_mws_change_equals_independent_computation(two_years: TwoYears) -> None:
    dest = two_years.dest
    cells = [GridCell.parse(g) for g in GRIDS]
    found = {y: find_tiles_local(dest, y, cells) for y in YEARS}
    result = change_watersheds(
        two_years.layer.frame, found[2023], found[2024], 2023, 2024, THRESHOLD
    )
    want = reference_change(two_years)
    table = result.table
    covered = want["count"] > 0
    np.testing.assert_array_equal(table["pixels"].to_numpy(), want["count"])
    np.testing.assert_allclose(
        table["distance"].to_numpy()[covered], want["distance"][covered], rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(
        table["changed_share"].to_numpy()[covered], want["share"][covered], rtol=0, atol=1e-6
    )
    assert np.isnan(table["distance"].to_numpy()[~covered]).all()
    # teeth: MWS spanning both tiles (and so both UTM zones), many pixels
    assert (want["cells"] == 2).sum() >= 3 and covered.sum() >= 20
    # the changed MWS come first
    ranked = table[covered].sort_values("distance", ascending=False)["uid"].tolist()
    assert set(ranked[: len(two_years.changed_uids)]) == set(two_years.changed_uids)


def test_change_cli_writes_geoparquet_item_derived_from_both_joins(
    two_years: TwoYears, cli_catalog: tuple[Path, str]
) -> None:
    import geopandas as gpd

    root, mws_id = cli_catalog
    name = f"{mws_id}_change_2023_2024"
    folder = root / "corestack-mws-change" / name
    item = json.loads((folder / f"{name}.json").read_text())
    derived = [ln["href"] for ln in item["links"] if ln["rel"] == "derived_from"]
    assert any(f"{mws_id}_embeddings_2023" in h for h in derived)
    assert any(f"{mws_id}_embeddings_2024" in h for h in derived)
    assert item["properties"]["tessera:year_from"] == 2023
    table = gpd.read_parquet(folder / f"{name}.parquet")
    assert table["uid"].is_unique and {"distance", "changed_share", "pixels"} <= set(table.columns)
    assert (folder / f"{name}.csv").exists()
    top = table.sort_values("distance", ascending=False)["uid"].head(len(two_years.changed_uids))
    assert set(top) == set(two_years.changed_uids)


def test_change_routes_over_http(
    two_years: TwoYears, cli_catalog: tuple[Path, str], pg_dsn: str, live_api: Any
) -> None:
    import geopandas as gpd
    import httpx

    from tessera_stac.api.app import create_app
    from tessera_stac.api.settings import ApiSettings
    from tessera_stac.catalog.pgstac.load import load

    root, mws_id = cli_catalog
    url = live_api(create_app(ApiSettings(data_dir=root), pg_dsn))
    load(pg_dsn, str(root / "catalog.json"), base_url=url + "/data")
    name = f"{mws_id}_change_2023_2024"
    table = gpd.read_parquet(root / "corestack-mws-change" / name / f"{name}.parquet")
    years = {"from": 2023, "to": 2024}
    # a point in the changed box: the pixel's distance, against the source arrays
    west, south, east, north = two_years.change_bbox
    lon, lat = (west + east) / 2, (south + north) / 2
    got = httpx.get(
        f"{url}/embeddings/change", params={"lon": lon, "lat": lat, **years}, timeout=60
    )
    assert got.status_code == 200, got.text
    cell = GridCell.containing(lon, lat)
    (va, ok_a, (transform, epsg)), (vb, ok_b, _) = (
        _source_values(two_years.source, cell, y) for y in YEARS
    )
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    r, c = (int(v) for v in rasterio.transform.rowcol(transform, x, y, op=np.floor))
    assert ok_a[r, c] and ok_b[r, c]
    assert abs(got.json()["distance"] - float(_numpy_distance(va[r, c], vb[r, c]))) <= 1e-6
    # a watershed's polygon over both tiles: the area route equals the change table
    row = table.sort_values("pixels", ascending=False).iloc[0]
    geometry = shapely.geometry.mapping(row.geometry)
    body = {"geometry": geometry, "from": 2023, "to": 2024, "threshold": THRESHOLD}
    area = httpx.post(f"{url}/embeddings/change", json=body, timeout=120)
    assert area.status_code == 200, area.text
    assert area.json()["pixels"] == int(row["pixels"])
    assert abs(area.json()["distance"] - float(row["distance"])) <= 1e-6
    assert abs(area.json()["changed_share"] - float(row["changed_share"])) <= 1e-6
    # per watershed and the ranking, from the published table
    one = httpx.get(f"{url}/watersheds/{row['uid']}/change", params=years, timeout=60)
    assert one.status_code == 200, one.text
    assert abs(one.json()["distance"] - float(row["distance"])) <= 1e-9
    ranking = httpx.get(f"{url}/watersheds/change", params={**years, "limit": 50}, timeout=60)
    assert ranking.status_code == 200, ranking.text
    uids = [r["uid"] for r in ranking.json()["results"]]
    assert set(uids[: len(two_years.changed_uids)]) == set(two_years.changed_uids)
    missing = httpx.get(f"{url}/watersheds/change", params={"from": 2019, "to": 2020}, timeout=60)
    assert missing.status_code == 404


def test_change_map_cli_writes_cogs_of_the_pixel_distance(
    two_years: TwoYears, tmp_path: Path
) -> None:
    from rio_cogeo.cogeo import cog_validate

    from tessera_stac.cli.main import main

    out = tmp_path / "changes"
    args = ["change-map", str(out), "--from", "2023", "--to", "2024", "--tiles"]
    assert main([*args, str(two_years.dest), "--bbox", "71.9,21.8,72.1,21.9"]) == 0
    files = sorted(out.glob("*.tif"))
    assert [f.name.split("_2023")[0] for f in files] == list(GRIDS)
    rng = np.random.default_rng(3)
    for grid, path in zip(GRIDS, files, strict=True):
        assert cog_validate(str(path), strict=True, quiet=True)[0]
        cell = GridCell.parse(grid)
        (va, ok_a, (transform, _)), (vb, ok_b, _) = (
            _source_values(two_years.source, cell, y) for y in YEARS
        )
        with rasterio.open(path) as ds:
            dist = ds.read(1)
            assert ds.transform == transform and ds.overviews(1) == [2, 4, 8]
        both = ok_a & ok_b
        assert np.array_equal(np.isfinite(dist), both)
        rows, cols = np.nonzero(both)
        pick = rng.choice(len(rows), 300, replace=False)
        r, c = rows[pick], cols[pick]
        want = _numpy_distance(va[r, c], vb[r, c])
        np.testing.assert_allclose(dist[r, c], want, rtol=0, atol=1e-6)
