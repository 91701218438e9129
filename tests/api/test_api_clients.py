"""The README's client recipes (pystac-client, odc-stac, stackstac, GDAL STACIT), run unmodified
against the live API serving the real published sample; values checked against the source tiles.

Each recipe runs in its own process (GDAL's reads of our in-process server would hold the GIL)
through a harness that executes the README block as it is, then saves the values the test
checks (expressions evaluated in the recipe's namespace).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pystac
import pytest
import rasterio

from tests.api.test_api_published import real_api, source_arrays  # noqa: F401 (fixture)

README = Path(__file__).resolve().parents[2] / "README.md"
MARK = "# Runs against the demo API (make demo)."
DEMO_URL = "http://127.0.0.1:8080"

HARNESS = """
import json, sys
import numpy as np

code = open(sys.argv[1]).read()
ns = {"__name__": "__main__"}
exec(compile(code, sys.argv[1], "exec"), ns)
out = {}
for name, expr in json.loads(sys.argv[3]).items():
    value = eval(expr, ns)
    out[name] = np.asarray(value)
np.savez(sys.argv[2], **out)
"""


def recipe(needle: str) -> str:
    """The README's runnable Python block containing ``needle``."""
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)
    found = [b for b in blocks if b.startswith(MARK) and needle in b]
    assert len(found) == 1, f"README has {len(found)} runnable recipes with {needle!r}"
    return found[0]


