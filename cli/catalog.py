"""``tessera-stac catalog build DEST`` and ``tessera-stac validate PATH|URL...``."""

from __future__ import annotations

from pathlib import Path

import typer

from tessera_stac.catalog.errors import InputError
from tessera_stac.cli.common import JSON_OPTION, emit, progress

catalog_app = typer.Typer(
    help="Build the static STAC catalog around published items.", no_args_is_help=True
)


HREF_BASE_HELP = (
    "Public URL of DEST (e.g. https://data.example.org/tessera): write absolute hrefs and "
    "self links. Default: relative hrefs."
)


@catalog_app.command("build")
def build(
    dest: str = typer.Argument(
        ..., help="Published tree: a local directory or s3://bucket/prefix."
    ),
    href_base: str | None = typer.Option(None, "--href-base", help=HREF_BASE_HELP),
    geoparquet: bool = typer.Option(
        True, "--geoparquet/--no-geoparquet", help="Write {collection}/items.parquet."
    ),
    item_links: bool = typer.Option(
        True,
        "--item-links/--no-item-links",
        help="List every item in its collection (turn off for very large collections).",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write catalog.json, collections, the model item and geoparquet indexes under DEST.

    Walks the item JSONs the publisher wrote ({collection}/{year}/{grid}/{item}.json), builds
    one collection per folder (one model version each), the tessera-models collection with
    the MLM model item, and the root catalog.json (written last). Every object is written
    atomically. Exit code 1 when some item could not be used (listed in the output).

    Example: tessera-stac catalog build ./published --href-base https://example.org/tessera
    """
    from tessera_stac.catalog.static import build_static_catalog
    from tessera_stac.catalog.store import is_s3, open_store
    from tessera_stac.catalog.store_settings import StorageSettings

    if href_base and not href_base.startswith(("http://", "https://", "s3://")):
        raise InputError(f"--href-base must be an http(s):// or s3:// URL, got {href_base!r}")
    if not is_s3(dest) and not Path(dest).is_dir():
        raise InputError(f"{dest}: no such directory")
    store = open_store(dest, StorageSettings())
    with progress(None, "items") as bar:
        report = build_static_catalog(
            store, href_base, geoparquet, progress=bar.update, item_links=item_links
        )
    if not report.collections and not report.problems:
        raise InputError(
            f"{dest}: no item JSONs in the layout {{collection}}/{{year}}/{{grid}}/{{item}}.json "
            "(publish tiles there first: tessera-stac publish SOURCE DEST)"
        )
    lines = [f"{cid}: {n} items" for cid, n in sorted(report.collections.items())]
    lines.append(f"wrote {len(report.written)} objects under {dest}")
    lines += [f"skipped {p.key}: {p.message}" for p in report.problems]
    emit(report.to_dict(), as_json, "\n".join(lines))
    if not report.ok:
        raise typer.Exit(1)


def validate(
    targets: list[str] = typer.Argument(..., help="STAC JSON files, http(s) or s3:// URLs."),
    schema_dir: Path | None = typer.Option(
        None,
        "--schema-dir",
        help="Mirror of published schemas laid out as <host>/<path> "
        "(e.g. ../shared/stac-schemas); looked up before the network.",
    ),
    offline: bool = typer.Option(False, "--offline", help="Never fetch schemas over the network."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Follow child and item links."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Validate STAC JSON against core STAC and every extension it declares.

    Our embedding extension's schema is bundled; others come from --schema-dir or the
    network. Each error is printed with its JSON path. Exit code: 0 all valid, 1 some
    invalid, 3 some document or schema unreadable.

    Example: tessera-stac validate published/catalog.json -r --schema-dir ../shared/stac-schemas
    """
    from tessera_stac.catalog.validate import StacValidator

    if schema_dir is not None and not schema_dir.is_dir():
        raise InputError(f"--schema-dir {schema_dir}: no such directory")
    validator = StacValidator(schema_dir=schema_dir, offline=offline)
    results = []
    for target in targets:
        results.extend(validator.validate_target(target, recursive=recursive))
    lines = []
    for r in results:
        if r.status == "error" and not as_json:
            # an unreadable document is an error of the run, not a validation report
            typer.echo(f"error: {r.target}: {r.message}", err=True)
            continue
        what = f"{r.stac_type or '?'} {r.object_id}" if r.object_id else (r.stac_type or "")
        lines.append(f"{r.status.upper()}: {r.target} {what}".rstrip())
        if r.message:
            lines.append(f"  {r.message}")
        lines += [f"  {e}" for e in r.errors]
    if as_json or lines:
        emit([r.to_dict() for r in results], as_json, "\n".join(lines))
    if any(r.status == "error" for r in results):
        raise typer.Exit(3)
    if any(r.status == "invalid" for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Attach ``catalog build`` and ``validate`` to the root CLI."""
    app.add_typer(catalog_app, name="catalog")
    app.command("validate")(validate)
