"""The newcomer's path end to end: ``tessera-stac demo`` on a fresh data folder and database.

1. ``demo --no-serve --json`` runs every step (sample tiles, MWS layer, publish, catalog, load,
   watersheds, join) in a temp folder with its own project-local database;
2. ``demo`` again: every step is reused, then it serves; every printed URL answers, the
   printed pystac-client snippet runs and finds the items;
3. STAC Browser in headless Chromium shows the collection, item cards with their thumbnails
   (the previews served through the API's /data route) and an item page; screenshots are saved
   in ``test-artifacts/browser/``;
4. Ctrl-C (SIGINT) stops serving cleanly (exit code 0).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import morecantile
import pytest

from tests.fixtures_demo import (
    ARTIFACTS,
    BROWSER_DIR,
    TILES,
    YEARS,
    DemoRun,
    save_log,
)

pytestmark = pytest.mark.slow


@dataclass
class Served:
    """The serving demo process and what it printed."""

    proc: subprocess.Popen[str]
    lines: list[str]
    base: str = ""
    urls: dict[str, str] = field(default_factory=dict)
    snippet: str = ""
    reader: threading.Thread | None = None  # appends to ``lines`` until the output ends

    def text(self) -> str:
        return "".join(self.lines)


def _read_lines(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)


def _parse_announcement(text: str) -> tuple[str, dict[str, str], str]:
    """(base URL, name -> URL, snippet) from what ``tessera-stac demo`` printed."""
    base = re.search(r"Serving on (http://\S+?)/? \(Ctrl-C", text)
    assert base, text
    urls = dict(re.findall(r"^  (\S.*?)\s{2,}(http://\S+)$", text, re.M))
    snippet = re.search(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert snippet, text
    return base.group(1), urls, snippet.group(1)


@pytest.fixture(scope="module")
def served(demo_run: DemoRun) -> Iterator[Served]:
    """Second run: ``tessera-stac demo`` reusing everything and serving on a free port."""
    proc = subprocess.Popen(
        demo_run.args(),
        env={**demo_run.env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Served(proc, [])
    reader = threading.Thread(target=_read_lines, args=(proc, server.lines), daemon=True)
    server.reader = reader
    reader.start()
    deadline = time.monotonic() + 180
    while not re.search(r"^```\s*$", server.text(), re.M):
        if proc.poll() is not None or time.monotonic() > deadline:
            save_log("demo-serve.log", server.text())
            proc.kill()
            pytest.fail(f"the demo did not start serving:\n{server.text()[-3000:]}")
        time.sleep(0.2)
    server.base, server.urls, server.snippet = _parse_announcement(server.text())
    try:
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        reader.join(timeout=5)
        save_log("demo-serve.log", server.text())


def test_first_run_does_every_step(demo_run: DemoRun) -> None:
    steps = demo_run.steps()
    assert list(steps)[:2] == ["sample", "mws"]
    assert steps["mws"] == "done"
    demo_run.require_pipeline()
    not_done = {name: status for name, status in steps.items() if status != "done"}
    assert not not_done, f"steps that did not run on a fresh folder: {not_done}"
    # two years (the year before and the year asked for, with a deliberate change): issue 14
    assert sum(1 for _ in demo_run.data.rglob("embeddings.tif")) == TILES * YEARS


def test_second_run_reuses_everything(demo_run: DemoRun, served: Served) -> None:
    text = served.text()
    for number, (name, status) in enumerate(demo_run.steps().items(), start=1):
        line = next(x for x in text.splitlines() if x.startswith(f"[{number}/"))
        if status == "done":
            assert line.endswith("already done"), f"step {name} ran again: {line}"
    assert "  $ tessera-stac publish" not in text  # nothing was redone


def test_every_printed_url_answers(served: Served) -> None:
    assert {"STAC API (landing page)", "STAC Browser", "collections"} <= set(served.urls)
    point = _printed_point(served.urls)
    with httpx.Client(timeout=120, follow_redirects=True) as client:
        for name, url in served.urls.items():
            if "{z}" in url:  # an XYZ template (QGIS): a tile over the printed point answers
                assert point, f"{name}: an XYZ template but no point to fill it for"
                tile = morecantile.tms.get("WebMercatorQuad").tile(*point, 12)
                url = url.replace("{z}", "12").replace("{x}", str(tile.x))
                url = url.replace("{y}", str(tile.y))
            response = client.get(url)
            assert response.status_code == 200, f"{name}: {url} -> {response.status_code}"
            if "/tiles/" in url and ".png" in url:
                assert response.headers["content-type"] == "image/png", name
    assert served.urls["STAC API (landing page)"] == f"{served.base}/"


def _printed_point(urls: dict[str, str]) -> tuple[float, float] | None:
    """The lon/lat of the printed 'embedding at a point' URL."""
    found = re.search(r"lon=([-\d.]+)&lat=([-\d.]+)", urls.get("embedding at a point", ""))
    return (float(found.group(1)), float(found.group(2))) if found else None


def test_map_tile_urls_are_printed(demo_run: DemoRun, served: Served) -> None:
    demo_run.require_pipeline()
    names = " | ".join(served.urls)
    for kind in ("XYZ", "TileJSON", "WMTS", "places like this point", "places like watershed"):
        assert kind in names, f"no {kind} URL printed: {names}"
    wmts = next(url for name, url in served.urls.items() if "WMTS" in name)
    assert "WMTSCapabilities.xml" in wmts


def test_watershed_features_urls_are_printed(demo_run: DemoRun, served: Served) -> None:
    demo_run.require_pipeline()
    features = next(u for n, u in served.urls.items() if "OGC API Features (QGIS" in n)
    ids = {c["id"] for c in httpx.get(f"{features}/collections", timeout=60).json()["collections"]}
    assert {"tessera_features.mws", "tessera_features.mws_change"} <= ids
    changed = next(u for n, u in served.urls.items() if "changed most" in n and "features" in n)
    found = httpx.get(changed, timeout=60).json()["features"]
    distances = [f["properties"]["distance"] for f in found]
    assert distances and distances == sorted(distances, reverse=True)
    assert {f["properties"]["block"] for f in found} == {"tisri"}


def test_printed_snippet_finds_items(demo_run: DemoRun, served: Served, tmp_path: Path) -> None:
    demo_run.require_pipeline()
    script = tmp_path / "snippet.py"
    script.write_text(served.snippet)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    count = re.match(r"(\d+) items: ", result.stdout)
    assert count and int(count.group(1)) == TILES, result.stdout
    assert "embeddings: http" in result.stdout  # asset hrefs a client can open


def test_stac_browser_shows_collection_item_and_thumbnails(
    demo_run: DemoRun, served: Served, chromium: str, playwright_installed: Path
) -> None:
    demo_run.require_pipeline()
    item_url = served.urls.get("one item")
    assert item_url, served.urls
    collection, item = re.search(r"/collections/([^/]+)/items/([^/]+)$", item_url).groups()  # type: ignore[union-attr]
    # the other collections (CoRE Stack watersheds, summaries) are listed and open too
    others = [m.group(1) for n in served.urls if (m := re.match(r"collection (\S+) \(", n))]
    maps = [f"{cid}/{_first_item(served.base, cid)}" for cid in (JOIN, MWS) if cid in others]
    # the land-cover class collection's map (its class mosaic) must draw before its screenshot
    class_maps = [cid for cid in others if cid.startswith("tessera-classes-")]
    out = ARTIFACTS / "browser"
    shutil.rmtree(out, ignore_errors=True)
    result = subprocess.run(
        [
            "node", str(BROWSER_DIR / "e2e.cjs"), "--base", served.base,
            "--collection", collection, "--item", item, "--out", str(out),
            "--others", ",".join(others), "--maps", ",".join(maps),
            "--collection-maps", ",".join(class_maps),
        ],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "TESSERA_STAC_CHROMIUM": chromium},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    pages = report["pages"]
    assert pages["landing"]["found"], "the embedding collection is not on the landing page"
    assert pages["collection"]["found"], f"no card for item {item} on the collection page"
    thumbs = pages["collection"]["thumbnails"]
    assert len(thumbs) >= TILES and all(t["loaded"] for t in thumbs), thumbs
    assert all("/data/" in t["src"] and t["src"].endswith(".png") for t in thumbs), thumbs
    assert pages["item"]["found"], "the item page does not list the embeddings asset"
    # the item's preview is shown (its Thumbnails tab opened), decoded and on screen
    assert pages["item"]["thumbnails_tab"], "the item page has no Thumbnails tab"
    assert any("/data/" in src and src.endswith(".png") for src in pages["item"]["visible_images"])
    for other in others:
        assert pages[f"collection {other}"]["listed_on_landing"], other
        assert pages[f"collection {other}"]["found"], f"collection {other} shows no item"
    assert "corestack-mws" in others
    for page in pages.values():
        assert Path(page["screenshot"]).stat().st_size > 10_000
    assert not [r for r in report["failed_requests"] if "/browser/" in r], report
    # no map tile was refused by the server (a blank square in a map): 5xx of /tiles/
    assert not [r for r in report["failed_requests"] if r.startswith("5") and "/tiles/" in r], (
        report["failed_requests"]
    )
    # the Map views draw data: tiles from the API, coloured pixels in the map area
    assert not [e for e in report["console_errors"] if DECODE_ERROR.search(e)], report
    item_map = pages["item"]
    assert any("/tiles/collections/" in t for t in item_map["tiles"]), item_map
    assert_coloured(item_map["map_screenshot"], min_colours=200)
    coll_map = pages["collection"]
    # STAC Browser draws the collection's items (each through the API's tiler) in the
    # collection's PCA colours: the PCA mosaic, several hues; the yearly mosaic is offered as
    # the collection's web-map-links
    assert any("/tiles/collections/" in t for t in coll_map["tiles"]), coll_map
    assert all("algorithm=pca" in t for t in coll_map["tiles"] if "/tiles/" in t), coll_map
    assert_coloured(coll_map["map_screenshot"], min_colours=200)
    shares, _ = hue_sextants(coll_map["map_screenshot"])
    assert (shares >= 0.03).sum() >= 3 and shares[2:5].sum() >= 0.05, shares
    assert JOIN in others and MWS in others
    join_map = pages[f"item {JOIN}"]
    assert any("/tiles/" in t and "map-cog" in t for t in join_map["tiles"]), join_map
    assert_coloured(join_map["map_screenshot"], min_colours=10)
    mws_map = pages[f"item {MWS}"]
    assert any(t.endswith("_map.png") for t in mws_map["tiles"]), mws_map
    assert_coloured(mws_map["map_screenshot"], min_colours=10)
    assert pages["docs"]["found"], "Swagger UI did not render /api.html"
    # the class collection's map shows the land-cover classes in their colours
    assert class_maps, others
    for cid in class_maps:
        class_map = pages[f"collection {cid}"]
        assert any("/tiles/collections/" in t for t in class_map["tiles"]), class_map
        assert_class_colours(served.base, cid, class_map["map_screenshot"])


JOIN = "corestack-mws-embeddings"
MWS = "corestack-mws"
DECODE_ERROR = re.compile(r"compression|decod|geotiff", re.I)


def _first_item(base: str, collection: str) -> str:
    items = httpx.get(f"{base}/collections/{collection}/items", params={"limit": 1}).json()
    return str(items["features"][0]["id"])


def assert_class_colours(base: str, collection: str, screenshot: str) -> None:
    """At least two of the collection's classes (``classification:classes`` colours) each
    cover 0.5 % of the map, and together 10 %: the class map drew, in its own colours."""
    from tests.api.test_api_classify import colour_shares

    item = httpx.get(f"{base}/collections/{collection}/items", params={"limit": 1}).json()
    asset = item["features"][0]["assets"]["classes"]
    classes = asset["classification:classes"]
    colours = ["#" + c["color_hint"] for c in classes if c.get("color_hint")]
    assert len(colours) >= 2, asset
    shares = colour_shares(screenshot, colours)
    assert sum(share >= 0.005 for share in shares) >= 2 and sum(shares) >= 0.1, (
        screenshot,
        dict(zip(colours, shares, strict=True)),
    )


def hue_sextants(screenshot: str) -> tuple[Any, float]:
    """Share of saturated pixels per 60° hue sextant (tests/api/test_api_browser_map.py)."""
    from tests.api.test_api_browser_map import hue_sextants as shares

    return shares(screenshot)


def assert_coloured(screenshot: str, min_colours: int) -> None:
    """The map area shows data: a good share of saturated pixels, in many colours (an empty
    map is white/grey: no basemap offline, a footprint outline in one colour)."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    saturation = rgb.max(axis=-1) - rgb.min(axis=-1)
    coloured = saturation > 40
    colours = np.unique(rgb[coloured] // 8, axis=0).shape[0]
    assert coloured.mean() > 0.1, f"{screenshot}: {coloured.mean():.1%} coloured pixels"
    assert colours >= min_colours, f"{screenshot}: {colours} colours"


RECIPE_MARK = "# Runs against the demo API (make demo)."


def readme_recipes() -> list[str]:
    """The README's Python programs that claim to run against the demo's API."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", readme, re.S | re.M)
    return [block for block in blocks if block.startswith(RECIPE_MARK)]


def test_readme_recipes_run_against_the_demo(
    demo_run: DemoRun, served: Served, tmp_path: Path
) -> None:
    demo_run.require_pipeline()
    recipes = readme_recipes()
    assert len(recipes) >= 4, "the README's pystac-client / rasterio / planner recipes are gone"
    for number, recipe in enumerate(recipes, start=1):
        script = tmp_path / f"recipe_{number}.py"
        script.write_text(recipe.replace("http://127.0.0.1:8080", served.base))
        result = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=180, check=False
        )
        assert result.returncode == 0, f"README recipe {number} failed:\n{recipe}\n{result.stderr}"
        assert result.stdout.strip(), f"README recipe {number} printed nothing"


def test_ctrl_c_stops_serving_cleanly(served: Served) -> None:
    served.proc.send_signal(signal.SIGINT)
    assert served.proc.wait(timeout=30) == 0
    # its last words reach ``lines`` through the reader thread: wait for them (or for the
    # end of the output), not for a fixed time
    assert served.reader is not None
    deadline = time.monotonic() + 30
    while "stopped serving" not in served.text() and time.monotonic() < deadline:
        if not served.reader.is_alive():
            break  # the whole output is read
        time.sleep(0.05)
    assert "stopped serving" in served.text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{served.base}/", timeout=5)
