"""The join's map layer registers with the polygons: each watershed's interior pixel, found by
projecting a point of the polygon to web mercator and scaling it over the image's bbox (what a
web map does with the item's bbox), has that watershed's PCA colour; no axes, no margins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pyproj import Transformer

from tessera_stac.publisher.join.pca_map import pca_colours, render_pca_overlay


def test_overlay_pixels_have_their_polygon_colour(bhavnagar_frame: Any, tmp_path: Path) -> None:
    table = bhavnagar_frame.copy()
    means = np.random.default_rng(3).normal(size=(len(table), 8))
    bbox = tuple(float(v) for v in table.total_bounds)
    png = tmp_path / "map.png"
    (height, width), (x0, y0, x1, y1) = render_pca_overlay(table, means, png, bbox, width=800)
    image = np.asarray(Image.open(png).convert("RGBA"))
    assert image.shape == (height, width, 4)
    # the polygons touch every edge of the bbox: the image has no margin
    alpha = image[..., 3] > 0
    assert alpha[0].any() and alpha[-1].any() and alpha[:, 0].any() and alpha[:, -1].any()
    expected = np.rint(pca_colours(means) * 255)
    to_merc = Transformer.from_crs(4326, 3857, always_xy=True)
    hits = 0
    for geom, colour in zip(table.geometry, expected, strict=True):
        point = geom.representative_point()
        # a point well inside the polygon (away from the white outlines)
        inner = geom.buffer(-0.002)
        if not inner.is_empty:
            point = inner.representative_point()
        x, y = to_merc.transform(point.x, point.y)
        col = int((x - x0) / (x1 - x0) * width)
        row = int((y1 - y) / (y1 - y0) * height)
        if np.abs(image[row, col, :3].astype(int) - colour).max() <= 2:
            hits += 1
    assert hits >= 0.95 * len(table), f"{hits}/{len(table)} polygons register"
