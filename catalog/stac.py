"""Pure STAC builders: no I/O, no clock (times are passed in).

* :func:`create_item` turns what a publisher run returns (:class:`PublishedTile`) into an Item.
* :func:`create_collection` builds one embedding Collection (one model version/variant) from
  its Items: extents, summaries, ``item_assets``, providers, licence and links.
* :func:`create_model_item` / :func:`create_model_collection` describe the TESSERA model with
  the MLM extension (v1.5.2); embedding Items and Collections point to it with a
  ``derived_from`` link carrying ``mlm:name``.

Links are relative and follow the static layout (DESIGN §2), so a JSON written at its key
(:func:`item_key`, :func:`collection_key`, :func:`model_item_key`) is already a valid static
catalog member; ``tessera-stac catalog build`` can make them absolute.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pystac

from tessera_stac.catalog import constants as c
from tessera_stac.catalog.embedding import (
    EmbeddingExtension,
    EmbeddingType,
    Quantization,
    SimilarityMetric,
)
from tessera_stac.catalog.hrefs import is_public
from tessera_stac.catalog.model import AssetRecord, PublishedTile
from tessera_stac.catalog.profile import (
    EMBEDDINGS,
    PREVIEW_KEY,
    PREVIEW_MEDIA_TYPE,
    SCALES,
    CogProfile,
)

CATALOG_KEY = "catalog.json"
JSON_MEDIA_TYPE = c.JSON_MEDIA_TYPE
GEOJSON_MEDIA_TYPE = c.GEOJSON_MEDIA_TYPE


# ------------------------------------------------------------------------------ layout
def item_key(collection_id: str, year: int, grid: str, item_id: str) -> str:
    """Object key of an Item: ``{collection}/{year}/{grid}/{item_id}.json``."""
    return f"{collection_id}/{year}/{grid}/{item_id}.json"


def collection_key(collection_id: str) -> str:
    """Object key of a Collection: ``{collection}/collection.json``."""
    return f"{collection_id}/collection.json"


def model_item_key(model_item_id: str) -> str:
    """Object key of the MLM model Item: ``tessera-models/{id}/{id}.json``."""
    return f"{c.MODEL_COLLECTION_ID}/{model_item_id}/{model_item_id}.json"


def relative_href(from_key: str, to_key: str) -> str:
    """Relative href from the object at ``from_key`` to the one at ``to_key``."""
    rel = posixpath.relpath(to_key, posixpath.dirname(from_key) or ".")
    return rel if rel.startswith(".") else f"./{rel}"


def model_item_id(model_version: str) -> str:
    """Id of the MLM Item describing one model version (e.g. ``tessera-v1``)."""
    return f"tessera-{model_version}"


def default_collection_id(model_version: str) -> str:
    """Default id of the embedding Collection of one model version."""
    return f"{c.EMBEDDING_COLLECTION_PREFIX}{model_version}"


def _model_link(from_key: str, model_version: str) -> pystac.Link:
    return pystac.Link(
        rel="derived_from",
        target=relative_href(from_key, model_item_key(model_item_id(model_version))),
        media_type=GEOJSON_MEDIA_TYPE,
        title=f"{c.MODEL_NAME} model {model_version}",
        extra_fields={"mlm:name": c.MODEL_NAME},
    )


def _year_interval(year: int) -> tuple[datetime, datetime]:
    return datetime(year, 1, 1, tzinfo=UTC), datetime(year, 12, 31, 23, 59, 59, tzinfo=UTC)


# ------------------------------------------------------------------------------ bands
def _band_fields(profile: CogProfile) -> dict[str, Any]:
    """STAC 1.1 ``bands`` + ``data_type``/``nodata`` of an asset, from the COG profile.

    The names are repeated as ``eo:bands``: odc-stac (0.5) takes band aliases (``A00``...,
    ``scale``) from there only.
    """
    nodata = profile.nodata
    names = [{"name": name} for name in profile.band_names]
    return {
        "data_type": profile.dtype,
        "nodata": "nan" if isinstance(nodata, float) and nodata != nodata else nodata,
        "bands": names,
        "eo:bands": [dict(n) for n in names],
    }


def embeddings_quantization() -> Quantization:
    """The TESSERA recipe: int8 codes times the per-pixel float32 scale of asset ``scales``."""
    return Quantization.per_pixel(
        SCALES.asset_key,
        nodata=int(EMBEDDINGS.nodata),
        scale_nodata=float("nan"),
        scale_valid_range=(0.0, 1.0),
        quantized_dtype=EMBEDDINGS.dtype,
        original_dtype="float32",
    )


def _cog_fields(profile: CogProfile, title: str) -> dict[str, Any]:
    """Title, description, roles, media type and band fields of a COG asset."""
    return {
        "title": title,
        "description": profile.description,
        "roles": list(profile.roles),
        "type": profile.media_type,
        **_band_fields(profile),
    }


def _asset_fields(key: str, record: AssetRecord | None = None) -> dict[str, Any]:
    """Title, description, roles and band fields of a known asset (empty for others)."""
    if key == EMBEDDINGS.asset_key:
        fields = _cog_fields(EMBEDDINGS, "Embeddings (int8 codes)")
        fields["embedding:quantization"] = embeddings_quantization().to_dict()
    elif key == SCALES.asset_key:
        fields = _cog_fields(SCALES, "Per-pixel scales")
    elif key == PREVIEW_KEY:
        fields = {
            "title": "Preview (fixed projection of the 128 dimensions to RGB)",
            "roles": ["overview", "visual"],
            "type": PREVIEW_MEDIA_TYPE,
        }
    else:
        fields = {}
    if record is not None:
        fields["type"] = record.media_type
        if record.roles:
            fields["roles"] = list(record.roles)
    return fields


def _asset(key: str, record: AssetRecord) -> pystac.Asset:
    fields = _asset_fields(key, record)
    asset = pystac.Asset(
        href=record.href,
        title=fields.pop("title", None),
        description=fields.pop("description", None),
        media_type=fields.pop("type", None),
        roles=fields.pop("roles", None),
    )
    asset.extra_fields.update(fields)
    asset.extra_fields["file:size"] = record.size
    asset.extra_fields["file:checksum"] = record.checksum
    return asset


def preview_render() -> dict[str, Any]:
    """The render-extension recipe of the preview: dimensions 1-3 as RGB, codes ±127."""
    return {
        "preview": {
            "title": "Embedding dimensions 1-3 as RGB",
            "assets": [EMBEDDINGS.asset_key],
            "bidx": [1, 2, 3],
            "rescale": [[-127, 127]] * 3,
            "nodata": EMBEDDINGS.nodata,
            "resampling": "nearest",
        }
    }


def _proj_bbox(tile: PublishedTile) -> list[float]:
    a, b, x0, d, e, y0 = tile.transform
    height, width = tile.shape
    xs = [x0 + a * col + b * row for col in (0, width) for row in (0, height)]
    ys = [y0 + d * col + e * row for col in (0, width) for row in (0, height)]
    return [min(xs), min(ys), max(xs), max(ys)]


# ------------------------------------------------------------------------------- item
def projection_code_fields(code: str) -> dict[str, Any]:
    """``proj:code`` and, next to it, ``proj:epsg`` (projection v1.2 allows both): the EPSG
    number for an ``EPSG:n`` code, null for any other CRS (as the extension says). stackstac
    reads only ``proj:epsg``; everything else reads ``proj:code``."""
    authority, _, number = code.partition(":")
    epsg = int(number) if authority.upper() == "EPSG" and number.isdigit() else None
    return {"proj:code": code, "proj:epsg": epsg}


def create_item(tile: PublishedTile) -> pystac.Item:
    """Build the STAC Item of one published (tile, year).

    Asset hrefs are taken as recorded in ``tile.assets`` (relative to the item's folder when
    the publisher wrote them so). Links (root, parent, collection, the model, the sources)
    assume the Item is stored at :func:`item_key`.
    """
    west, south, east, north = tile.cell.bounds
    geometry = {
        "type": "Polygon",
        "coordinates": [
            [[west, south], [east, south], [east, north], [west, north], [west, south]]
        ],
    }
    start, end = _year_interval(tile.year)
    item = pystac.Item(
        id=tile.item_id,
        geometry=geometry,
        bbox=[west, south, east, north],
        datetime=start,
        start_datetime=start,
        end_datetime=end,
        properties={
            "title": f"{c.MODEL_NAME} {tile.model_version} embeddings {tile.cell.name} {tile.year}",
        },
        collection=tile.collection_id,
        stac_extensions=list(c.ITEM_EXTENSIONS),
    )
    props = item.properties
    props.update(projection_code_fields(f"EPSG:{tile.epsg}"))
    props["proj:shape"] = list(tile.shape)
    props["proj:transform"] = list(tile.transform)
    props["proj:bbox"] = _proj_bbox(tile)
    props.update(_processing(tile))
    props["version"] = tile.model_version
    props["renders"] = preview_render()
    EmbeddingExtension.ext(item).apply(
        type=EmbeddingType.PIXEL,
        dimensions=EMBEDDINGS.count,
        model_name=tile.model_name,
        model_version=tile.model_version,
        temporal_window=c.TEMPORAL_WINDOW,
        similarity=SimilarityMetric.COSINE,
        normalized=False,
    )
    if tile.georef_from != "landmask":  # no landmask: water is not masked in this tile
        item.properties["tessera:landmask"] = False
    for key in sorted(tile.assets):
        item.add_asset(key, _asset(key, tile.assets[key]))
    _add_item_links(item, tile)
    return item


def _processing(tile: PublishedTile) -> dict[str, Any]:
    software = {"tessera-stac": "unknown"} if not tile.software else dict(tile.software)
    lineage = (
        f"{c.MODEL_NAME} {tile.model_version} int8 codes and per-pixel float32 scales "
        f"converted to Cloud-Optimized GeoTIFFs on the native UTM grid (georeferencing from "
        f"the {tile.georef_from}); invalid pixels set to nodata "
        f"({tile.counts.valid} valid, {tile.counts.invalid} invalid)."
    )
    return {
        "processing:level": "L4",
        "processing:software": dict(sorted(software.items())),
        "processing:datetime": pystac.utils.datetime_to_str(tile.processed),
        "processing:lineage": lineage,
        "processing:expression": {
            "format": "stac-mlm",
            "expression": model_item_id(tile.model_version),
        },
    }


def _add_item_links(item: pystac.Item, tile: PublishedTile) -> None:
    key = item_key(tile.collection_id, tile.year, tile.cell.name, tile.item_id)
    coll = relative_href(key, collection_key(tile.collection_id))
    item.add_link(pystac.Link("root", relative_href(key, CATALOG_KEY), JSON_MEDIA_TYPE))
    item.add_link(pystac.Link("parent", coll, JSON_MEDIA_TYPE))
    item.add_link(pystac.Link("collection", coll, JSON_MEDIA_TYPE))
    item.add_link(_model_link(key, tile.model_version))
    for href in filter(is_public, tile.sources):  # a private local path is never published
        name = posixpath.basename(href.rstrip("/"))
        media = "image/tiff; application=geotiff" if name.endswith((".tif", ".tiff")) else None
        item.add_link(
            pystac.Link("via", href, media_type=media or "application/octet-stream", title=name)
        )


# ------------------------------------------------------------------------- collection
def create_collection(
    items: Sequence[pystac.Item],
    model_version: str,
    collection_id: str | None = None,
    *,
    title: str | None = None,
    description: str | None = None,
    license: str = c.LICENSE,
    link_items: bool = True,
) -> pystac.Collection:
    """Build the embedding Collection of one model version/variant from its Items.

    Args:
        items: the Collection's Items (extents and summaries are computed from them).
        model_version: the model version/variant (e.g. ``v1``); one Collection each.
        collection_id: defaults to ``tessera-embeddings-{model_version}``.
        title: human title (a default names the model version).
        description: a default explains the product.
        license: SPDX id of the data licence.
        link_items: add an ``item`` link per Item (relative, in the static layout).

    Raises:
        ValueError: when ``items`` is empty or mixes collections/model versions.
    """
    cid = collection_id or default_collection_id(model_version)
    if not items:
        raise ValueError(f"collection {cid}: no items to build it from")
    _check_uniform(items, cid, model_version)
    collection = pystac.Collection(
        id=cid,
        title=title or f"{c.MODEL_NAME} embeddings {model_version}",
        description=description or _collection_description(model_version),
        extent=_extent(items),
        license=license,
        keywords=list(c.KEYWORDS),
        providers=c.providers(),
        stac_extensions=list(c.COLLECTION_EXTENSIONS),
        catalog_type=pystac.CatalogType.RELATIVE_PUBLISHED,
    )
    collection.extra_fields.update(
        {
            "version": model_version,
            "renders": preview_render(),
            "sci:doi": c.TESSERA_PAPER_DOI,
            "sci:citation": c.TESSERA_CITATION,
        }
    )
    collection.summaries = _summaries(items)
    for key, definition in _item_assets(items).items():
        collection.item_assets[key] = definition
    _add_collection_links(collection, items, link_items)
    return collection


def _item_assets(items: Sequence[pystac.Item]) -> dict[str, pystac.ItemAssetDefinition]:
    """``item_assets`` as the Items have them (first Item with each key; per-file fields such
    as href, size and checksum left out), so roles and recipes match the published Items."""
    per_file = {"href", "file:size", "file:checksum"}
    found: dict[str, pystac.ItemAssetDefinition] = {}
    for item in sorted(items, key=lambda i: i.id):
        for key, asset in item.assets.items():
            if key in found:
                continue
            fields = {k: v for k, v in asset.to_dict().items() if k not in per_file}
            found[key] = pystac.ItemAssetDefinition.create(
                title=fields.pop("title", None),
                description=fields.pop("description", None),
                media_type=fields.pop("type", None),
                roles=fields.pop("roles", None),
                extra_fields=fields,
            )
    return dict(sorted(found.items()))


def _collection_description(model_version: str) -> str:
    return (
        f"Annual {c.MODEL_NAME} ({model_version}) Earth-observation embeddings: one "
        f"{c.EMBEDDING_DIM}-dimensional vector per 10 m pixel summarising a year of "
        "Sentinel-1 and Sentinel-2 observations. One Item per 0.1° grid cell and year, on the "
        "cell's native UTM grid. Values are int8 codes (asset `embeddings`) times a per-pixel "
        "float32 scale (asset `scales`): see the `embedding:quantization` field."
    )


def _check_uniform(items: Sequence[pystac.Item], cid: str, model_version: str) -> None:
    for item in items:
        if item.collection_id not in (None, cid):
            raise ValueError(f"item {item.id} belongs to {item.collection_id}, not {cid}")
        version = EmbeddingExtension.ext(item).model_version
        if version != model_version:
            raise ValueError(
                f"item {item.id} is model version {version}, the collection {model_version}"
            )


def _extent(items: Sequence[pystac.Item]) -> pystac.Extent:
    boxes = [item.bbox for item in items if item.bbox]
    bbox = [
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    ]
    starts = [item.common_metadata.start_datetime or item.datetime for item in items]
    ends = [item.common_metadata.end_datetime or item.datetime for item in items]
    return pystac.Extent(
        pystac.SpatialExtent([bbox]),
        pystac.TemporalExtent(
            [[min(s for s in starts if s is not None), max(e for e in ends if e is not None)]]
        ),
    )


def _summaries(items: Sequence[pystac.Item]) -> pystac.Summaries:
    def values(prop: str) -> list[Any]:
        found = {item.properties[prop] for item in items if prop in item.properties}
        return sorted(found, key=str)

    summaries = pystac.Summaries({})
    for prop in (
        "embedding:type",
        "embedding:dimensions",
        "embedding:model_name",
        "embedding:model_version",
        "embedding:temporal_window",
        "embedding:similarity",
        "embedding:normalized",
        "proj:code",
        "processing:level",
    ):
        found = values(prop)
        if found:
            summaries.add(prop, found)
    return summaries


def _add_collection_links(
    collection: pystac.Collection, items: Sequence[pystac.Item], link_items: bool
) -> None:
    key = collection_key(collection.id)
    versions = {EmbeddingExtension.ext(i).model_version or "" for i in items}
    collection.add_link(pystac.Link("root", relative_href(key, CATALOG_KEY), JSON_MEDIA_TYPE))
    collection.add_link(pystac.Link("parent", relative_href(key, CATALOG_KEY), JSON_MEDIA_TYPE))
    collection.add_link(pystac.Link("license", c.LICENSE_HREF, "text/html", title="Data licence"))
    for version in sorted(versions):
        collection.add_link(_model_link(key, version))
    collection.add_link(pystac.Link("about", c.TESSERA_REPO, "text/html", title="TESSERA"))
    collection.add_link(pystac.Link("related", c.GEOTESSERA_REPO, "text/html", title="geotessera"))
    collection.add_link(
        pystac.Link("cite-as", f"https://doi.org/{c.TESSERA_PAPER_DOI}", "text/html")
    )
    if link_items:
        for item in sorted(items, key=lambda i: i.id):
            grid, year = _grid_year(item)
            href = relative_href(key, item_key(collection.id, year, grid, item.id))
            collection.add_link(pystac.Link("item", href, GEOJSON_MEDIA_TYPE))


def _grid_year(item: pystac.Item) -> tuple[str, int]:
    """(grid name, year) of an embedding Item (id ``{grid}_{year}``)."""
    grid, _, year = item.id.rpartition("_")
    return grid, int(year)


# ------------------------------------------------------------------------------ model
def create_model_item(
    model_version: str,
    *,
    years: tuple[int, int] = (2017, 2025),
    model_href: str = c.TESSERA_REPO,
    artifact_type: str = "torch.save",
) -> pystac.Item:
    """The MLM (v1.5.2) Item describing one TESSERA model version.

    Args:
        model_version: e.g. ``v1``; the Item id is ``tessera-{model_version}``.
        years: first and last year of the embeddings the model produced (the Item's time).
        model_href: where the model weights are distributed (asset ``model``).
        artifact_type: ``mlm:artifact_type`` of the weights.
    """
    mid = model_item_id(model_version)
    key = model_item_key(mid)
    start = datetime(years[0], 1, 1, tzinfo=UTC)
    end = datetime(years[1], 12, 31, 23, 59, 59, tzinfo=UTC)
    item = pystac.Item(
        id=mid,
        geometry={
            "type": "Polygon",
            "coordinates": [[[-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]]],
        },
        bbox=[-180.0, -90.0, 180.0, 90.0],
        datetime=start,
        start_datetime=start,
        end_datetime=end,
        properties=_model_properties(model_version),
        collection=c.MODEL_COLLECTION_ID,
        stac_extensions=sorted([c.MLM_SCHEMA_URI, c.SCIENTIFIC_SCHEMA_URI, c.VERSION_SCHEMA_URI]),
    )
    item.add_asset(
        "model",
        pystac.Asset(
            href=model_href,
            title=f"{c.MODEL_NAME} {model_version} weights (see the repository)",
            media_type="text/html",
            roles=["mlm:model", "mlm:weights"],
            # STAC 1.1.0's item schema only allows properties.bands (which MLM needs) when
            # some asset has bands too: the weights take the same bands as input.
            extra_fields={"mlm:artifact_type": artifact_type, "bands": _model_bands()},
        ),
    )
    item.add_asset(
        "source_code",
        pystac.Asset(
            href=c.TESSERA_REPO,
            title="TESSERA source code",
            media_type="text/html",
            roles=["mlm:source_code", "code"],
        ),
    )
    coll = relative_href(key, collection_key(c.MODEL_COLLECTION_ID))
    item.add_link(pystac.Link("root", relative_href(key, CATALOG_KEY), JSON_MEDIA_TYPE))
    item.add_link(pystac.Link("parent", coll, JSON_MEDIA_TYPE))
    item.add_link(pystac.Link("collection", coll, JSON_MEDIA_TYPE))
    item.add_link(pystac.Link("cite-as", f"https://doi.org/{c.TESSERA_PAPER_DOI}", "text/html"))
    return item


def _mlm_input(name: str, what: str, bands: list[str]) -> dict[str, Any]:
    """One MLM model input: a year's time series of one pixel's ``bands``."""
    return {
        "name": name,
        "description": f"{what} time series of one pixel (a year)",
        "bands": bands,
        "input": {
            "shape": [-1, -1, len(bands)],
            "dim_order": ["batch", "time", "bands"],
            "data_type": "float32",
        },
    }


def _model_properties(model_version: str) -> dict[str, Any]:
    s2 = [b[0] for b in c.SENTINEL2_BANDS]
    s1 = list(c.SENTINEL1_BANDS)
    tasks = ["classification", "regression", "semantic-segmentation", "similarity-search"]
    return {
        "title": f"{c.MODEL_NAME} {model_version}",
        "description": (
            "TESSERA: a pixel-wise foundation model that encodes a year of Sentinel-2 and "
            "Sentinel-1 observations of each 10 m pixel into one "
            f"{c.EMBEDDING_DIM}-dimensional embedding."
        ),
        "mlm:name": c.MODEL_NAME,
        "mlm:architecture": "Transformer (dual Sentinel-1/Sentinel-2 temporal encoders)",
        "mlm:tasks": tasks,
        "mlm:framework": "PyTorch",
        "mlm:pretrained": True,
        "mlm:input": [
            _mlm_input("sentinel-2", "Sentinel-2 L2A reflectance", s2),
            _mlm_input("sentinel-1", "Sentinel-1 backscatter", s1),
        ],
        "mlm:output": [
            {
                "name": "embedding",
                "description": (
                    f"{c.EMBEDDING_DIM}-d embedding per pixel; distributed as int8 codes "
                    "with one float32 scale per pixel (embedding:quantization)"
                ),
                "tasks": tasks,
                "result": {
                    "shape": [-1, c.EMBEDDING_DIM],
                    "dim_order": ["batch", "embedding"],
                    "data_type": "float32",
                },
            }
        ],
        "bands": _model_bands(),
        "version": model_version,
        "sci:doi": c.TESSERA_PAPER_DOI,
        "sci:citation": c.TESSERA_CITATION,
    }


def _model_bands() -> list[dict[str, Any]]:
    return [
        {"name": name, "description": f"Sentinel-2 {common} ({wl} µm)"}
        for name, common, wl in c.SENTINEL2_BANDS
    ] + [
        {"name": name, "description": f"Sentinel-1 {name} backscatter"}
        for name in c.SENTINEL1_BANDS
    ]


def create_model_collection(model_items: Sequence[pystac.Item]) -> pystac.Collection:
    """The ``tessera-models`` Collection holding the MLM model Items."""
    if not model_items:
        raise ValueError(f"collection {c.MODEL_COLLECTION_ID}: no model items")
    collection = pystac.Collection(
        id=c.MODEL_COLLECTION_ID,
        title=f"{c.MODEL_NAME} models",
        description="The TESSERA models that produced the embeddings (MLM extension).",
        extent=_extent(model_items),
        license=c.MODEL_LICENSE,
        keywords=["machine learning model", "foundation model", c.MODEL_NAME],
        providers=c.providers()[:1],
        stac_extensions=[c.MLM_SCHEMA_URI],
        catalog_type=pystac.CatalogType.RELATIVE_PUBLISHED,
    )
    key = collection_key(c.MODEL_COLLECTION_ID)
    collection.add_link(pystac.Link("root", relative_href(key, CATALOG_KEY), JSON_MEDIA_TYPE))
    collection.add_link(pystac.Link("parent", relative_href(key, CATALOG_KEY), JSON_MEDIA_TYPE))
    collection.add_link(pystac.Link("license", c.TESSERA_REPO, "text/html", title="Licence"))
    for item in sorted(model_items, key=lambda i: i.id):
        href = relative_href(key, model_item_key(item.id))
        collection.add_link(pystac.Link("item", href, GEOJSON_MEDIA_TYPE))
    return collection


# ------------------------------------------------------------------------------- root
def create_root_catalog(
    collection_ids: Sequence[str], titles: Mapping[str, str] | None = None
) -> pystac.Catalog:
    """The root ``catalog.json``: one ``child`` link per Collection (sorted, titled if known)."""
    catalog = pystac.Catalog(
        id=c.ROOT_CATALOG_ID,
        title=c.ROOT_CATALOG_TITLE,
        description=c.ROOT_CATALOG_DESCRIPTION,
        catalog_type=pystac.CatalogType.RELATIVE_PUBLISHED,
    )
    catalog.add_link(pystac.Link("root", f"./{CATALOG_KEY}", JSON_MEDIA_TYPE))
    for cid in sorted(set(collection_ids)):
        href = relative_href(CATALOG_KEY, collection_key(cid))
        catalog.add_link(pystac.Link("child", href, JSON_MEDIA_TYPE, (titles or {}).get(cid)))
    return catalog
