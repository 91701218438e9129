"""Synthetic CoRE Stack micro-watershed (MWS) layers for demos and tests.

A real MWS layer comes from CoRE Stack's WFS as a GeoJSON FeatureCollection of EPSG:4326
MultiPolygons keyed by a string ``uid`` (``"14_51019"``), with a legacy ``crs`` member, feature
ids like ``{district}_{block}_cluster.N``, ``geometry_name`` ``the_geom`` and per-MWS attributes
(``area_in_ha``, terrain fractions...). This module makes a layer with the same shape over any
bbox: a seeded Voronoi partition into ~``target_ha`` cells with jagged, raster-like edges (as the
real layers are traced from a DEM), so joins and maps behave as they do on real blocks.
Deterministic for a given seed: no clock, no network.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Attribute names of CoRE Stack's terrain-cluster MWS layer (fractions in percent).
TERRAIN_FIELDS = ("plain_area", "ridge_area", "slopy_area", "valley_are", "hill_slope")


@dataclass(frozen=True)
class MwsLayerSpec:
    """What synthetic layer to make.

    Attributes:
        bbox: (west, south, east, north) in degrees, the area to partition.
        district: District name used in feature ids (lower case, as CoRE Stack writes it).
        block: Block (tehsil) name used in feature ids.
        target_ha: Typical MWS area in hectares (real layers: ~1000 ha median, > 500 ha).
        seed: Random seed; the same spec always gives the same layer.
        uid_prefix: First part of every ``uid`` (CoRE Stack uses a basin number).
    """

    bbox: tuple[float, float, float, float]
    district: str
    block: str
    target_ha: float = 1200.0
    seed: int = 7
    uid_prefix: int = 12


def _area_ha(geom: Any) -> float:
    """Geodesic area of a lon/lat geometry in hectares."""
    from pyproj import Geod

    area, _ = Geod(ellps="WGS84").geometry_area_perimeter(geom)
    return abs(area) / 10_000.0


def _cell_count(spec: MwsLayerSpec) -> int:
    from shapely.geometry import box

    return max(2, round(_area_ha(box(*spec.bbox)) / spec.target_ha))


def _jagged(cell: Any, step: float) -> Any:
    """Snap a polygon to a ``step``-degree raster, as DEM-traced watershed edges look."""
    from shapely import set_precision

    snapped = set_precision(cell, step)
    return snapped if not snapped.is_empty else cell


def mws_features(spec: MwsLayerSpec) -> list[dict[str, Any]]:
    """Build the features of a synthetic MWS layer (GeoJSON dicts, WFS style).

    Args:
        spec: Area, names, size and seed of the layer.

    Returns:
        GeoJSON Feature dicts with MultiPolygon geometries and CoRE Stack's attributes.
    """
    from shapely import voronoi_polygons
    from shapely.geometry import MultiPoint, MultiPolygon, box, mapping

    rng = np.random.default_rng(spec.seed)
    region = box(*spec.bbox)
    west, south, east, north = spec.bbox
    n = _cell_count(spec)
    points = np.column_stack([rng.uniform(west, east, n), rng.uniform(south, north, n)]).tolist()
    cells = voronoi_polygons(MultiPoint(points), extend_to=region)
    features: list[dict[str, Any]] = []
    for index, cell in enumerate(sorted(cells.geoms, key=lambda g: (g.centroid.y, g.centroid.x))):
        shape = _jagged(cell.intersection(region), 0.00027)  # ~30 m, a DEM cell
        if shape.is_empty or shape.area == 0:
            continue
        polygons = list(getattr(shape, "geoms", [shape]))
        geometry = MultiPolygon([p for p in polygons if p.geom_type == "Polygon"])
        fractions = rng.dirichlet(np.ones(len(TERRAIN_FIELDS))) * 100.0
        properties: dict[str, Any] = {
            "uid": f"{spec.uid_prefix}_{50000 + index * 7 + int(rng.integers(0, 7))}",
            "id": 400000 + index,
            "area_in_ha": round(_area_ha(geometry), 6),
            "terrainClu": int(rng.integers(0, 4)),
            **{name: round(float(v), 6) for name, v in zip(TERRAIN_FIELDS, fractions, strict=True)},
        }
        features.append(
            {
                "type": "Feature",
                "id": f"{spec.district}_{spec.block}_cluster.{index + 1}",
                "geometry": mapping(geometry),
                "geometry_name": "the_geom",
                "properties": properties,
            }
        )
    return features


def mws_layer(spec: MwsLayerSpec) -> dict[str, Any]:
    """A whole synthetic MWS layer as CoRE Stack's WFS returns it (FeatureCollection)."""
    features = mws_features(spec)
    return {
        "type": "FeatureCollection",
        "features": features,
        "totalFeatures": len(features),
        "numberMatched": len(features),
        "numberReturned": len(features),
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4326"}},
    }


def write_mws_layer(spec: MwsLayerSpec, path: Path) -> int:
    """Write a synthetic MWS layer to ``path`` atomically; return the number of features.

    Args:
        spec: What layer to make.
        path: Destination GeoJSON file (parent folders are created).

    Returns:
        The number of MWS polygons written.
    """
    layer = mws_layer(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(layer, out, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(layer["features"])


def expected_mws_count(bbox: tuple[float, float, float, float], target_ha: float) -> int:
    """Roughly how many MWS a bbox holds at ``target_ha`` per MWS (for messages)."""
    west, south, east, north = bbox
    mid = math.radians((south + north) / 2)
    km2 = (east - west) * 111.32 * math.cos(mid) * (north - south) * 110.57
    return max(2, round(km2 * 100 / target_ha))
