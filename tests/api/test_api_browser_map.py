"""STAC Browser's collection map draws the PCA mosaic (headless Chromium, pixel-checked): the
embedding items through the API's tiler in the collection's PCA colours, several hues, not the
scales in one colour ramp; an item page keeps each asset's own layer."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tessera_stac.api.app import create_app
from tessera_stac.api.settings import ApiSettings
from tessera_stac.catalog.pgstac.load import load
from tests.fixtures_demo import BROWSER_DIR

pytestmark = pytest.mark.slow


def hue_sextants(screenshot: str) -> tuple[np.ndarray, float]:
    """Share of the saturated pixels in each 60° hue sextant (red, yellow, green, cyan, blue,
    magenta), and the share of saturated pixels in the picture."""
    from PIL import Image

    hsv = np.asarray(Image.open(screenshot).convert("RGB").convert("HSV")).astype(int)
    saturated = (hsv[..., 1] > 80) & (hsv[..., 2] > 60)
    hues = hsv[..., 0][saturated] * 360 // 256
    counts = np.bincount(((hues + 30) % 360) // 60, minlength=6)
    return counts / max(1, counts.sum()), float(saturated.mean())


def test_collection_map_shows_the_pca_mosaic(
    published_catalog: dict[str, Any],
    pg_dsn: str,
    live_api: Any,
    stac_browser_build: Path,
    chromium: str,
    playwright_installed: Path,
    tmp_path: Path,
) -> None:
    root = published_catalog["root"]
    url = live_api(create_app(ApiSettings(data_dir=root, browser_dir=stac_browser_build), pg_dsn))
    load(pg_dsn, str(published_catalog["catalog"]), base_url=url + "/data")
    item = published_catalog["items"][0]
    out = tmp_path / "browser"
    result = subprocess.run(
        [
            "node", str(BROWSER_DIR / "e2e.cjs"), "--base", url,
            "--collection", item["collection"], "--item", item["id"], "--out", str(out),
        ],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "TESSERA_STAC_CHROMIUM": chromium},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    pages = json.loads(result.stdout)["pages"]
    coll = pages["collection"]
    tiles = [t for t in coll["tiles"] if "/tiles/collections/" in t]
    assert tiles and all("algorithm=pca" in t for t in tiles), coll["tiles"]
    assert not any("colormap_name=magma" in t for t in tiles)
    shares, saturated = hue_sextants(coll["map_screenshot"])
    assert saturated > 0.05, f"{saturated:.1%} saturated pixels"
    # several hues: at least 3 sextants with >= 3 % each, and green-cyan-blue present (magma,
    # the scales' ramp, runs black-purple-red-yellow only)
    assert (shares >= 0.03).sum() >= 3, shares
    assert shares[2:5].sum() >= 0.05, shares
    # the item page keeps each asset's own layer (not forced to PCA)
    item_tiles = [t for t in pages["item"]["tiles"] if "/tiles/collections/" in t]
    assert item_tiles, pages["item"]
