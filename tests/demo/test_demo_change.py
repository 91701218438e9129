"""The demo's two years: its "changed most" ranking starts with the watersheds inside the area
whose land it changed on purpose (the demo's own steps, without the database)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import shapely

from tessera_stac.cli.demo_run import DemoPaths, DemoRegion, DemoState, demo_steps, run_steps


def test_changed_most_ranking_starts_inside_the_changed_area(tmp_path: Path) -> None:
    region = DemoRegion(bbox=(86.0, 24.5, 86.1, 24.6), year=2024)
    paths = DemoPaths(tmp_path / "data")
    steps = demo_steps(region, paths, "postgresql://unused", "http://127.0.0.1:9")
    names = [s.name for s in steps]
    assert {"join-previous", "join", "change"} <= set(names)
    steps = [s for s in steps if s.name != "load"]  # no database here
    results = run_steps(steps, DemoState.load(paths.state_file))
    assert all(r.status == "done" for r in results), results
    assert len(list(paths.published.glob("tessera-embeddings-*/*/*/*.json"))) == 2  # 2 years
    (table_path,) = (paths.published / "corestack-mws-change").rglob("*.parquet")
    table = gpd.read_parquet(table_path)
    box = gpd.GeoSeries([shapely.box(*region.change_bbox)], crs=4326).to_crs(32645)[0]
    local = table.geometry.to_crs(32645)  # areas in metres (UTM 45N holds the demo block)
    share_inside = local.intersection(box).area / local.area
    inside = set(table.loc[share_inside > 0.5, "uid"])
    assert inside and len(inside) < len(table)
    ranked = table.sort_values("distance", ascending=False)["uid"].tolist()
    assert set(ranked[: len(inside)]) == inside
    # and the changed ones moved far, the others little
    by_uid = table.set_index("uid")
    assert by_uid.loc[list(inside), "changed_share"].min() > 0.5
    assert (
        by_uid.loc[ranked[len(inside) :], "distance"].max()
        < by_uid.loc[list(inside), "distance"].min()
    )
    # the land-cover steps: a head trained on the sample's labels, class maps of both years,
    # hectares per class per watershed and the change; one watershed's numbers for people
    from tessera_stac.cli.demo_run import HEAD_NAME, watershed_hectares

    names = {r.name for r in results}
    assert {"train", "map-previous", "map", "classes"} <= names
    found = watershed_hectares(paths.published, region.year)
    assert found is not None
    uid, lines = found
    assert uid in set(table["uid"]) and len(lines) >= 2
    percents = [float(line.split("(")[1].split(" %")[0]) for line in lines]
    assert abs(sum(percents) - 100) < 0.5
    (annual,) = (paths.published / "corestack-mws-classes").rglob("*_annual.json")
    assert f"_classes_{HEAD_NAME}_" in annual.name
