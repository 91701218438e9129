"""Static STAC facts about TESSERA embeddings: extension URIs, providers, licence, the model.

Kept apart from the builders (``stac.py``) as stactools packages do, so that the facts are
read in one place and the builders stay short.
"""

from __future__ import annotations

import pystac

from tessera_stac.catalog.embedding import SCHEMA_URI as EMBEDDING_SCHEMA_URI

STAC_VERSION = "1.1.0"

#: projection v1.2: the version that allows ``proj:code`` and the deprecated ``proj:epsg``
#: side by side (v2.0 dropped ``proj:epsg``, which stackstac 0.5 still reads). See
#: :func:`tessera_stac.catalog.stac.projection_code_fields`.
PROJECTION_SCHEMA_URI = "https://stac-extensions.github.io/projection/v1.2.0/schema.json"
#: eo:bands (band names as aliases for odc-stac, which reads no STAC 1.1 ``bands``).
EO_SCHEMA_URI = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
FILE_SCHEMA_URI = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
PROCESSING_SCHEMA_URI = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
RENDER_SCHEMA_URI = "https://stac-extensions.github.io/render/v2.0.0/schema.json"
VERSION_SCHEMA_URI = "https://stac-extensions.github.io/version/v1.2.0/schema.json"
MLM_SCHEMA_URI = "https://stac-extensions.github.io/mlm/v1.5.2/schema.json"
SCIENTIFIC_SCHEMA_URI = "https://stac-extensions.github.io/scientific/v1.0.0/schema.json"

#: Extensions every embedding Item declares (sorted, so output is deterministic).
ITEM_EXTENSIONS: tuple[str, ...] = tuple(
    sorted(
        [
            EMBEDDING_SCHEMA_URI,
            EO_SCHEMA_URI,
            FILE_SCHEMA_URI,
            PROCESSING_SCHEMA_URI,
            PROJECTION_SCHEMA_URI,
            RENDER_SCHEMA_URI,
            VERSION_SCHEMA_URI,
        ]
    )
)
#: Extensions an embedding Collection declares.
COLLECTION_EXTENSIONS: tuple[str, ...] = tuple(
    sorted(
        [
            EMBEDDING_SCHEMA_URI,
            EO_SCHEMA_URI,
            RENDER_SCHEMA_URI,
            VERSION_SCHEMA_URI,
            SCIENTIFIC_SCHEMA_URI,
        ]
    )
)

MODEL_NAME = "TESSERA"
MODEL_COLLECTION_ID = "tessera-models"
#: per-MWS change tables between two years (tessera-stac watersheds change)
CHANGE_COLLECTION_ID = "corestack-mws-change"
ROOT_CATALOG_ID = "tessera-stac"
ROOT_CATALOG_TITLE = "TESSERA embeddings"
ROOT_CATALOG_DESCRIPTION = (
    "TESSERA annual Earth-observation embeddings as Cloud-Optimized GeoTIFFs with STAC "
    "metadata, and the model that produced them."
)

LICENSE = "CC-BY-4.0"
LICENSE_HREF = "https://creativecommons.org/licenses/by/4.0/"
MODEL_LICENSE = "other"  # see the repository for the model's terms
TESSERA_PAPER_DOI = "10.48550/arXiv.2506.20380"
TESSERA_CITATION = (
    "Feng, Z. et al. (2025). TESSERA: Temporal Embeddings of Surface Spectra for Earth "
    "Representation and Analysis. arXiv:2506.20380."
)
TESSERA_REPO = "https://github.com/ucam-eo/tessera"
GEOTESSERA_REPO = "https://github.com/ucam-eo/geotessera"

EMBEDDING_DIM = 128
TEMPORAL_WINDOW = "P1Y"
#: Collection field holding the fixed colour projection of the embeddings (catalog/projection.py).
PROJECTION_FIELD = "tessera:projection"
KEYWORDS: tuple[str, ...] = (
    "embeddings",
    "foundation model",
    "TESSERA",
    "Sentinel-1",
    "Sentinel-2",
    "representation learning",
)

#: The 10 Sentinel-2 L2A bands and 2 Sentinel-1 polarisations TESSERA reads.
SENTINEL2_BANDS: tuple[tuple[str, str, float], ...] = (
    ("B02", "blue", 0.49),
    ("B03", "green", 0.56),
    ("B04", "red", 0.665),
    ("B05", "rededge071", 0.704),
    ("B06", "rededge075", 0.74),
    ("B07", "rededge078", 0.783),
    ("B08", "nir", 0.842),
    ("B8A", "nir08", 0.865),
    ("B11", "swir16", 1.61),
    ("B12", "swir22", 2.19),
)
SENTINEL1_BANDS: tuple[str, ...] = ("VV", "VH")


def providers() -> list[pystac.Provider]:
    """The organisations behind the product (fresh objects each call)."""
    return [
        pystac.Provider(
            name="University of Cambridge, Energy and Environment Group (TESSERA)",
            roles=[
                pystac.ProviderRole.PRODUCER,
                pystac.ProviderRole.LICENSOR,
            ],
            url=TESSERA_REPO,
        ),
        pystac.Provider(
            name="tessera-stac",
            roles=[pystac.ProviderRole.PROCESSOR, pystac.ProviderRole.HOST],
            description="Converted to Cloud-Optimized GeoTIFFs and STAC by tessera-stac.",
        ),
    ]