def run_recipe(
    code: str, url: str, tmp_path: Path, wanted: dict[str, str]
) -> tuple[dict[str, Any], str]:
    """Run a README recipe against ``url``; return the ``wanted`` values and its stdout."""
    script = tmp_path / "recipe.py"
    script.write_text(code.replace(DEMO_URL, url))
    out = tmp_path / "values.npz"
    result = subprocess.run(
        [sys.executable, "-c", HARNESS, str(script), str(out), json.dumps(wanted)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"recipe failed:\n{code}\n{result.stderr[-3000:]}"
    with np.load(out, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}, result.stdout


def test_pystac_client_recipe_sorts_counts_and_filters_by_text(
    real_api: str,  # noqa: F811
    published_catalog: dict[str, Any],
    tmp_path: Path,
) -> None:
    values, stdout = run_recipe(
        recipe("search.matched()"), real_api, tmp_path, {"matched": "matched", "ids": "ids"}
    )
    expected = sorted((i["id"] for i in published_catalog["items"]), reverse=True)
    assert int(values["matched"]) == len(expected)
    assert list(values["ids"]) == expected
    assert "tiles match" in stdout
    conformance = httpx.get(real_api + "/conformance").json()["conformsTo"]
    assert "https://api.stacspec.org/v1.0.0/item-search#sort" in conformance


def test_stac_client_search_matched(
    real_api: str,  # noqa: F811
    published_catalog: dict[str, Any],
) -> None:
    exe = Path(sys.executable).parent / "stac-client"
    result = subprocess.run(
        [str(exe), "search", real_api + "/", "-c", "tessera-embeddings-v1", "--matched"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(rf"\b{len(published_catalog['items'])} items matched", result.stdout), (
        result.stdout
    )


def test_post_cql2_text_filter(real_api: str) -> None:  # noqa: F811
    body = {"filter": '"embedding:dimensions" = 128', "filter-lang": "cql2-text"}
    ok = httpx.post(real_api + "/search", json=body)
    assert ok.status_code == 200, ok.text
    assert ok.json()["features"]
    none = httpx.post(
        real_api + "/search",
        json={"filter": '"embedding:dimensions" = 64', "filter-lang": "cql2-text"},
    )
    assert none.status_code == 200 and none.json()["features"] == []
    bad = httpx.post(real_api + "/search", json={"filter": "((", "filter-lang": "cql2-text"})
    assert bad.status_code == 400


@pytest.mark.slow  # odc-stac loads real-size tiles
def test_odc_stac_recipe_gives_dequantised_vectors(
    real_api: str,  # noqa: F811
    published_catalog: dict[str, Any],
    tmp_path: Path,
) -> None:
    pytest.importorskip("odc.stac")
    values, _ = run_recipe(
        recipe("odc.stac"),
        real_api,
        tmp_path,
        {"emb": "emb.values", "grid": "item.id.rsplit('_', 1)[0]", "dims": "emb.dims"},
    )
    assert tuple(values["dims"]) == ("band", "time", "y", "x")
    q, s = source_arrays(published_catalog, str(values["grid"]))
    want = q[400:656, 400:656].astype(np.float32) * s[400:656, 400:656, None]
    got = np.moveaxis(values["emb"][:, 0], 0, -1)
    assert got.shape == want.shape == (256, 256, 128)
    # valid by the recipe: a finite published scale (the landmask blanks water) and no -128
    grid = str(values["grid"])
    folder = published_catalog["root"] / "tessera-embeddings-v1" / "2024" / grid
    with rasterio.open(folder / "scales.tif") as src:
        published = src.read(1, window=((400, 656), (400, 656)))
    ok = np.isfinite(published) & (q[400:656, 400:656] != -128).all(axis=-1)
    assert ok.sum() > 1000
    assert np.array_equal(got[ok], want[ok])
    assert np.isnan(got[~ok]).any(axis=-1).all()


def test_stackstac_recipe_loads_the_published_scales(
    real_api: str,  # noqa: F811
    published_catalog: dict[str, Any],
    tmp_path: Path,
) -> None:
    wanted = {
        "window": "window",
        "id": "zone[0]['id']",
        "epsg": "scales.attrs['spec'].epsg",
        "transform": "tuple(scales.attrs['transform'])[:6]",
        "zone": "[i['id'] for i in zone]",
        "mosaic_dims": "mosaic.dims",
        "mosaic_epsg": "mosaic.attrs['spec'].epsg",
    }
    values, stdout = run_recipe(recipe("stackstac"), real_api, tmp_path, wanted)
    item = next(i for i in published_catalog["items"] if i["id"] == str(values["id"]))
    props = item["properties"]
    assert int(values["epsg"]) == props["proj:epsg"] == int(props["proj:code"].split(":")[1])
    assert tuple(values["transform"]) == tuple(props["proj:transform"][:6])  # its own grid
    grid = item["id"].rsplit("_", 1)[0]
    _q, s = source_arrays(published_catalog, grid)
    folder = published_catalog["root"] / item["collection"] / "2024" / grid
    with rasterio.open(folder / "scales.tif") as src:
        published = src.read(1, window=((400, 656), (400, 656)))
    got = values["window"]
    assert got.shape == (256, 256)
    valid = np.isfinite(published)  # NaN: no vector (invalid, or water under the landmask)
    assert valid.sum() > 1000
    assert np.array_equal(got[valid], s[400:656, 400:656][valid])  # the source tile's scales
    assert np.isnan(got[~valid]).all()
    zone = {
        i["id"]
        for i in published_catalog["items"]
        if i["properties"]["proj:epsg"] == props["proj:epsg"] and i["id"].endswith("_2024")
    }
    assert set(values["zone"]) == zone
    assert tuple(values["mosaic_dims"]) == ("time", "band", "y", "x")
    assert int(values["mosaic_epsg"]) == props["proj:epsg"]
    assert item["id"] in stdout


STACKSTAC_EMBEDDINGS = """
import stackstac
from pystac_client import Client

search = Client.open("http://127.0.0.1:8080/").search(
    collections=["tessera-embeddings-v1"], datetime="2024", max_items=1
)
emb = stackstac.stack(list(search.items_as_dicts()), assets=["embeddings"], snap_bounds=False)
try:
    emb[0, 0, :8, :8].compute()
    error = ""
except RuntimeError as exc:
    error = str(exc)
"""


def test_stackstac_limits_are_the_documented_ones(
    real_api: str,  # noqa: F811
    published_catalog: dict[str, Any],
    tmp_path: Path,
) -> None:
    """The README's two stackstac limits: the 128-band asset is refused when read, and
    pystac's reader drops ``proj:epsg`` (the API serves it)."""
    values, _ = run_recipe(
        STACKSTAC_EMBEDDINGS, real_api, tmp_path, {"error": "error", "dims": "emb.dims"}
    )
    assert tuple(values["dims"]) == ("time", "band", "y", "x")  # built lazily ...
    error = str(values["error"])  # ... refused on read
    assert "Assets must have exactly 1 band" in error and "embeddings.tif' has 128" in error
    served = httpx.get(real_api + "/collections/tessera-embeddings-v1/items").json()["features"]
    assert served
    for feature in served:
        code = feature["properties"]["proj:code"]
        assert feature["properties"]["proj:epsg"] == int(code.split(":")[1])
        parsed = pystac.Item.from_dict(feature).to_dict()
        assert "proj:epsg" not in parsed["properties"]
        assert parsed["properties"]["proj:code"] == code


def test_stacit_recipe_opens_the_mosaic(
    real_api: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    values, stdout = run_recipe(
        recipe("STACIT"), real_api, tmp_path, {"count": "mosaic.count", "crs": "str(mosaic.crs)"}
    )
    assert int(values["count"]) == 128
    assert str(values["crs"]).startswith("EPSG:326")
    assert "bands" in stdout
