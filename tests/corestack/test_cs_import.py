"""corestack import: the real CoRE Stack sample (local and over HTTP) and synthetic defects."""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pystac
import pytest
from shapely.geometry import shape

from tessera_stac.catalog.errors import InputError
from tessera_stac.publisher.watersheds.corestack import read_corestack_catalog, write_import

EXPECTED_COLLECTIONS = {
    "corestack-odisha-koraput-koraput",
    "corestack-jharkhand-dumka-masalia",
    "corestack-uttar_pradesh-jaunpur-badlapur",
}


def _source_items(sample: Path) -> dict[str, dict[str, Any]]:
    """Every readable item file of the sample, by id (read independently of the importer)."""
    out = {}
    for path in sample.rglob("*.json"):
        if path.stat().st_size and json.loads(path.read_text())["type"] == "Feature":
            out[json.loads(path.read_text())["id"]] = json.loads(path.read_text())
    return out


def _empty_files(sample: Path) -> set[str]:
    return {p.stem for p in sample.rglob("*.json") if p.stat().st_size == 0}


@pytest.fixture(scope="module")
def imported(corestack_sample: Path) -> Any:
    return read_corestack_catalog(corestack_sample)


@pytest.mark.slow  # full STAC validation of ~600 kB block geometries: ~1 s an item
def test_real_sample_imports_completely(
    imported: Any, corestack_sample: Path, tmp_path: Path, stac_validate: Any
) -> None:
    source = _source_items(corestack_sample)
    assert {i["id"] for i in imported.items} == set(source)
    assert {c["id"] for c in imported.collections} == EXPECTED_COLLECTIONS
    for item in imported.items:
        orig = source[item["id"]]
        assert item["collection"] in EXPECTED_COLLECTIONS
        for key, value in orig["properties"].items():
            if value == "":  # STAC forbids empty title/description: removed, and reported
                assert key not in item["properties"]
                assert any(
                    d.object_id == item["id"] and d.kind == "empty-text" for d in imported.defects
                )
                continue
            assert item["properties"][key] == value, (item["id"], key)
        if orig["geometry"]["type"] == "GeometryCollection":  # repaired: not valid in STAC
            assert item["geometry"]["type"] == "MultiPolygon"
            assert shape(item["geometry"]).equals(shape(orig["geometry"]).buffer(0))
        else:
            assert item["geometry"] == orig["geometry"]
        removed = item["properties"].get("corestack:removed_assets", {})
        assert set(item["assets"]) | set(removed) == set(orig["assets"])
        for key, asset in item["assets"].items():
            assert asset["href"].startswith("https://"), asset["href"]
            assert {k: v for k, v in asset.items() if k != "href"} == {
                k: v for k, v in orig["assets"][key].items() if k != "href"
            }
        # a local source is never linked by its path: its key in the source tree is kept
        assert not any(link["rel"] == "via" for link in item["links"])
        source_key = item["properties"]["corestack:source"]
        assert not source_key.startswith("/") and source_key.endswith(f"/{item['id']}.json")
        assert (corestack_sample / source_key).is_file()
    # the block name decides the collection: uttar_pradesh_jaunpur_badlapur_* in its own
    by_coll = {c["id"]: {i["id"] for i in imported.items_of(c["id"])} for c in imported.collections}
    assert all(i.startswith("odisha_koraput_koraput_") for i in by_coll[sorted(by_coll)[1]])
    written = write_import(imported, tmp_path)
    assert len(written.written) == 3
    catalog = pystac.Catalog.from_file(str(tmp_path / "catalog.json"))
    items = list(catalog.get_items(recursive=True))
    assert sorted(i.id for i in items) == sorted(source)
    for coll_path in written.written:
        stac_validate(json.loads(coll_path.read_text()))
    # one item per (collection, geometry type) plus every item whose assets were repaired:
    # full-schema validation of the ~600 kB block geometries costs ~1 s per item
    picked: dict[tuple[str, str, bool], pystac.Item] = {}
    for item in items:
        repaired = "corestack:removed_assets" in item.properties
        picked.setdefault((item.collection_id or "", item.geometry["type"], repaired), item)
    assert {k[1] for k in picked} >= {"MultiPolygon", "Polygon", "MultiPoint"}
    for item in picked.values():
        stac_validate(item.to_dict(transform_hrefs=False))


