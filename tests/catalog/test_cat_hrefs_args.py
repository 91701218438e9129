"""One href resolver, no local paths published, one bbox/years parser, one root writer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tessera_stac.catalog.args import parse_bbox, parse_years
from tessera_stac.catalog.errors import InputError
from tessera_stac.catalog.hrefs import (
    is_public,
    resolve_href,
    scrub_local_paths,
    source_identity,
)
from tessera_stac.catalog.stac import create_item
from tessera_stac.catalog.static import put_collection, write_root
from tessera_stac.catalog.store import LocalStore


def test_resolve_href_against_paths_urls_and_s3() -> None:
    assert resolve_href("./a.tif", "/d/c/item.json") == "/d/c/a.tif"
    assert resolve_href("../x/a.tif", "s3://b/p/c/item.json") == "s3://b/p/x/a.tif"
    assert resolve_href("a.tif", "https://h/p/item.json") == "https://h/p/a.tif"
    assert resolve_href("https://o/a.tif", "/d/item.json") == "https://o/a.tif"
    assert resolve_href("../a.json", "file:///d/c/item.json") == "/d/a.json"
    assert resolve_href("a.tif", None) == "a.tif"


def test_reader_keeps_the_same_resolver() -> None:
    from tessera_stac.catalog import reader

    assert reader.resolve_href("../x/a.tif", "s3://b/p/c/i.json") == "s3://b/p/x/a.tif"


def test_public_and_source_identity() -> None:
    assert is_public("s3://b/k.npy") and is_public("https://h/k.npy")
    assert not is_public("/home/me/src/2024/grid_1/grid_1.npy")
    assert not is_public("file:///home/me/x.npy") and not is_public("rel/x.npy")
    assert source_identity("/home/me/src/2024/g/g.npy", "/home/me/src") == "2024/g/g.npy"
    assert source_identity("/elsewhere/g.npy", "/home/me/src") == "g.npy"
    assert source_identity("s3://b/npy/g.npy", "/home/me/src") == "s3://b/npy/g.npy"


def test_scrub_local_paths_keeps_urls_and_keys() -> None:
    report = {
        "dest": "/srv/pub",
        "item": "/srv/pub/c/2024/g/g_2024.json",
        "reason": "/home/u/src/2024/g/g.npy: bad scales; see https://h/a/b",
        "list": ["s3://b/k/x.npy", "2024/g/g.npy"],
        "n": 3,
    }
    out = scrub_local_paths(report, ["/srv/pub", "/home/u/src"])
    assert out == {
        "dest": ".",
        "item": "c/2024/g/g_2024.json",
        "reason": "2024/g/g.npy: bad scales; see https://h/a/b",
        "list": ["s3://b/k/x.npy", "2024/g/g.npy"],
        "n": 3,
    }
    assert scrub_local_paths("cannot read /tmp/x/y.npy") == "cannot read y.npy"


def test_via_links_only_for_public_sources() -> None:
    import dataclasses

    from tests.fixtures_catalog import example_tile

    local = dataclasses.replace(
        example_tile(), sources=("/home/me/data/2024/g/g.npy", "s3://t/npy/2024/g/g_scales.npy")
    )
    links = create_item(local).to_dict(transform_hrefs=False)["links"]
    via = [link["href"] for link in links if link["rel"] == "via"]
    assert via == ["s3://t/npy/2024/g/g_scales.npy"]
    assert "/home/" not in json.dumps(links)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("86,24.5,86.2,24.7", (86.0, 24.5, 86.2, 24.7)),
        ("-0.2,-0.1,0.1,0.1", (-0.2, -0.1, 0.1, 0.1)),
    ],
)
def test_parse_bbox(text: str, want: tuple[float, ...]) -> None:
    assert parse_bbox(text) == want
    assert parse_bbox(text, on_grid=True) == want


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,3", "four numbers"),
        ("a,b,c,d", "four numbers"),
        ("86.2,24.5,86,24.7", "W < E"),
        ("0,1,1,1", "S < N"),
        ("-181,0,0,1", "lon/lat bounds"),
    ],
)
def test_parse_bbox_rejects(text: str, message: str) -> None:
    with pytest.raises(InputError, match="--bbox") as info:
        parse_bbox(text)
    assert message in str(info.value)


def test_parse_bbox_on_grid() -> None:
    assert parse_bbox("86.05,24.5,86.2,24.7") == (86.05, 24.5, 86.2, 24.7)
    with pytest.raises(InputError, match=r"86\.05 is not on the 0\.1-degree tile grid"):
        parse_bbox("86.05,24.5,86.2,24.7", on_grid=True)


def test_parse_years() -> None:
    assert parse_years("2024") == (2024,)
    assert parse_years("2024, 2020") == (2020, 2024)
    assert parse_years("2017-2019,2024") == (2017, 2018, 2019, 2024)
    for bad in ("", "20x4", "2025-2020", ","):
        with pytest.raises(InputError, match="--years"):
            parse_years(bad)


def _collection(cid: str, title: str) -> dict[str, Any]:
    return {"type": "Collection", "id": cid, "title": title, "links": []}


def test_root_lists_every_collection_present(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    put_collection(store, _collection("corestack-mws", "MWS"), [])
    put_collection(store, _collection("tessera-embeddings-v1", "Embeddings"), [{"id": "a"}])
    (tmp_path / ".staging").mkdir()
    (tmp_path / ".staging" / "collection.json").write_text("{}")  # hidden: never listed
    root = json.loads((tmp_path / "catalog.json").read_text())
    children = {(x["href"], x.get("title")) for x in root["links"] if x["rel"] == "child"}
    assert children == {
        ("./corestack-mws/collection.json", "MWS"),
        ("./tessera-embeddings-v1/collection.json", "Embeddings"),
    }
    coll = json.loads((tmp_path / "tessera-embeddings-v1" / "collection.json").read_text())
    assert {"rel": "item", "href": "./a/a.json", "type": "application/geo+json"} in coll["links"]
    # a root built with absolute hrefs keeps its base when another command rewrites it
    write_root(store, "https://data.example.org/t")
    again = write_root(store)
    assert again["links"][0] == {
        "rel": "self",
        "href": "https://data.example.org/t/catalog.json",
        "type": "application/json",
    }
    assert {x["href"] for x in again["links"] if x["rel"] == "child"} == {
        "https://data.example.org/t/corestack-mws/collection.json",
        "https://data.example.org/t/tessera-embeddings-v1/collection.json",
    }
