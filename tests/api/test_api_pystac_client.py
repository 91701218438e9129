"""pystac-client against the live API: bbox, datetime, CQL2 filters, sortby, fields.

Every answer is compared with the set computed from the items that were loaded, not just
checked for being non-empty.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tessera_stac.api.app import create_app
from tessera_stac.api.settings import ApiSettings
from tessera_stac.catalog.pgstac.load import load
from tests.fixtures_api import EMB_COLLECTION, make_collection, make_item

LiveApi = Callable[[Any], str]


def _intersects(bbox: list[float], other: list[float]) -> bool:
    return not (
        bbox[2] < other[0] or bbox[0] > other[2] or bbox[3] < other[1] or bbox[1] > other[3]
    )


@pytest.fixture
def published(pg_dsn: str, live_api: LiveApi, tmp_path: Path) -> tuple[Any, list[dict[str, Any]]]:
    """12 items (3x2 cells either side of 72°E, 2023 and 2024), some with 64 dimensions."""
    from pystac_client import Client

    items = []
    for year in (2023, 2024):
        for i, lon in enumerate((71.85, 71.95, 72.05)):
            for j, lat in enumerate((23.05, 23.15)):
                item = make_item(lon, lat, year, collection_id=EMB_COLLECTION)
                if (i + j + year) % 3 == 0:
                    item["properties"]["embedding:dimensions"] = 64
                items.append(item)
    source = tmp_path / "items.ndjson"
    lines = [make_collection(EMB_COLLECTION), *items]
    source.write_text("".join(json.dumps(o) + "\n" for o in lines))
    load(pg_dsn, str(source))
    url = live_api(create_app(ApiSettings(), pg_dsn))
    return Client.open(url), items


def ids(found: Any) -> set[str]:
    return {item.id for item in found.items()}


def test_bbox_and_datetime(published: tuple[Any, list[dict[str, Any]]]) -> None:
    client, items = published
    bbox = [71.92, 23.02, 72.02, 23.08]
    expected = {i["id"] for i in items if _intersects(i["bbox"], bbox)}
    assert ids(client.search(collections=[EMB_COLLECTION], bbox=bbox)) == expected
    assert len(expected) == 4  # 2 cells x 2 years
    y2024 = {i["id"] for i in items if i["properties"]["datetime"].startswith("2024")}
    assert ids(client.search(collections=[EMB_COLLECTION], datetime="2024")) == y2024
    both = ids(client.search(collections=[EMB_COLLECTION], bbox=bbox, datetime="2024"))
    assert both == expected & y2024 and len(both) == 2


@pytest.mark.parametrize("lang", ["cql2-json", "cql2-text"])
def test_cql2_filters_on_extension_fields_and_proj_code(
    published: tuple[Any, list[dict[str, Any]]], lang: str
) -> None:
    client, items = published
    numeric = (
        {"op": ">", "args": [{"property": "embedding:dimensions"}, 100]}
        if lang == "cql2-json"
        else '"embedding:dimensions" > 100'
    )
    expected = {i["id"] for i in items if i["properties"]["embedding:dimensions"] > 100}
    assert 0 < len(expected) < len(items)
    method = "POST" if lang == "cql2-json" else "GET"  # cql2-text is a GET encoding
    found = client.search(
        collections=[EMB_COLLECTION], filter=numeric, filter_lang=lang, method=method
    )
    assert ids(found) == expected
    proj = (
        {"op": "=", "args": [{"property": "proj:code"}, "EPSG:32643"]}
        if lang == "cql2-json"
        else "\"proj:code\" = 'EPSG:32643'"
    )
    zone43 = {i["id"] for i in items if i["properties"]["proj:code"] == "EPSG:32643"}
    assert 0 < len(zone43) < len(items)
    found = client.search(
        collections=[EMB_COLLECTION], filter=proj, filter_lang=lang, method=method
    )
    assert ids(found) == zone43
    version = (
        {"op": "=", "args": [{"property": "embedding:model_version"}, "v1"]}
        if lang == "cql2-json"
        else "\"embedding:model_version\" = 'v1'"
    )
    found = client.search(
        collections=[EMB_COLLECTION], filter=version, filter_lang=lang, method=method
    )
    assert ids(found) == {i["id"] for i in items}


def test_sortby_and_fields(published: tuple[Any, list[dict[str, Any]]]) -> None:
    client, items = published
    found = list(
        client.search(
            collections=[EMB_COLLECTION],
            sortby=[
                {"field": "properties.datetime", "direction": "desc"},
                {"field": "id", "direction": "asc"},
            ],
        ).items()
    )
    expected = sorted(items, key=lambda i: i["id"])
    expected = sorted(expected, key=lambda i: i["properties"]["datetime"], reverse=True)
    assert [i.id for i in found] == [i["id"] for i in expected]
    by_id = list(client.search(collections=[EMB_COLLECTION], sortby="-id", max_items=5).items())
    assert [i.id for i in by_id] == sorted((i["id"] for i in items), reverse=True)[:5]

    slim = client.search(
        collections=[EMB_COLLECTION],
        fields={"include": ["id", "properties.proj:code"], "exclude": ["assets"]},
        max_items=3,
    ).item_collection_as_dict()
    for feature in slim["features"]:
        assert set(feature["properties"]) == {"proj:code"}
        assert "assets" not in feature and "geometry" not in feature
        source = next(i for i in items if i["id"] == feature["id"])
        assert feature["properties"]["proj:code"] == source["properties"]["proj:code"]


def test_queryables_are_typed(published: tuple[Any, list[dict[str, Any]]]) -> None:
    client, _ = published
    queryables = client.get_merged_queryables([EMB_COLLECTION])["properties"]
    assert queryables["embedding:dimensions"]["type"] == "integer"
    assert queryables["proj:code"]["type"] == "string"
    assert queryables["embedding:normalized"]["type"] == "boolean"