@pytest.mark.slow  # reads and repairs the whole real sample
def test_defect_list_names_what_was_repaired(imported: Any, corestack_sample: Path) -> None:
    defects = [d.as_dict() for d in imported.defects]
    no_style = {
        item["id"]
        for item in _source_items(corestack_sample).values()
        if item["assets"].get("style", {}).get("href") == "./No style file "
    }
    assert len(no_style) == 7
    repaired_style = {
        d["id"]
        for d in defects
        if d["kind"] == "asset-href-placeholder" and "'style'" in d["detail"]
    }
    assert repaired_style == no_style
    for item in imported.items:
        if item["id"] in no_style:
            assert "style" not in item["assets"]
            assert item["properties"]["corestack:removed_assets"]["style"]["href"] == (
                "./No style file "
            )
    unreadable = {d["id"] for d in defects if d["kind"] == "unreadable"}
    assert unreadable == _empty_files(corestack_sample) and len(unreadable) == 2
    assert all(d["action"] == "skipped" for d in defects if d["kind"] == "unreadable")
    zero_extent = {d["id"] for d in defects if d["kind"] == "spatial-extent"}
    assert zero_extent == {"odisha", "jharkhand", "uttar_pradesh"}
    for coll in imported.collections:
        bbox = coll["extent"]["spatial"]["bbox"][0]
        assert bbox != [0, 0, 0, 0] and bbox[0] < bbox[2]
        for item in imported.items_of(coll["id"]):
            assert bbox[0] <= item["bbox"][0] and item["bbox"][2] <= bbox[2]
        start, end = coll["extent"]["temporal"]["interval"][0]
        assert all(
            start <= i["properties"]["datetime"] <= end for i in imported.items_of(coll["id"])
        )


@pytest.fixture
def served_sample(corestack_sample: Path) -> Iterator[str]:
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(corestack_sample)
    )
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/catalog.json"
    server.shutdown()
    server.server_close()


@pytest.mark.slow  # the whole real sample over HTTP
def test_import_over_http(served_sample: str, imported: Any) -> None:
    remote = read_corestack_catalog(served_sample)
    assert {i["id"] for i in remote.items} == {i["id"] for i in imported.items}
    base = served_sample.rsplit("/", 1)[0]
    for item in remote.items:
        via = next(link["href"] for link in item["links"] if link["rel"] == "via")
        assert via.startswith(base + "/") and via.endswith(f"/{item['id']}.json")
    kinds = sorted(d.kind for d in remote.defects)
    assert kinds == sorted(d.kind for d in imported.defects)


def _doc(kind: str, oid: str, links: list[tuple[str, str]], **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": kind,
        "id": oid,
        "stac_version": "1.1.0",
        "description": oid,
        "links": [{"rel": r, "href": h} for r, h in links],
    }
    if kind == "Collection":
        base |= {
            "license": "CC-BY-4.0",
            "extent": {
                "spatial": {"bbox": [[0, 0, 0, 0]]},
                "temporal": {"interval": [["2017-07-01T00:00:00Z", "2024-06-30T00:00:00Z"]]},
            },
        }
    return base | extra


def _item(oid: str, x: float, bbox: list[float] | None = None) -> dict[str, Any]:
    ring = [[x, 20.0], [x + 0.1, 20.0], [x + 0.1, 20.1], [x, 20.1], [x, 20.0]]
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": oid,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": bbox or [x, 20.0, x + 0.1, 20.1],
        "properties": {"datetime": "2023-01-01T00:00:00Z", "title": oid},
        "links": [{"rel": "parent", "href": "../catalog.json"}],
        "assets": {
            "data": {"href": "https://example.org/wfs?layer=" + oid, "roles": ["data"]},
            "style": {"href": "./missing.qml", "roles": ["metadata"]},
        },
    }


