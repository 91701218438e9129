"""``tessera-stac classify train|map``: small heads on the embeddings, and their class maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tessera_stac.catalog.errors import InputError
from tessera_stac.cli.common import (
    ENGINE_OPTION,
    JSON_OPTION,
    SCHEDULER_OPTION,
    WORKERS_OPTION,
    emit,
    progress,
)

classify_app = typer.Typer(
    help="Train small heads on labels over the embeddings; map classes per pixel.",
    no_args_is_help=True,
)


def _colors(text: str | None) -> dict[str, str] | None:
    """``name=#rrggbb,name=#rrggbb`` -> dict (checked by the head)."""
    if not text:
        return None
    out: dict[str, str] = {}
    for part in text.split(","):
        name, sep, color = part.partition("=")
        if not sep:
            raise InputError(f"--colors: expected name=#rrggbb, got {part!r}")
        out[name.strip()] = color.strip()
    return out


@classify_app.command("train")
def train_cmd(
    labels: Path = typer.Argument(
        ..., help="Labels: GeoJSON, GeoPackage, GeoParquet or CSV (lon/lat); points or polygons."
    ),
    year: int = typer.Option(..., "--year", help="Year of the embeddings under the labels."),
    name: str = typer.Option(..., "--name", help="Head name (lowercase, digits, - or _)."),
    out: str = typer.Option(
        ..., "--out", help="The published catalog (folder or s3://bucket/prefix)."
    ),
    field: str = typer.Option("class", "--field", help="Property holding the class or value."),
    kind: str = typer.Option("logistic", "--kind", help="logistic (linear probe) or knn."),
    task: str = typer.Option(
        "auto", "--task", help="auto (numeric field: regression), classification, regression."
    ),
    k: int = typer.Option(5, "--k", help="Neighbours of a knn head."),
    c_value: float = typer.Option(1.0, "--c", help="Inverse regularisation (ridge: 1/alpha)."),
    block_size: float = typer.Option(
        1000.0, "--block-size", help="Side in metres of the spatial blocks of the blocked CV."
    ),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds."),
    seed: int = typer.Option(0, "--seed", help="Seed of folds, sampling and learning curve."),
    collection: str = typer.Option(None, "--collection", help="Embedding collection to read."),
    max_labels: int = typer.Option(50_000, "--max-labels", help="Refuse larger labels files."),
    colors: str = typer.Option(None, "--colors", help="Class colours: name=#rrggbb,..."),
    replace: bool = typer.Option(False, "--replace", help="Replace a head of the same name."),
    endpoint_url: str = typer.Option(None, help="S3 endpoint (S3-compatible services)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train a head on labels and publish it (MLM item, report, chart) in tessera-models.

    Accuracy is measured by random and by spatially blocked cross-validation (the headline).

    Example: ``tessera-stac classify train labels.geojson --year 2024 --name landcover
    --out published/``
    """
    from tessera_stac.catalog.store_settings import StorageSettings
    from tessera_stac.publisher.classify.train import TrainOptions, train

    options = TrainOptions(
        name=name,
        year=year,
        kind=kind,
        field=field,
        task=task,
        k=k,
        c=c_value,
        block_size_m=block_size,
        folds=folds,
        seed=seed,
        collection=collection,
        max_labels=max_labels,
        replace=replace,
    )
    overrides: dict[str, Any] = {"endpoint_url": endpoint_url} if endpoint_url else {}
    settings = StorageSettings(**overrides)
    result = train(labels, out, options, settings, colors=_colors(colors))
    report = result.report
    cv = report["cross_validation"]
    if report["task"] == "classification":
        score = (
            f"accuracy {cv['blocked']['accuracy']:.3f} (spatially blocked, "
            f"{cv['blocked']['blocks']} blocks of {block_size:g} m), "
            f"{cv['random']['accuracy']:.3f} (random)"
        )
    else:
        score = (
            f"R² {cv['blocked']['r2']:.3f} (spatially blocked), {cv['random']['r2']:.3f} (random)"
        )
    text = (
        f"trained {name} ({result.head.kind}, {report['labels']['vectors']} vectors from "
        f"{report['labels']['count']} labels): {score}\n"
        + "\n".join(f"wrote {key}" for key in result.written)
    )
    emit({"report": report, "written": result.written}, as_json, text)


@classify_app.command("map")
def map_cmd(
    name: str = typer.Argument(..., help="The head (tessera-models/NAME)."),
    year: int = typer.Option(..., "--year", help="Year of the embeddings to map."),
    out: str = typer.Option(
        ..., "--out", help="The published catalog (folder or s3://bucket/prefix)."
    ),
    grid: list[str] = typer.Option(None, "--grid", help="Only these cells (repeatable)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Remap tiles already mapped."),
    workers: int | None = WORKERS_OPTION,
    engine: str = ENGINE_OPTION,
    scheduler: str | None = SCHEDULER_OPTION,
    endpoint_url: str = typer.Option(None, help="S3 endpoint (S3-compatible services)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Apply a published head to every embedding tile of a year: class COGs + STAC items.

    One uint8 class COG (0 = nodata) and a probability COG per tile, on the tile's own grid,
    in the collection tessera-classes-NAME. Re-runs skip tiles already mapped by this head.
    Exit code 1 if any tile failed.

    Example: ``tessera-stac classify map landcover --year 2024 --out published/``
    """
    from tessera_stac.catalog.store_settings import StorageSettings
    from tessera_stac.publisher.classify.map import map_classes
    from tessera_stac.publisher.engines.local import open_engine

    overrides: dict[str, Any] = {"endpoint_url": endpoint_url} if endpoint_url else {}
    settings = StorageSettings(**overrides)
    with open_engine(engine, workers, scheduler) as eng, progress(None, "classify map") as bar:
        result = map_classes(
            name,
            year,
            out,
            engine=eng,
            settings=settings,
            overwrite=overwrite,
            grids=grid or None,
            on_done=lambda _outcome: bar.update(1),
        )
    totals = result.totals
    lines = [
        f"{totals['ok']} mapped, {totals['skipped']} skipped, {totals['failed']} failed "
        f"in {result.seconds:.1f} s -> {result.collection}",
        *(f"failed {o.item_id}: {o.reason}" for o in result.failed),
    ]
    if result.report_href:
        lines.append(f"report: {result.report_href}")
    emit(result.as_dict() | {"report": result.report_href}, as_json, "\n".join(lines))
    if result.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach ``classify`` to the root CLI."""
    app.add_typer(classify_app, name="classify")