# ----------------------------------------------------------- collections, tables, media types
# Shared by the pipelines (publisher/) and the server (api/), which may not import publisher/.
EMBEDDING_COLLECTION_PREFIX = "tessera-embeddings-"  # + model version, e.g. tessera-embeddings-v1
CORESTACK_COLLECTION_PREFIX = "corestack-"
MWS_COLLECTION_ID = "corestack-mws"  # CoRE Stack micro-watershed layers, one item per block
JOIN_COLLECTION_ID = "corestack-mws-embeddings"  # per-MWS mean embeddings, one item per year
#: embedding band i is named ``A{i:02d}``: the COG's band names and the join table's columns
BAND_PREFIX = "A"
BAND_NAMES: tuple[str, ...] = tuple(f"{BAND_PREFIX}{i:02d}" for i in range(EMBEDDING_DIM))
CODE_NODATA = -128  # the int8 code of an invalid pixel (real codes lie in [-127, 127])
UID_COLUMN = "uid"  # the join key of MWS layers and join tables

TABLE_SCHEMA_URI = "https://stac-extensions.github.io/table/v1.2.0/schema.json"
JSON_MEDIA_TYPE = "application/json"
GEOJSON_MEDIA_TYPE = "application/geo+json"
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
CSV_MEDIA_TYPE = "text/csv"
PNG_MEDIA_TYPE = "image/png"

# ------------------------------------------------------------------ heads and class maps
#: class maps of a trained head: ``tessera-classes-{head name}``, one item per (tile, year)
CLASSES_COLLECTION_PREFIX = "tessera-classes-"
CLASSIFICATION_SCHEMA_URI = "https://stac-extensions.github.io/classification/v1.1.0/schema.json"
RASTER_SCHEMA_URI = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
#: asset keys of a class item: uint8 classes (nodata 0), the winning probability (float32,
#: NaN nodata) or, for a regression head, the value (float32, NaN nodata), a PNG preview
CLASSES_ASSET = "classes"
PROBABILITY_ASSET = "probability"
VALUE_ASSET = "value"
CLASSES_PREVIEW_ASSET = "preview"
CLASS_NODATA = 0
#: asset keys of a head's model item in ``tessera-models``: the head JSON, its accuracy
#: report and the report's chart
HEAD_ASSET = "head"
REPORT_ASSET = "report"
CHART_ASSET = "chart"
HEAD_MEDIA_TYPE = "application/json"
#: model item properties with the headline accuracy (spatially blocked cross-validation)
ACCURACY_PROP = "tessera:accuracy"
ACCURACY_RANDOM_PROP = "tessera:accuracy_random"
F1_PROP = "tessera:f1_macro"
R2_PROP = "tessera:r2"
R2_RANDOM_PROP = "tessera:r2_random"
LABELS_PROP = "tessera:labels"
HEAD_KIND_PROP = "tessera:head_kind"
HEAD_CHECKSUM_PROP = "tessera:head_checksum"


def classes_collection_id(head_name: str) -> str:
    """The collection of a head's class maps."""
    return f"{CLASSES_COLLECTION_PREFIX}{head_name}"


def head_key(head_name: str) -> str:
    """Where a head's JSON lives in the published tree (beside its model item)."""
    return f"{MODEL_COLLECTION_ID}/{head_name}/head.json"


#: per-MWS hectares and percents of each class (one item per block, model and year; and the
#: change between two years): ``tessera-stac watersheds classes``
MWS_CLASSES_COLLECTION_ID = "corestack-mws-classes"

# ------------------------------------------------- watershed feature tables (beside pgSTAC)
#: PostgreSQL schema of the watershed tables ``tessera-stac load`` writes and the API serves
#: as OGC API Features and vector tiles (tipg): nothing else of the database is exposed there.
FEATURES_SCHEMA = "tessera_features"
MWS_TABLE = "mws"  # every published MWS layer: outline, uid, block/district/state, source item
MWS_EMBEDDINGS_TABLE = "mws_embeddings"  # per (uid, year): PCA colour, counts (the join)
MWS_CHANGE_TABLE = "mws_change"  # per (uid, year pair): distance, share of changed pixels
MWS_CLASSES_TABLE = "mws_classes"  # per (uid, year, class): hectares and percent (a head's)
MWS_VECTORS_TABLE = "mws_vectors"  # per (uid, year): the 128-d mean vector (no geometry)
#: the STAC collection each feature table is loaded from
FEATURE_TABLE_SOURCES: dict[str, str] = {
    MWS_TABLE: MWS_COLLECTION_ID,
    MWS_EMBEDDINGS_TABLE: JOIN_COLLECTION_ID,
    MWS_CHANGE_TABLE: CHANGE_COLLECTION_ID,
}
MVT_MEDIA_TYPE = "application/vnd.mapbox-vector-tile"