def _write(path: Path, data: dict[str, Any] | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


@pytest.fixture
def colliding_catalog(tmp_path: Path) -> Path:
    """Two states each with a block called 'sadar' (and a district 'sadar'): bare ids collide."""
    root = tmp_path / "src"
    _write(
        root / "catalog.json",
        _doc(
            "Catalog",
            "corestack_STAC",
            [("child", "./bihar/collection.json"), ("child", "./assam/collection.json")],
        ),
    )
    for i, state in enumerate(("bihar", "assam")):
        _write(
            root / state / "collection.json",
            _doc("Collection", state, [("child", "./sadar/catalog.json")]),
        )
        _write(
            root / state / "sadar" / "catalog.json",
            _doc("Catalog", "sadar", [("child", "./sadar/catalog.json")]),
        )
        iid = f"{state}_sadar_sadar_terrain_vector"
        links = [("item", f"./{iid}/{iid}.json")] + (
            [("item", "./broken/broken.json")] if i else []
        )
        _write(root / state / "sadar" / "sadar" / "catalog.json", _doc("Catalog", "sadar", links))
        _write(
            root / state / "sadar" / "sadar" / iid / f"{iid}.json",
            _item(iid, 80.0 + i, bbox=[0, 0, 1, 1] if i else None),
        )
    lone = "bihar_sadar_sadar_lulc_vector"
    _write(root / "bihar/sadar/sadar" / lone / f"{lone}.json", _item(lone, 80.2))  # unlinked
    _write(root / "assam/sadar/sadar/broken/broken.json", "{not json")
    return root


def test_colliding_block_names_and_synthetic_defects(
    colliding_catalog: Path, tmp_path: Path
) -> None:
    result = read_corestack_catalog(colliding_catalog)
    assert {c["id"] for c in result.collections} == {
        "corestack-bihar-sadar-sadar",
        "corestack-assam-sadar-sadar",
    }
    assert {i["id"] for i in result.items_of("corestack-bihar-sadar-sadar")} == {
        "bihar_sadar_sadar_terrain_vector",
        "bihar_sadar_sadar_lulc_vector",
    }
    kinds = {(d.kind, d.object_id, d.action) for d in result.defects}
    assert ("unlinked-item", "bihar_sadar_sadar_lulc_vector", "repaired") in kinds
    assert ("unreadable", "broken", "skipped") in kinds
    assert ("bbox", "assam_sadar_sadar_terrain_vector", "repaired") in kinds
    missing_style = {d.object_id for d in result.defects if d.kind == "asset-href-placeholder"}
    assert len(missing_style) == 3
    assam = result.items_of("corestack-assam-sadar-sadar")[0]
    assert assam["bbox"] == [81.0, 20.0, 81.1, 20.1]
    assert assam["properties"]["corestack:layer"] == "terrain_vector"
    write_import(result, tmp_path / "out")
    assert (tmp_path / "out/corestack-assam-sadar-sadar/collection.json").exists()


def test_unreadable_root_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no CoRE Stack catalog\.json"):
        read_corestack_catalog(tmp_path)
    (tmp_path / "catalog.json").write_text("")
    with pytest.raises(InputError, match="empty"):
        read_corestack_catalog(tmp_path)


@pytest.mark.slow  # the whole real sample through the CLI
def test_cli_import_json(corestack_sample: Path, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "tessera_stac.cli.main", "corestack", "import"]
    run = subprocess.run(
        [*cli, str(corestack_sample), "-o", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["items"] == 18 and set(data["collections"]) == EXPECTED_COLLECTIONS
    assert {d["kind"] for d in data["defects"]} >= {"unreadable", "asset-href-placeholder"}


def test_cli_strict_exits_1_when_a_document_was_skipped(
    colliding_catalog: Path, tmp_path: Path
) -> None:
    cli = [sys.executable, "-m", "tessera_stac.cli.main", "corestack", "import"]
    strict = subprocess.run(
        [*cli, str(colliding_catalog), "-o", str(tmp_path / "o"), "--strict"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert strict.returncode == 1
    assert "unreadable" in strict.stdout and "broken" in strict.stdout


def test_cli_import_load_into_pgstac(
    colliding_catalog: Path, tmp_path: Path, pg_dsn: str, count_items: Any
) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "TESSERA_STAC_"))}
    env["TESSERA_STAC_DATABASE_URL"] = pg_dsn
    cli = [sys.executable, "-m", "tessera_stac.cli.main", "corestack", "import"]
    run = subprocess.run(
        [*cli, str(colliding_catalog), "-o", str(tmp_path / "o"), "--load", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["loaded_items"] == 3
    assert count_items(pg_dsn) == {
        "corestack-bihar-sadar-sadar": 2,
        "corestack-assam-sadar-sadar": 1,
    }
