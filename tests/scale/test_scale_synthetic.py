"""The synthetic catalogue generator: real cells, real georeferencing, the real item builder."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyproj import Transformer

from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.model import GridCell
from tessera_stac.cli.main import main
from tessera_stac.publisher.samples import catalog as sc


def test_land_cells_lie_on_the_grid_and_cover_the_land() -> None:
    lon, lat = sc.land_cells()
    # ~1.7 M cells, like TESSERA's ~1.8 M tiles a year
    assert 1_400_000 < lon.size < 2_000_000
    assert np.allclose(np.round((lon - 0.05) * 10), (lon - 0.05) * 10)
    assert np.allclose(np.round((lat - 0.05) * 10), (lat - 0.05) * 10)
    assert len(set(zip(lon.tolist(), lat.tolist(), strict=True))) == lon.size
    names = {GridCell(x, y).name for x, y in zip(lon[:1000], lat[:1000], strict=True)}
    assert len(names) == 1000
    # land, not sea: central India in, the middle of the Indian Ocean and the Pacific out
    cells = set(zip(lon.tolist(), lat.tolist(), strict=True))
    assert (78.95, 22.55) in cells
    assert (80.05, -10.05) not in cells
    assert (-150.05, 0.05) not in cells


def test_georef_follows_the_corner_rule() -> None:
    lon = np.array([78.05, 0.15, -0.15, 25.05])
    lat = np.array([12.05, 52.05, -0.05, 70.05])
    epsg, transform, shape = sc.rebuild_georef(lon, lat)
    assert epsg.tolist() == [32644, 32631, 32730, 32635]
    for i in range(lon.size):
        cell = GridCell(float(lon[i]), float(lat[i]))
        assert cell.utm_epsg == epsg[i]
        to_utm = Transformer.from_crs(4326, cell.utm_epsg, always_xy=True)
        w, s, e, n = cell.bounds
        corners = {
            k: to_utm.transform(x, y)
            for k, (x, y) in {"nw": (w, n), "sw": (w, s), "ne": (e, n), "se": (e, s)}.items()
        }
        x0 = min(corners["nw"][0], corners["sw"][0])
        y0 = max(corners["nw"][1], corners["ne"][1])
        assert transform[i].tolist() == pytest.approx([10, 0, x0, 0, -10, y0], abs=1e-6)
        width = round((max(corners["ne"][0], corners["se"][0]) - x0) / 10)
        height = round((y0 - min(corners["sw"][1], corners["se"][1])) / 10)
        assert shape[i].tolist() == [height, width]
    # DESIGN §1's typical shapes: ~1107x1114 at the equator, ~1139x729 at 52°N
    assert shape[2].tolist() == pytest.approx([1107, 1114], abs=3)
    assert shape[1].tolist() == pytest.approx([1139, 729], abs=3)


def _spec(**kw: Any) -> sc.SyntheticSpec:
    # around (0, 0): two UTM zones, both hemispheres, land in Africa only
    base = {"n_items": 1500, "years": (2017, 2018, 2019), "centre": (9.95, 0.05)}
    return sc.SyntheticSpec(**{**base, **kw})


def test_fast_renderer_equals_the_item_builder() -> None:
    spec = _spec(centre=(0.05, 6.05))  # Ghana: zones 30 and 31
    assert sc.fast_renderer_mismatch(spec, sample=200) is None
    fast = list(sc.iter_ndjson(spec, fast=True))
    exact = list(sc.iter_ndjson(spec, fast=False))
    assert [json.loads(x) for x in fast] == [json.loads(x) for x in exact]
    codes = Counter(json.loads(x)["properties"]["proj:code"] for x in fast)
    assert len(codes) >= 2, codes


@pytest.mark.slow  # full STAC validation of a synthetic catalogue
def test_items_are_unique_complete_and_valid(stac_validate: Any) -> None:
    spec = _spec(centre=(9.95, 0.05))  # Gabon: both hemispheres
    items = [json.loads(line) for line in sc.iter_ndjson(spec)]
    assert len(items) == spec.n_items
    assert len({i["id"] for i in items}) == spec.n_items
    per_year = Counter(i["properties"]["datetime"][:4] for i in items)
    assert per_year == {"2017": 500, "2018": 500, "2019": 500}
    assert {i["properties"]["proj:code"][5:8] for i in items} == {"326", "327"}
    for item in items[:: len(items) // 20]:
        # core STAC wants a collection link beside "collection"; the item builder owns links,
        # so when it adds none yet, check the rest of the item as if it did
        links = item["links"] or [{"rel": "collection", "href": "../collection.json"}]
        stac_validate({**item, "links": links})
        cell = GridCell.parse(item["id"].rsplit("_", 1)[0])
        assert item["bbox"] == list(cell.bounds)
        assert item["properties"]["proj:code"] == f"EPSG:{cell.utm_epsg}"
        for asset in item["assets"].values():
            assert cell.name in asset["href"]
            assert asset["file:size"] > 0
    # deterministic for a seed, different for another
    again = [json.loads(line) for line in sc.iter_ndjson(spec)]
    assert again == items
    other = [json.loads(line) for line in sc.iter_ndjson(_spec(seed=7))]
    assert other[0]["assets"] != items[0]["assets"]


def test_too_many_items_for_the_region_is_a_clear_error() -> None:
    spec = _spec(bbox=(9.0, -1.0, 10.0, 0.0), n_items=10_000)
    with pytest.raises(InputError, match="land cells"):
        list(sc.iter_ndjson(spec))


def test_cli_sample_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "items.ndjson"
    code = main(["sample", "catalog", "700", "--out", str(out), "--years", "2020-2021", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    lines = out.read_text().splitlines()
    assert report["items"] == len(lines) == 700
    assert report["cells"] == 350
    assert len({json.loads(x)["id"] for x in lines}) == 700
    assert not list(tmp_path.glob(".*tmp"))
    code = main(["sample", "catalog", "10", "--out", str(out), "--bbox", "1,2,3"])
    assert code == 3
