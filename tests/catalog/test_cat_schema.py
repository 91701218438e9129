"""The embedding extension's JSON schema: examples, required fields, types, unknown keys."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tessera_stac.catalog.embedding import SCHEMA_URI, schema_path

EXAMPLES = Path(schema_path()).parent.parent / "examples"
Errors = Callable[[dict[str, Any]], list[Any]]


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return data


def messages(errors: list[Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def test_schema_identity(our_schema: dict[str, Any]) -> None:
    assert our_schema["$id"] == SCHEMA_URI
    assert SCHEMA_URI.endswith("/v1.0.0/schema.json")
    text = json.dumps(our_schema)
    # never pinned to a core STAC schema version
    assert "schemas.stacspec.org" not in text
    assert '"oneOf":' not in text


@pytest.mark.parametrize("name", ["item", "collection"])
def test_examples_valid_against_our_schema(name: str, schema_errors: Errors) -> None:
    assert messages(schema_errors(example(name))) == []


@pytest.mark.parametrize("name", ["item", "collection"])
def test_examples_valid_against_core_and_all_extensions(
    name: str, stac_validate: Callable[[dict[str, Any]], None]
) -> None:
    obj = example(name)
    assert obj["stac_version"] == "1.1.0"
    assert SCHEMA_URI in obj["stac_extensions"]
    stac_validate(obj)


ITEM_REQUIRED = [
    "embedding:type",
    "embedding:dimensions",
    "embedding:model_name",
    "embedding:model_version",
]


@pytest.mark.parametrize("field", ITEM_REQUIRED)
def test_item_required_field_missing(field: str, schema_errors: Errors) -> None:
    item = example("item")
    del item["properties"][field]
    msgs = messages(schema_errors(item))
    assert msgs == [f"properties: '{field}' is a required property"]


def test_embeddings_asset_requires_quantization(schema_errors: Errors) -> None:
    item = example("item")
    del item["assets"]["embeddings"]["embedding:quantization"]
    assert messages(schema_errors(item)) == [
        "assets/embeddings: 'embedding:quantization' is a required property"
    ]


@pytest.mark.parametrize("field", ["method", "scope", "dtype", "nodata"])
def test_quantization_required_fields(field: str, schema_errors: Errors) -> None:
    item = example("item")
    del item["assets"]["embeddings"]["embedding:quantization"][field]
    msgs = messages(schema_errors(item))
    assert f"assets/embeddings/embedding:quantization: '{field}' is a required property" in msgs


@pytest.mark.parametrize("field", ["scale_asset", "scale_nodata"])
def test_per_pixel_scale_required_fields(field: str, schema_errors: Errors) -> None:
    item = example("item")
    del item["assets"]["embeddings"]["embedding:quantization"][field]
    assert messages(schema_errors(item)) == [
        f"assets/embeddings/embedding:quantization: '{field}' is a required property"
    ]


def quant_item(q: dict[str, Any]) -> dict[str, Any]:
    item = example("item")
    item["assets"]["embeddings"]["embedding:quantization"] = q
    return item


LINEAR = {"method": "linear", "scope": "global", "dtype": "float32", "nodata": None,
          "scale": 0.01, "offset": -1.0}  # fmt: skip
SIGNED_SQUARE = {"method": "signed-square", "scope": "global", "dtype": "float32",
                 "nodata": -128, "divisor": 127.5, "exponent": 2}  # fmt: skip


@pytest.mark.parametrize(
    ("q", "field"),
    [
        (LINEAR, "scale"),
        (LINEAR, "offset"),
        (SIGNED_SQUARE, "divisor"),
        (SIGNED_SQUARE, "exponent"),
    ],
)
def test_method_required_fields(q: dict[str, Any], field: str, schema_errors: Errors) -> None:
    assert messages(schema_errors(quant_item(q))) == []
    broken = copy.deepcopy(q)
    del broken[field]
    assert messages(schema_errors(quant_item(broken))) == [
        f"assets/embeddings/embedding:quantization: '{field}' is a required property"
    ]


def test_chip_requires_chip_size(schema_errors: Errors) -> None:
    item = example("item")
    item["properties"]["embedding:type"] = "chip"
    assert messages(schema_errors(item)) == [
        "properties: 'embedding:chip_size' is a required property"
    ]
    item["properties"]["embedding:chip_size"] = [16, 16]
    assert messages(schema_errors(item)) == []


def test_extension_must_be_declared(schema_errors: Errors) -> None:
    item = example("item")
    item["stac_extensions"].remove(SCHEMA_URI)
    msgs = messages(schema_errors(item))
    assert len(msgs) == 1 and msgs[0].startswith("stac_extensions: ")
    assert "are valid under the given schema" in msgs[0]


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("embedding:type", "voxel", "'voxel' is not one of ['pixel', 'chip']"),
        ("embedding:dimensions", "128", "'128' is not of type 'integer'"),
        ("embedding:dimensions", 0, "0 is less than the minimum of 1"),
        ("embedding:model_name", 7, "7 is not of type 'string'"),
        ("embedding:temporal_window", "one year", "does not match"),
        ("embedding:similarity", "jaccard", "'jaccard' is not one of"),
        ("embedding:normalized", "no", "'no' is not of type 'boolean'"),
    ],
)
def test_wrong_types_fail(field: str, value: Any, fragment: str, schema_errors: Errors) -> None:
    item = example("item")
    item["properties"][field] = value
    msgs = messages(schema_errors(item))
    assert len(msgs) == 1, msgs
    assert msgs[0].startswith(f"properties/{field}: ") and fragment in msgs[0]


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"method": "log"}, "'log' is not one of"),
        ({"scope": "band"}, "'pixel' was expected"),
        ({"dtype": "int8"}, "'int8' is not one of"),
        ({"scale": 0.5}, "False schema does not allow 0.5"),
        ({"scale_nodata": "missing"}, "is not valid under any of the given schemas"),
        ({"scale_band": 0}, "0 is less than the minimum of 1"),
        ({"color": "red"}, "Additional properties are not allowed ('color' was unexpected)"),
    ],
)
def test_quantization_wrong_values_fail(
    patch: dict[str, Any], fragment: str, schema_errors: Errors
) -> None:
    item = example("item")
    item["assets"]["embeddings"]["embedding:quantization"].update(patch)
    msgs = messages(schema_errors(item))
    assert msgs, "expected an error"
    assert any(fragment in m for m in msgs), msgs
    assert all(m.startswith("assets/embeddings/embedding:quantization") for m in msgs), msgs


def test_linear_band_scope_needs_arrays(schema_errors: Errors) -> None:
    q = {**LINEAR, "scope": "band"}
    msgs = messages(schema_errors(quant_item(q)))
    assert "assets/embeddings/embedding:quantization/scale: 0.01 is not of type 'array'" in msgs
    q.update(scale=[0.1] * 128, offset=[0.0] * 128)
    assert messages(schema_errors(quant_item(q))) == []


@pytest.mark.parametrize("where", ["properties", "asset", "item_assets", "collection", "summaries"])
def test_unknown_prefixed_key_fails_everywhere(where: str, schema_errors: Errors) -> None:
    if where in ("properties", "asset"):
        obj = example("item")
        target = obj["properties"] if where == "properties" else obj["assets"]["scales"]
    else:
        obj = example("collection")
        target = {
            "item_assets": obj["item_assets"]["scales"],
            "collection": obj,
            "summaries": obj["summaries"],
        }[where]
    target["embedding:colour"] = "blue"
    msgs = messages(schema_errors(obj))
    assert len(msgs) == 1, msgs
    assert "'embedding:colour' does not match any of the regexes" in msgs[0]


def test_quantization_on_asset_item_assets_and_collection(
    schema_errors: Errors, stac_validate: Callable[[dict[str, Any]], None]
) -> None:
    item = example("item")
    assert "embedding:quantization" in item["assets"]["embeddings"]
    coll = example("collection")
    assert "embedding:quantization" in coll["item_assets"]["embeddings"]
    q = coll["item_assets"]["embeddings"]["embedding:quantization"]
    coll["embedding:quantization"] = q
    coll["summaries"]["embedding:quantization"] = [q, SIGNED_SQUARE]
    assert messages(schema_errors(coll)) == []
    stac_validate(coll)
    # item-level quantization (applies to every embeddings asset) is allowed too
    item["properties"]["embedding:quantization"] = SIGNED_SQUARE
    assert messages(schema_errors(item)) == []
    stac_validate(item)
    # and a wrong one there is caught
    item["properties"]["embedding:quantization"] = {**SIGNED_SQUARE, "scope": "pixel"}
    assert messages(schema_errors(item)) == [
        "properties/embedding:quantization/scope: 'global' was expected"
    ]


def test_stac_11_item_with_core_bands_passes(
    stac_validate: Callable[[dict[str, Any]], None],
) -> None:
    item = example("item")
    assert item["stac_version"] == "1.1.0"
    assert len(item["assets"]["embeddings"]["bands"]) == 128
    stac_validate(item)


def test_full_validation_rejects_bad_field(stac_validate: Callable[[dict[str, Any]], None]) -> None:
    import pystac

    item = example("item")
    item["properties"]["embedding:dimensions"] = -1
    with pytest.raises(pystac.STACValidationError, match="embedding"):
        stac_validate(item)


def test_summaries_values_checked(schema_errors: Errors) -> None:
    coll = example("collection")
    coll["summaries"]["embedding:type"] = ["pixel", "voxel"]
    msgs = messages(schema_errors(coll))
    assert msgs and all(m.startswith("summaries/embedding:type") for m in msgs)


def test_item_level_quantization_covers_assets(schema_errors: Errors) -> None:
    item = example("item")
    q = item["assets"]["embeddings"].pop("embedding:quantization")
    assert messages(schema_errors(item)) == [
        "assets/embeddings: 'embedding:quantization' is a required property"
    ]
    item["properties"]["embedding:quantization"] = q
    assert messages(schema_errors(item)) == []


def test_item_assets_need_quantization_unless_collection_has_it(schema_errors: Errors) -> None:
    coll = example("collection")
    q = coll["item_assets"]["embeddings"].pop("embedding:quantization")
    assert messages(schema_errors(coll)) == [
        "item_assets/embeddings: 'embedding:quantization' is a required property"
    ]
    coll["embedding:quantization"] = q
    assert messages(schema_errors(coll)) == []
