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
    box = shapely.box(*region.change_bbox)
    share_inside = table.geometry.intersection(box).area / table.geometry.area
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
