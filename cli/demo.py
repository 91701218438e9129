"""``tessera-stac demo``: set up sample data end to end and serve it (see cli/demo_run.py)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import typer

from tessera_stac.cli.common import JSON_OPTION, emit

DEMO_HELP = "\n\n".join(
    [
        "Run the whole product on sample data, then serve it on 127.0.0.1.",
        "Starts the project-local database, generates synthetic TESSERA tiles and a "
        "micro-watershed layer over a CoRE Stack block (Tisri, Jharkhand), publishes them as "
        "COGs, builds the STAC catalog, loads pgSTAC, joins the embeddings to the watersheds, "
        "and serves the STAC API with STAC Browser at /browser/ until Ctrl-C. Every step "
        "prints the `tessera-stac` command it runs.",
        "A second run reuses what is done (recorded in DATA/demo-state.json) and serves in "
        "seconds.",
        "Examples:",
        "  tessera-stac demo  (everything, then serve on http://127.0.0.1:8080/)",
        "  tessera-stac demo --port 9000",
        "  tessera-stac demo --no-serve --json  (do the work, print the URLs and snippet, exit)",
    ]
)


def demo_cmd(
    data: Path = typer.Option(
        Path("demo-data"), "--data", help="Folder for the sample tiles, published files, state."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on."),
    port: int | None = typer.Option(
        None, "--port", help="Port to serve on (default: 8080, or a free one if 8080 is taken)."
    ),
    browser_dir: Path | None = typer.Option(
        None,
        "--browser-dir",
        help="STAC Browser build to serve at /browser/ (default: browser/dist, if built).",
    ),
    serve_it: bool = typer.Option(
        True, "--serve/--no-serve", help="Serve at the end (--no-serve: print the URLs and exit)."
    ),
    bbox: str = typer.Option(
        "86.0,24.5,86.2,24.7",
        "--bbox",
        help="Area W,S,E,N in degrees, 0.1-aligned (default: 4 tiles of the Tisri block).",
    ),
    year: int = typer.Option(2024, "--year", help="Embedding year to generate and join."),
    force: bool = typer.Option(False, "--force", help="Redo every step, even those done."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run the whole product on sample data, then serve it on 127.0.0.1."""
    from tessera_stac.api.settings import ApiSettings
    from tessera_stac.catalog.args import parse_bbox
    from tessera_stac.cli import demo_run as demo

    region = demo.DemoRegion(bbox=parse_bbox(bbox, on_grid=True), year=year)
    paths = demo.DemoPaths(data.absolute())
    held = demo.hold_port(host, port, ApiSettings().port)  # bound until it serves or exits
    try:
        chosen_port = demo.held_port(held)
        if browser_dir is not None and not (browser_dir / "index.html").is_file():
            from tessera_stac.catalog.errors import ConfigurationError

            raise ConfigurationError(f"no STAC Browser build in {browser_dir} (index.html missing)")
        browser = browser_dir or demo.DEFAULT_BROWSER_DIR
        # the (cached) STAC Browser build runs beside the steps; it is needed only to serve
        build = (
            demo.BrowserBuild(browser, paths.data / "browser-build.log")
            if browser_dir
            else demo.BrowserBuild.start(browser, paths.data / "browser-build.log")
        )
        # a wildcard address is not one a browser can open: show (and load hrefs with) loopback
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        base = f"http://{shown}:{chosen_port}"
        # with --json, stdout carries only the JSON summary: the steps' narration goes to stderr
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            dsn = demo.start_database()
            state = demo.DemoState.load(paths.state_file)
            steps = demo.demo_steps(region, paths, dsn, base)
            results = demo.run_steps(steps, state, force=force)
            browser_ok = build.wait()
        app = demo.build_app(dsn, paths.published, browser if browser_ok else None)
        routes = set(app.openapi().get("paths", {})) | ({"/browser/"} if browser_ok else set())
        if getattr(app.state, "features_app", None) is not None:
            routes.add("/features/")  # tipg, mounted (not in the API's own OpenAPI paths)
        links = demo.demo_links(base, dsn, region, routes, paths.published)
        summary = {
            "base_url": base,
            "urls": links.urls,
            "snippet": links.snippet,
            "steps": demo.describe(results),
            "serving": serve_it,
        }
        if not browser_ok:
            typer.echo("note: STAC Browser is not built (`make browser` builds it)", err=True)

        def announce() -> None:
            if as_json:
                emit(summary, True)
                return
            typer.echo(f"\nServing on {base}/ (Ctrl-C to stop):")
            demo.print_links(links)

        if not serve_it:
            if as_json:
                emit(summary, True)
            else:
                typer.echo("\nReady. Serve it with `tessera-stac demo` (or `tessera-stac serve`):")
                demo.print_links(links)
            return
        demo.serve(app, held, announce)
        typer.echo("stopped serving; the database keeps running (`tessera-stac db stop` stops it)")
    finally:
        held.close()  # uvicorn has closed it when it served; --no-serve and errors here


def register(app: typer.Typer) -> None:
    """Attach ``tessera-stac demo`` to the root CLI."""
    app.command("demo", help=DEMO_HELP)(demo_cmd)
