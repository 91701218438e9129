"""The demo's step runner: skip what is done, redo what vanished and everything after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera_stac.catalog.args import parse_bbox as parse_any_bbox
from tessera_stac.catalog.errors import InputError
from tessera_stac.cli.demo_run import DemoRegion, DemoState, Step, run_steps


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    return parse_any_bbox(text, on_grid=True)


def _steps(folder: Path, calls: list[str]) -> list[Step]:
    def make(name: str) -> Step:
        target = folder / name

        def action() -> str:
            calls.append(name)
            target.write_text(name)
            return f"wrote {name}"

        return Step(name, f"make {name}", outputs=target.is_file, action=action)

    return [make("a"), make("b"), make("c"), Step("x", "needs a missing command", needs=("nope",))]


def test_second_run_skips_and_vanished_outputs_rerun(tmp_path: Path) -> None:
    calls: list[str] = []
    state_file = tmp_path / "state.json"
    first = run_steps(_steps(tmp_path, calls), DemoState.load(state_file))
    assert [r.status for r in first] == ["done", "done", "done", "unavailable"]
    assert calls == ["a", "b", "c"]

    calls.clear()
    second = run_steps(_steps(tmp_path, calls), DemoState.load(state_file))
    assert [r.status for r in second] == ["skipped", "skipped", "skipped", "unavailable"]
    assert calls == []

    (tmp_path / "b").unlink()  # b's output vanished: b and everything after it run again
    third = run_steps(_steps(tmp_path, calls), DemoState.load(state_file))
    assert [r.status for r in third] == ["skipped", "done", "done", "unavailable"]
    assert calls == ["b", "c"]

    calls.clear()
    forced = run_steps(_steps(tmp_path, calls), DemoState.load(state_file), force=True)
    assert calls == ["a", "b", "c"] and forced[0].status == "done"


def test_changed_command_line_reruns(tmp_path: Path) -> None:
    state = DemoState.load(tmp_path / "state.json")
    step = Step("load", "load", outputs=lambda: True, action=lambda: "")
    state.mark(step)
    changed = Step("load", "load", args=("load", "--base-url", "http://127.0.0.1:9/data"))
    assert DemoState.load(tmp_path / "state.json").done["load"] == step.key != changed.key


def test_corrupt_state_file_means_nothing_done(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    assert DemoState.load(path).done == {}


def test_bbox_parsing() -> None:
    assert parse_bbox("86,24.5,86.2,24.7") == (86.0, 24.5, 86.2, 24.7)
    assert DemoRegion(bbox=parse_bbox("86,24.5,86.2,24.7")).tile_count == 4
    assert DemoRegion(bbox=parse_bbox("-0.2,-0.1,0.1,0.1")).tile_count == 6
    for bad in ("1,2,3", "a,b,c,d", "86.2,24.5,86,24.7", "86.05,24.5,86.2,24.7"):
        with pytest.raises(InputError, match="--bbox"):
            parse_bbox(bad)
