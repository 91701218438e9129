"""Labels for training a head: read from GeoJSON, GeoPackage, GeoParquet or CSV, checked.

Every label is a point or a polygon in WGS84 (other CRSs are reprojected) with a class name
(property ``class`` by default) or a number (a regression target). What comes in is bounded
and checked before anything is read: the number of features, finite in-range coordinates,
class names without markup, at least two classes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.heads import HeadError, check_class_name

DEFAULT_FIELD = "class"
#: features a labels file may hold (a million labels is refused, not read)
MAX_LABELS = 50_000
MAX_FILE_BYTES = 512 * 1024 * 1024
#: pixels sampled from one polygon label, and from all polygons together
MAX_PIXELS_PER_POLYGON = 200
MAX_POLYGON_PIXELS = 50_000
LON_COLUMNS = ("lon", "longitude", "lng", "x")
LAT_COLUMNS = ("lat", "latitude", "y")
TASKS = ("auto", "classification", "regression")


@dataclass(frozen=True)
class Labels:
    """Checked labels.

    Attributes:
        source: the file they came from (for messages).
        field: the property holding the class or value.
        task: ``classification`` or ``regression``.
        geometries: WGS84 GeoJSON geometry dicts (points or polygons), in file order.
        targets: class names (classification) or floats (regression), in the same order.
        classes: sorted distinct class names (classification; empty for regression).
    """

    source: str
    field: str
    task: str
    geometries: list[dict[str, Any]]
    targets: list[Any]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.geometries)

    def counts(self) -> dict[str, int]:
        """Labels per class (classification)."""
        return dict(sorted(Counter(self.targets).items())) if self.task == "classification" else {}


def _read_frame(path: Path, max_labels: int) -> Any:
    """A GeoDataFrame of the file (CSV: points from lon/lat columns), bounded."""
    import geopandas as gpd
    import pandas as pd
    import pyogrio

    suffix = path.suffix.lower()
    if suffix == ".csv":
        head = pd.read_csv(path, nrows=max_labels + 1)
        if len(head) > max_labels:
            raise InputError(f"{path}: more than {max_labels} labels (--max-labels)")
        lower = {str(col).lower(): col for col in head.columns}
        lon = next((lower[c] for c in LON_COLUMNS if c in lower), None)
        lat = next((lower[c] for c in LAT_COLUMNS if c in lower), None)
        if lon is None or lat is None:
            raise InputError(
                f"{path}: a CSV needs lon and lat columns (found {list(head.columns)})"
            )
        xs = pd.to_numeric(head[lon], errors="coerce").to_numpy(dtype=np.float64)
        ys = pd.to_numeric(head[lat], errors="coerce").to_numpy(dtype=np.float64)
        _check_coordinates(path, xs, ys)
        return gpd.GeoDataFrame(
            head.drop(columns=[lon, lat]), geometry=gpd.points_from_xy(xs, ys), crs="EPSG:4326"
        )
    if suffix in (".parquet", ".geoparquet"):
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(path).metadata.num_rows
        if rows > max_labels:
            raise InputError(f"{path}: {rows} labels; at most {max_labels} (--max-labels)")
        return gpd.read_parquet(path)
    if suffix not in (".geojson", ".json", ".gpkg"):
        raise InputError(f"{path}: labels must be .geojson, .gpkg, .parquet or .csv")
    try:
        info = pyogrio.read_info(path)
    except Exception as exc:  # pyogrio raises its own error types for unreadable files
        raise InputError(f"{path}: not a readable vector file ({exc})") from None
    if int(info.get("features", 0)) > max_labels:
        raise InputError(f"{path}: {info['features']} labels; at most {max_labels} (--max-labels)")
    return gpd.read_file(path, engine="pyogrio")


def _check_coordinates(path: Path, xs: np.ndarray, ys: np.ndarray) -> None:
    bad = ~(np.isfinite(xs) & np.isfinite(ys))
    bad |= (np.abs(xs) > 180) | (np.abs(ys) > 90)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{path}: {int(bad.sum())} labels have missing, NaN or out-of-range coordinates "
            f"(first: feature {i}, lon={xs[i]!r}, lat={ys[i]!r})"
        )


def read_labels(
    path: Path | str,
    field: str = DEFAULT_FIELD,
    task: str = "auto",
    max_labels: int = MAX_LABELS,
) -> Labels:
    """Read and check a labels file.

    Args:
        path: GeoJSON, GeoPackage, GeoParquet or CSV (columns lon/lat).
        field: the property holding the class name (or the number, for regression).
        task: ``auto`` (a numeric field means regression), ``classification`` or
            ``regression``.
        max_labels: refuse files with more features.

    Raises:
        InputError: a missing file or field, too many labels, bad coordinates or geometries,
            class names with markup, fewer than two classes.
    """
    path = Path(path)
    if task not in TASKS:
        raise InputError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if not path.is_file():
        raise InputError(f"{path}: no such labels file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InputError(f"{path}: larger than {MAX_FILE_BYTES // 2**20} MiB")
    frame = _read_frame(path, max_labels)
    if len(frame) == 0:
        raise InputError(f"{path}: no labels")
    if len(frame) > max_labels:
        raise InputError(f"{path}: {len(frame)} labels; at most {max_labels} (--max-labels)")
    if field not in frame.columns:
        columns = [str(c) for c in frame.columns if c != frame.geometry.name]
        raise InputError(f"{path}: no field {field!r} (fields: {', '.join(columns)[:200]})")
    if frame.crs is not None and frame.crs.to_epsg() != 4326:
        frame = frame.to_crs("EPSG:4326")
    geometries = _geometries(path, frame)
    column = frame[field]
    numeric = column.dtype.kind in "iuf"
    resolved = task if task != "auto" else ("regression" if numeric else "classification")
    if resolved == "regression":
        if not numeric:
            raise InputError(f"{path}: field {field!r} is not numeric: cannot train a regression")
        values = column.to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise InputError(f"{path}: field {field!r} has missing or non-finite values")
        return Labels(str(path), field, resolved, geometries, values.tolist(), [])
    if column.isna().any():
        raise InputError(f"{path}: {int(column.isna().sum())} labels have no {field!r}")
    names = [str(v) for v in column.tolist()]
    for name in sorted(set(names)):
        try:
            check_class_name(name)
        except HeadError as exc:
            raise InputError(f"{path}: {exc}") from None
    classes = sorted(set(names))
    if len(classes) < 2:
        raise InputError(
            f"{path}: only one class ({classes[0]!r}); a classifier needs at least two"
        )
    return Labels(str(path), field, resolved, geometries, names, classes)


def _geometries(path: Path, frame: Any) -> list[dict[str, Any]]:
    """WGS84 GeoJSON geometries, each a point or polygon with finite in-range coordinates."""
    from shapely.geometry import mapping

    out: list[dict[str, Any]] = []
    for i, geom in enumerate(frame.geometry):
        if geom is None or geom.is_empty:
            raise InputError(f"{path}: feature {i} has no geometry")
        if geom.geom_type not in ("Point", "Polygon", "MultiPolygon"):
            raise InputError(f"{path}: feature {i} is a {geom.geom_type}; use points or polygons")
        minx, miny, maxx, maxy = geom.bounds
        _check_coordinates(
            path, np.array([minx, maxx], dtype=np.float64), np.array([miny, maxy], dtype=np.float64)
        )
        out.append(dict(mapping(geom)))
    return out
