"""Pure STAC builders of heads and class maps (no I/O, the clock passed in).

* :func:`create_head_item`: a head as an MLM (v1.5.2) Item in ``tessera-models``: the head's
  JSON (role ``mlm:model``), the accuracy report and its chart as assets, the headline scores
  in its properties, ``derived_from`` the embedding items its labels were read from and the
  TESSERA model that made them.
* :func:`create_class_item` / :func:`create_classes_collection`: one class map per embedding
  (tile, year) in ``tessera-classes-{name}``, layout ``{collection}/{item}/{item}.json``,
  asset ``classes`` with ``classification:classes`` (v1.1.0), ``derived_from`` the embedding
  item and the model item.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pystac

from tessera_stac.catalog import constants as c
from tessera_stac.catalog.heads import Head
from tessera_stac.catalog.stac import (
    CATALOG_KEY,
    collection_key,
    model_item_key,
    projection_code_fields,
    relative_href,
)
from tessera_stac.publisher.classify.vectors import CatalogItem

ARCHITECTURES = {
    "logistic": "Multinomial logistic regression on standardised embeddings (linear probe)",
    "linear": "Ridge regression on standardised embeddings",
    "knn": "k-nearest neighbours (Euclidean, uniform weights)",
}
#: derived_from links listed on a model item at most (the report lists every item read)
MAX_SOURCE_LINKS = 100
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"


def _year_interval(year: int) -> tuple[datetime, datetime]:
    return datetime(year, 1, 1, tzinfo=UTC), datetime(year, 12, 31, 23, 59, 59, tzinfo=UTC)


def classification_classes(head: Head) -> list[dict[str, Any]]:
    """``classification:classes`` (v1.1.0) of a head: value, name, description, colour."""
    return [
        {
            "value": cl.value,
            "name": cl.name,
            "description": cl.name,
            "color_hint": cl.color.lstrip("#").upper(),
        }
        for cl in head.classes
    ]


def _mlm_properties(head: Head, hyper: Mapping[str, Any]) -> dict[str, Any]:
    import sklearn

    classification = head.task == "classification"
    output: dict[str, Any] = {
        "name": "classes" if classification else "value",
        "description": (
            "class value per pixel (uint8, 0 = nodata) and the winning class's probability"
            if classification
            else "predicted value per pixel (float32, NaN = nodata)"
        ),
        "tasks": ["classification" if classification else "regression"],
        "result": {
            "shape": [-1, 1],
            "dim_order": ["batch", "class" if classification else "value"],
            "data_type": "uint8" if classification else "float32",
        },
    }
    if classification:
        output["classification:classes"] = classification_classes(head)
    return {
        "mlm:name": head.name,
        "mlm:architecture": ARCHITECTURES[head.kind],
        "mlm:tasks": output["tasks"],
        "mlm:framework": "scikit-learn",
        "mlm:framework_version": sklearn.__version__,
        "mlm:pretrained": False,
        "mlm:input": [
            {
                "name": "embedding",
                "description": (
                    f"dequantised {c.EMBEDDING_DIM}-d embedding of one pixel ({head.collection})"
                ),
                "input": {
                    "shape": [-1, c.EMBEDDING_DIM],
                    "dim_order": ["batch", "embedding"],
                    "data_type": "float32",
                },
            }
        ],
        "mlm:output": [output],
        "mlm:hyperparameters": {k: v for k, v in sorted(hyper.items()) if v is not None},
    }


def _labels_geometry(lonlat: np.ndarray) -> tuple[dict[str, Any], list[float]]:
    west, south = (float(v) for v in lonlat.min(axis=0))
    east, north = (float(v) for v in lonlat.max(axis=0))
    pad = 1e-4
    west, south, east, north = west - pad, south - pad, east + pad, north + pad
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "coordinates": [ring]}, [west, south, east, north]


def create_head_item(
    head: Head,
    report: Mapping[str, Any],
    scores: Mapping[str, Any],
    lonlat: np.ndarray,
    sources: Sequence[CatalogItem],
    files: Mapping[str, tuple[int, str]],
    processed: datetime,
) -> dict[str, Any]:
    """The model Item of a head (a dict, at ``tessera-models/{name}/{name}.json``).

    Args:
        head: the head.
        report: its report (labels count for the properties).
        scores: headline properties (``tessera:accuracy`` ...).
        lonlat: (n, 2) where the labels are: the Item's geometry is their bounding box.
        sources: the embedding items the labels were read from.
        files: size and multihash checksum of the ``head``, ``report`` and ``chart`` files.
        processed: when it was trained.
    """
    key = model_item_key(head.name)
    geometry, bbox = _labels_geometry(lonlat)
    start, end = _year_interval(head.year)
    kind_title = {"logistic": "linear probe", "linear": "ridge regression", "knn": "k-NN"}
    item = pystac.Item(
        id=head.name,
        geometry=geometry,
        bbox=bbox,
        datetime=start,
        start_datetime=start,
        end_datetime=end,
        properties={
            "title": f"{head.name}: {kind_title[head.kind]} on {head.collection} ({head.year})",
            "description": (
                f"A small {head.task} head trained with scikit-learn on "
                f"{report['labels']['count']} labels over the dequantised embeddings of "
                f"{head.collection}, year {head.year}; it maps any year of that collection. "
                "Accuracy from spatially blocked cross-validation (headline) and random "
                "cross-validation; the report has per-class scores, the confusion matrix and "
                "a learning curve."
            ),
            **_mlm_properties(head, report["parameters"]),
            **scores,
            c.LABELS_PROP: int(report["labels"]["count"]),
            c.HEAD_KIND_PROP: head.kind,
            c.HEAD_CHECKSUM_PROP: files[c.HEAD_ASSET][1],
            "processing:software": dict(sorted(report["software"].items())),
            "processing:datetime": pystac.utils.datetime_to_str(processed),
        },
        collection=c.MODEL_COLLECTION_ID,
        stac_extensions=sorted(
            [c.MLM_SCHEMA_URI, c.FILE_SCHEMA_URI, c.PROCESSING_SCHEMA_URI]
            + ([c.CLASSIFICATION_SCHEMA_URI] if head.task == "classification" else [])
        ),
    )
    assets = {
        c.HEAD_ASSET: (
            "./head.json",
            "Head parameters (plain JSON; catalog.heads.Head.from_dict)",
            c.HEAD_MEDIA_TYPE,
            ["mlm:model", "mlm:weights"],
        ),
        c.REPORT_ASSET: (
            "./report.json",
            "Accuracy report (random and spatially blocked cross-validation)",
            c.JSON_MEDIA_TYPE,
            ["metadata"],
        ),
        c.CHART_ASSET: (
            "./report.png",
            "Accuracy chart (confusion matrix, per-class F1, learning curve)",
            c.PNG_MEDIA_TYPE,
            ["overview", "visual"],
        ),
    }
    for name, (href, title, media, roles) in assets.items():
        size, checksum = files[name]
        extra: dict[str, Any] = {"file:size": size, "file:checksum": checksum}
        if name == c.HEAD_ASSET:
            extra["mlm:artifact_type"] = "tessera-head+json"
        item.add_asset(
            name, pystac.Asset(href, title=title, media_type=media, roles=roles, extra_fields=extra)
        )
    coll = relative_href(key, collection_key(c.MODEL_COLLECTION_ID))
    item.add_link(pystac.Link("root", relative_href(key, CATALOG_KEY), c.JSON_MEDIA_TYPE))
    item.add_link(pystac.Link("parent", coll, c.JSON_MEDIA_TYPE))
    item.add_link(pystac.Link("collection", coll, c.JSON_MEDIA_TYPE))
    for source in list(sources)[:MAX_SOURCE_LINKS]:
        item.add_link(
            pystac.Link(
                "derived_from",
                relative_href(key, source.key),
                c.GEOJSON_MEDIA_TYPE,
                title=f"embeddings {source.id}",
            )
        )
    version = _embedding_model(sources)
    if version is not None:
        link = pystac.Link(
            "derived_from",
            relative_href(key, model_item_key(f"tessera-{version}")),
            c.GEOJSON_MEDIA_TYPE,
            title=f"{c.MODEL_NAME} {version} (the embedding model)",
        )
        link.extra_fields["mlm:name"] = c.MODEL_NAME
        item.add_link(link)
    return item.to_dict(include_self_link=False, transform_hrefs=False)


def _embedding_model(sources: Sequence[CatalogItem]) -> str | None:
    for source in sources:
        version = source.item.get("properties", {}).get("version")
        if version:
            return str(version)
    return None


# ------------------------------------------------------------------------------ class maps
@dataclass(frozen=True)
class ClassAsset:
    """One written file of a class item: key, href relative to the item, size, checksum."""

    key: str
    href: str
    size: int
    checksum: str


def class_item_id(source: CatalogItem) -> str:
    return f"{source.cell.name}_{source.year}"


def class_item_key(head_name: str, item_id: str) -> str:
    cid = c.classes_collection_id(head_name)
    return f"{cid}/{item_id}/{item_id}.json"


def create_class_item(
    head: Head,
    source: CatalogItem,
    grid: Mapping[str, Any],
    assets: Sequence[ClassAsset],
    counts: Mapping[str, int],
    head_checksum: str,
    processed: datetime,
) -> dict[str, Any]:
    """The class-map Item of one embedding (tile, year).

    Args:
        head: the head that made it.
        source: the embedding item it was computed from (its geometry, grid and year).
        grid: ``epsg``, ``shape`` and ``transform`` of the tile (the class COG's own grid).
        assets: the written files.
        counts: pixels per class name (and ``nodata``) for the properties.
        head_checksum: multihash of the head JSON (resuming skips items made by it).
        processed: when it was made.
    """
    cid = c.classes_collection_id(head.name)
    iid = class_item_id(source)
    key = class_item_key(head.name, iid)
    src = source.item
    start, end = _year_interval(source.year)
    classification = head.task == "classification"
    item = pystac.Item(
        id=iid,
        geometry=src["geometry"],
        bbox=src.get("bbox"),
        datetime=start,
        start_datetime=start,
        end_datetime=end,
        properties={
            "title": f"{head.name} {source.cell.name} {source.year}",
            **projection_code_fields(f"EPSG:{grid['epsg']}"),
            "proj:shape": list(grid["shape"]),
            "proj:transform": list(grid["transform"])[:6],
            "processing:level": "L4",
            "processing:datetime": pystac.utils.datetime_to_str(processed),
            "processing:expression": {"format": "stac-mlm", "expression": head.name},
            "tessera:grid": source.cell.name,
            "tessera:year": source.year,
            c.HEAD_CHECKSUM_PROP: head_checksum,
            "tessera:pixels": dict(sorted(counts.items())),
        },
        collection=cid,
        stac_extensions=sorted(
            [
                c.PROJECTION_SCHEMA_URI,
                c.PROCESSING_SCHEMA_URI,
                c.FILE_SCHEMA_URI,
                c.RASTER_SCHEMA_URI,
            ]
            + ([c.CLASSIFICATION_SCHEMA_URI] if classification else [])
        ),
    )
    for asset in assets:
        item.add_asset(asset.key, _class_asset(head, asset))
    coll = relative_href(key, collection_key(cid))
    item.add_link(pystac.Link("root", relative_href(key, CATALOG_KEY), c.JSON_MEDIA_TYPE))
    item.add_link(pystac.Link("parent", coll, c.JSON_MEDIA_TYPE))
    item.add_link(pystac.Link("collection", coll, c.JSON_MEDIA_TYPE))
    item.add_link(
        pystac.Link(
            "derived_from",
            relative_href(key, source.key),
            c.GEOJSON_MEDIA_TYPE,
            title=f"embeddings {source.id}",
        )
    )
    model = pystac.Link(
        "derived_from",
        relative_href(key, model_item_key(head.name)),
        c.GEOJSON_MEDIA_TYPE,
        title=f"head {head.name}",
    )
    model.extra_fields["mlm:name"] = head.name
    item.add_link(model)
    return item.to_dict(include_self_link=False, transform_hrefs=False)


def _class_asset(head: Head, asset: ClassAsset) -> pystac.Asset:
    extra: dict[str, Any] = {"file:size": asset.size, "file:checksum": asset.checksum}
    if asset.key == c.CLASSES_ASSET:
        extra["classification:classes"] = classification_classes(head)
        extra["raster:bands"] = [{"data_type": "uint8", "nodata": c.CLASS_NODATA}]
        return pystac.Asset(
            asset.href,
            title=f"{head.name} classes (uint8, 0 = nodata)",
            media_type=COG_MEDIA_TYPE,
            roles=["data"],
            extra_fields=extra,
        )
    if asset.key in (c.PROBABILITY_ASSET, c.VALUE_ASSET):
        extra["raster:bands"] = [{"data_type": "float32", "nodata": "nan"}]
        title = (
            "probability of the winning class (float32, NaN = nodata)"
            if asset.key == c.PROBABILITY_ASSET
            else f"{head.name} value (float32, NaN = nodata)"
        )
        return pystac.Asset(
            asset.href, title=title, media_type=COG_MEDIA_TYPE, roles=["data"], extra_fields=extra
        )
    return pystac.Asset(
        asset.href,
        title="Preview in the class colours",
        media_type=c.PNG_MEDIA_TYPE,
        roles=["overview", "visual"],
        extra_fields=extra,
    )


def create_classes_collection(head: Head, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``tessera-classes-{name}`` Collection (a dict; ``put_collection`` adds item links)."""
    from tessera_stac.catalog.static import temporal_extent

    cid = c.classes_collection_id(head.name)
    boxes = np.array([i["bbox"] for i in items if i.get("bbox")], dtype=float)
    bbox = [-180.0, -90.0, 180.0, 90.0]
    if len(boxes):
        low, high = boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)
        bbox = [float(low[0]), float(low[1]), float(high[0]), float(high[1])]
    start, end = temporal_extent(items)
    classification = head.task == "classification"
    collection = pystac.Collection(
        id=cid,
        title=f"{head.name}: {'classes' if classification else 'values'} per pixel",
        description=(
            f"The head {head.name} ({ARCHITECTURES[head.kind]}) applied to every pixel of "
            f"{head.collection}: one Cloud-Optimized GeoTIFF per tile and year on the tile's "
            "own UTM grid"
            + (
                ", uint8 classes (0 = water or invalid) and the winning class's probability."
                if classification
                else ", float32 values (NaN = water or invalid)."
            )
        ),
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[start, end]])),
        license=c.LICENSE,
        keywords=["land cover", "classification", "embeddings", c.MODEL_NAME],
        providers=c.providers(),
        stac_extensions=[c.CLASSIFICATION_SCHEMA_URI] if classification else [],
    )
    if classification:
        collection.summaries.add("classification:classes", classification_classes(head))
    d = collection.to_dict(include_self_link=False, transform_hrefs=False)
    key = collection_key(cid)
    d["links"] = [
        {
            "rel": "derived_from",
            "href": relative_href(key, model_item_key(head.name)),
            "type": c.GEOJSON_MEDIA_TYPE,
            "title": f"head {head.name}",
        },
        {
            "rel": "derived_from",
            "href": relative_href(key, collection_key(head.collection)),
            "type": c.JSON_MEDIA_TYPE,
            "title": head.collection,
        },
    ]
    return d
