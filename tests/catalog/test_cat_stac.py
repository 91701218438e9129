"""Item, Collection and MLM model builders: validity, content, determinism, golden files."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pystac
import pytest

from tessera_stac.catalog import constants as c
from tessera_stac.catalog.embedding import (
    SCHEMA_URI,
    EmbeddingExtension,
    EmbeddingType,
    Quantization,
    QuantizationMethod,
    SimilarityMetric,
)
from tessera_stac.catalog.stac import (
    create_collection,
    create_item,
    create_model_collection,
    create_model_item,
    create_root_catalog,
    item_key,
    projection_code_fields,
    relative_href,
)

Validate = Callable[[dict[str, Any]], None]


def as_dict(obj: pystac.STACObject) -> dict[str, Any]:
    return obj.to_dict(include_self_link=False, transform_hrefs=False)


@pytest.fixture
def items(make_tile: Callable[..., Any]) -> list[pystac.Item]:
    tiles = [
        make_tile("grid_0.15_52.05", 2023),
        make_tile("grid_0.15_52.05", 2024),
        make_tile("grid_77.55_12.95", 2024),  # another UTM zone, northern hemisphere
        make_tile("grid_-43.25_-22.95", 2024),  # southern hemisphere
    ]
    return [create_item(t) for t in tiles]


def test_item_content(make_tile: Callable[..., Any]) -> None:
    tile = make_tile("grid_0.15_52.05", 2024)
    d = as_dict(create_item(tile))
    p = d["properties"]
    assert d["stac_version"] == "1.1.0"
    assert d["id"] == "grid_0.15_52.05_2024"
    assert d["collection"] == "tessera-embeddings-v1"
    assert sorted(d["stac_extensions"]) == sorted(c.ITEM_EXTENSIONS)
    assert p["datetime"] == "2024-01-01T00:00:00Z"
    assert p["start_datetime"] == "2024-01-01T00:00:00Z"
    assert p["end_datetime"] == "2024-12-31T23:59:59Z"
    assert d["geometry"]["coordinates"][0][0] == [0.1, 52.0]
    assert d["bbox"] == [0.1, 52.0, 0.2, 52.1]
    assert p["proj:code"] == "EPSG:32631"
    assert p["proj:epsg"] == 32631  # next to proj:code (projection v1.2), for stackstac
    assert c.PROJECTION_SCHEMA_URI in d["stac_extensions"]
    assert "/projection/v1.2.0/" in c.PROJECTION_SCHEMA_URI
    assert p["proj:shape"] == list(tile.shape)
    assert p["proj:transform"] == list(tile.transform)
    a, _, x0, _, e, y0 = tile.transform
    h, w = tile.shape
    assert p["proj:bbox"] == [x0, y0 + e * h, x0 + a * w, y0]
    assert p["processing:level"] == "L4"
    assert p["processing:datetime"] == "2025-03-01T12:00:00Z"  # from the tile, not the clock
    assert p["processing:software"] == {"tessera-stac": "0.1.0"}
    assert p["renders"]["preview"]["assets"] == ["embeddings"]
    assert p["embedding:dimensions"] == 128 and p["embedding:type"] == "pixel"
    emb = d["assets"]["embeddings"]
    assert not any(k.startswith("raster:") for k in emb)  # no raster:scale on int8 codes
    assert emb["data_type"] == "int8" and emb["nodata"] == -128 and len(emb["bands"]) == 128
    assert emb["embedding:quantization"]["method"] == "per-pixel-scale"
    assert emb["embedding:quantization"]["scale_asset"] == "scales"
    assert d["assets"]["scales"]["nodata"] == "nan"
    for key in ("embeddings", "scales", "preview"):
        assert d["assets"][key]["file:size"] > 0
        assert d["assets"][key]["file:checksum"].startswith("1220")
    rels = [(link["rel"], link["href"]) for link in d["links"]]
    assert ("collection", "../../collection.json") in rels
    assert ("root", "../../../catalog.json") in rels
    model = [x for x in d["links"] if x["rel"] == "derived_from"]
    assert model == [
        {
            "rel": "derived_from",
            "href": "../../../tessera-models/tessera-v1/tessera-v1.json",
            "type": "application/geo+json",
            "title": "TESSERA model v1",
            "mlm:name": "TESSERA",
        }
    ]
    assert [x["href"] for x in d["links"] if x["rel"] == "via"] == list(tile.sources)


def test_relative_links_resolve_in_layout() -> None:
    key = item_key("coll", 2024, "grid_0.15_52.05", "grid_0.15_52.05_2024")
    assert key == "coll/2024/grid_0.15_52.05/grid_0.15_52.05_2024.json"
    assert relative_href(key, "catalog.json") == "../../../catalog.json"
    assert relative_href("coll/collection.json", key) == (
        "./2024/grid_0.15_52.05/grid_0.15_52.05_2024.json"
    )


def test_items_validate(items: list[pystac.Item], stac_validate: Validate) -> None:
    for item in items:
        stac_validate(as_dict(item))


def test_proj_epsg_next_to_proj_code(items: list[pystac.Item], stac_validate: Validate) -> None:
    """projection v1.2 allows both fields; proj:epsg is null for a CRS without an EPSG code."""
    assert projection_code_fields("EPSG:3857") == {"proj:code": "EPSG:3857", "proj:epsg": 3857}
    d = as_dict(items[0])
    d["properties"].update(projection_code_fields("IAU_2015:30100"))
    assert d["properties"]["proj:epsg"] is None
    stac_validate(d)
    d["properties"]["proj:epsg"] = "32631"  # the schema checks the field: an integer or null
    with pytest.raises(pystac.errors.STACValidationError):
        stac_validate(d)


def test_southern_item_uses_327xx(items: list[pystac.Item]) -> None:
    south = next(i for i in items if i.id.startswith("grid_-43.25"))
    assert south.properties["proj:code"] == "EPSG:32723"
    assert south.properties["proj:epsg"] == 32723


def test_collection(items: list[pystac.Item], stac_validate: Validate) -> None:
    coll = create_collection(items, "v1")
    d = as_dict(coll)
    stac_validate(d)
    assert d["id"] == "tessera-embeddings-v1"
    assert d["extent"]["spatial"]["bbox"] == [[-43.3, -23.0, 77.6, 52.1]]
    assert d["extent"]["temporal"]["interval"] == [["2023-01-01T00:00:00Z", "2024-12-31T23:59:59Z"]]
    assert d["summaries"]["proj:code"] == ["EPSG:32631", "EPSG:32643", "EPSG:32723"]
    assert d["summaries"]["embedding:dimensions"] == [128]
    assert d["license"] == c.LICENSE
    assert {p["name"] for p in d["providers"]} == {p.name for p in c.providers()}
    assert set(d["item_assets"]) == {"embeddings", "scales", "preview"}
    q = d["item_assets"]["embeddings"]["embedding:quantization"]
    assert q == items[0].assets["embeddings"].extra_fields["embedding:quantization"]
    item_links = [x["href"] for x in d["links"] if x["rel"] == "item"]
    assert len(item_links) == 4
    assert "./2024/grid_77.55_12.95/grid_77.55_12.95_2024.json" in item_links
    model = [x for x in d["links"] if x["rel"] == "derived_from"]
    assert model[0]["mlm:name"] == "TESSERA"
    assert model[0]["href"] == "../tessera-models/tessera-v1/tessera-v1.json"
    summaries = EmbeddingExtension.summaries(coll)
    assert summaries.model_version == ["v1"]
    assert summaries.similarity == [SimilarityMetric.COSINE]


def test_collection_refuses_mixed_versions(make_tile: Callable[..., Any]) -> None:
    mixed = [create_item(make_tile(model_version="v1")), create_item(make_tile(year=2023))]
    other = create_item(make_tile("grid_1.15_52.05", model_version="v2"))
    create_collection(mixed, "v1")
    with pytest.raises(ValueError, match="belongs to tessera-embeddings-v2"):
        create_collection([*mixed, other], "v1")
    with pytest.raises(ValueError, match="no items"):
        create_collection([], "v1")


def test_model_item_and_collection(stac_validate: Validate) -> None:
    model = create_model_item("v1")
    d = as_dict(model)
    stac_validate(d)
    assert d["properties"]["mlm:name"] == "TESSERA"
    assert d["properties"]["mlm:output"][0]["result"]["shape"] == [-1, 128]
    names = [b for i in d["properties"]["mlm:input"] for b in i["bands"]]
    assert "B08" in names and "VV" in names
    assert c.MLM_SCHEMA_URI in d["stac_extensions"]
    mc = as_dict(create_model_collection([model]))
    stac_validate(mc)
    assert mc["id"] == "tessera-models"


def test_builders_are_deterministic(make_tile: Callable[..., Any]) -> None:
    one = json.dumps(as_dict(create_item(make_tile())), sort_keys=True)
    two = json.dumps(as_dict(create_item(make_tile())), sort_keys=True)
    assert one == two
    a = as_dict(create_collection([create_item(make_tile())], "v1"))
    b = as_dict(create_collection([create_item(make_tile())], "v1"))
    assert a == b


def test_golden(items: list[pystac.Item], golden: Callable[[str, Any], None]) -> None:
    golden("item_grid_0.15_52.05_2024", as_dict(items[1]))
    golden("collection_v1", as_dict(create_collection(items, "v1")))
    model = create_model_item("v1")
    golden("model_item_v1", as_dict(model))
    golden("model_collection", as_dict(create_model_collection([model])))


def pystac_migrated(d: dict[str, Any]) -> dict[str, Any]:
    """What pystac's projection hook makes of a document it reads (``migrate=True``, its
    default): projection v1.2.0 becomes v2.0.0 and ``proj:epsg`` is dropped where
    ``proj:code`` says the same. Still valid: ``proj:code`` carries the CRS."""
    if c.PROJECTION_SCHEMA_URI not in d.get("stac_extensions", []):
        return d
    d = copy.deepcopy(d)
    exts = d["stac_extensions"]
    exts[exts.index(c.PROJECTION_SCHEMA_URI)] = pystac.extensions.projection.SCHEMA_URI
    for fields in [d["properties"], *d.get("assets", {}).values()]:
        if "proj:epsg" in fields:
            assert fields["proj:code"] == f"EPSG:{fields.pop('proj:epsg')}"
    return d


def test_pystac_round_trip_keeps_every_field(
    items: list[pystac.Item], stac_validate: Validate, tmp_path: Any
) -> None:
    objects: list[pystac.STACObject] = [
        items[0],
        create_collection(items, "v1"),
        create_model_item("v1"),
        create_model_collection([create_model_item("v1")]),
        create_root_catalog(["tessera-embeddings-v1", "tessera-models"]),
    ]
    for obj in objects:
        original = as_dict(obj)
        path = tmp_path / f"{obj.id}.json"
        path.write_text(json.dumps(original))
        # unmigrated, pystac keeps every field; migrated (its default), it rewrites only the
        # projection declaration (see pystac_migrated)
        unmigrated = type(obj).from_dict(copy.deepcopy(original), migrate=False)
        assert as_dict(unmigrated) == original, f"{obj.id}: fields lost or changed by pystac"
        read = type(obj).from_file(str(path))
        again = as_dict(read)
        original = pystac_migrated(original)
        assert again == original, f"{obj.id}: fields lost or changed by pystac"
        # modify with pystac + our extension, write, read: the change and the rest survive
        ext_target: Any = read
        if isinstance(read, pystac.Item) and SCHEMA_URI in read.stac_extensions:
            EmbeddingExtension.ext(read).normalized = True
        elif isinstance(read, pystac.Collection) and SCHEMA_URI in read.stac_extensions:
            EmbeddingExtension.ext(read).temporal_window = "P1Y"
        else:
            ext_target.extra_fields["note"] = "x"
        pystac.StacIO.default().save_json(str(path), as_dict(read))
        reread = as_dict(type(obj).from_file(str(path)))
        expected = copy.deepcopy(original)
        if isinstance(read, pystac.Item) and SCHEMA_URI in read.stac_extensions:
            expected["properties"]["embedding:normalized"] = True
        elif isinstance(read, pystac.Collection) and SCHEMA_URI in read.stac_extensions:
            expected["embedding:temporal_window"] = "P1Y"
        else:
            expected["note"] = "x"
        assert reread == expected
        if "note" not in expected:
            stac_validate(reread)


def test_extension_class_api(make_tile: Callable[..., Any]) -> None:
    item = create_item(make_tile())
    ext = EmbeddingExtension.ext(item)
    assert ext.type is EmbeddingType.PIXEL
    assert ext.dimensions == 128
    assert ext.model_name == "TESSERA" and ext.model_version == "v1"
    assert ext.normalized is False and ext.temporal_window == "P1Y"
    asset_ext = EmbeddingExtension.ext(item.assets["embeddings"])
    q = asset_ext.quantization
    assert q is not None and q.method is QuantizationMethod.PER_PIXEL_SCALE
    assert q.scale_asset == "scales" and q.nodata == -128
    assert q.scale_nodata is not None and q.scale_nodata != q.scale_nodata  # NaN
    # asset reads fall back to the item's fields
    assert asset_ext.dimensions == 128
    # round trip of every quantization kind through JSON
    for quant in (
        Quantization.signed_square(),
        Quantization.linear(0.5, -1.0, nodata=0, quantized_dtype="uint8"),
        Quantization.linear([0.1, 0.2], [0.0, 1.0]),
        Quantization.none(),
        q,
    ):
        again = Quantization.from_dict(json.loads(json.dumps(quant.to_dict())))
        assert again.to_dict() == quant.to_dict()
    # item_assets and collection variants
    coll = create_collection([item], "v1")
    defn = coll.item_assets["embeddings"]
    got = EmbeddingExtension.ext(defn).quantization
    assert got is not None and got.to_dict() == q.to_dict()
    EmbeddingExtension.ext(coll).dimensions = 128
    assert coll.extra_fields["embedding:dimensions"] == 128
    # not declared -> pystac's error unless add_if_missing
    bare = pystac.Item("x", None, None, item.datetime, {})
    with pytest.raises(pystac.ExtensionNotImplemented):
        EmbeddingExtension.ext(bare)
    EmbeddingExtension.ext(bare, add_if_missing=True).apply(EmbeddingType.CHIP, 64, "m", "1")
    assert SCHEMA_URI in bare.stac_extensions
    with pytest.raises(pystac.ExtensionTypeError):
        EmbeddingExtension.ext("nope")  # type: ignore[type-var]
    assert EmbeddingExtension.has_extension(item)
    assert pystac.EXTENSION_HOOKS.hooks[SCHEMA_URI].schema_uri == SCHEMA_URI


def test_schema_examples_are_builder_output(request: pytest.FixtureRequest) -> None:
    """schemas/examples/*.json are what the builders make of a realistic tile (regenerated
    with --update-golden), so the extension's documentation never drifts from the product."""
    from tessera_stac.catalog.embedding import schema_path
    from tests.fixtures_catalog import example_tile

    item = create_item(example_tile())
    built = {"item": as_dict(item), "collection": as_dict(create_collection([item], "v1"))}
    folder = schema_path().parent.parent / "examples"
    for name, obj in built.items():
        path = folder / f"{name}.json"
        if request.config.getoption("--update-golden"):
            path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
        assert json.loads(path.read_text()) == obj, f"{path} differs from the builders"
