"""The demo's two years: its "changed most" ranking starts with the watersheds inside the area
whose land it changed on purpose (what the demo's own steps published: the session's
``demo_run``, shared with the end-to-end tests, so the demo runs once per session)."""

from __future__ import annotations

import geopandas as gpd
import pytest
import shapely

from tessera_stac.cli.demo_run import DemoPaths, DemoRegion
from tests.fixtures_demo import BBOX, YEAR, DemoRun

pytestmark = pytest.mark.slow


def test_changed_most_ranking_starts_inside_the_changed_area(demo_run: DemoRun) -> None:
    region = DemoRegion(bbox=tuple(float(v) for v in BBOX.split(",")), year=int(YEAR))  # type: ignore[arg-type]
    paths = DemoPaths(demo_run.data)
    steps = demo_run.steps()
    assert {"join-previous", "join", "change"} <= set(steps)
    demo_run.require_pipeline()
    assert all(status == "done" for status in steps.values()), steps
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

    assert {"train", "map-previous", "map", "classes"} <= set(steps)
    found = watershed_hectares(paths.published, region.year)
    assert found is not None
    uid, lines = found
    assert uid in set(table["uid"]) and len(lines) >= 2
    percents = [float(line.split("(")[1].split(" %")[0]) for line in lines]
    assert abs(sum(percents) - 100) < 0.5
    (annual,) = (paths.published / "corestack-mws-classes").rglob("*_annual.json")
    assert f"_classes_{HEAD_NAME}_" in annual.name
