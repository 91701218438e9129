"""The ``tessera-stac`` command line.

Exit codes (documented in the README):

* 0 - success
* 1 - the work ran but some of it failed (a tile failed, a document is invalid)
* 2 - bad usage (unknown option, missing argument)
* 3 - an error the user can fix (bad input, missing PostgreSQL/PostGIS, port in use...)
* 4 - an unexpected internal error (a bug: rerun with ``--debug`` and report it)

Errors print as one line on stderr; ``--debug`` shows the full traceback.
"""

from __future__ import annotations

import sys
import traceback

import typer

from tessera_stac.catalog.errors import TesseraStacError
from tessera_stac.cli import catalog as cli_catalog
from tessera_stac.cli import classify as cli_classify
from tessera_stac.cli import corestack as cli_corestack
from tessera_stac.cli import db as cli_db
from tessera_stac.cli import demo as cli_demo
from tessera_stac.cli import publish as cli_publish
from tessera_stac.cli import scale as cli_scale
from tessera_stac.cli import serve as cli_serve
from tessera_stac.cli import years as cli_years
from tessera_stac.cli.common import state

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_USER_ERROR, EXIT_INTERNAL = 0, 1, 2, 3, 4

app = typer.Typer(
    name="tessera-stac",
    help="Publish TESSERA embeddings as COGs + STAC, load pgSTAC, serve them with CoRE Stack.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """Publish TESSERA embeddings as COGs + STAC, load pgSTAC, serve them with CoRE Stack."""
    state.debug = debug


cli_db.register(app)
cli_publish.register(app)
cli_catalog.register(app)
cli_serve.register(app)
cli_corestack.register(app)
cli_scale.register(app)
cli_demo.register(app)
cli_years.register(app)
cli_classify.register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; errors become one line on stderr and a documented exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        result = app(args=argv, standalone_mode=False)
    except TesseraStacError as exc:
        if debug:
            traceback.print_exc()
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # the CLI's last line of defence: one line, not a traceback
        # typer vendors click: recognise its usage errors by shape, not by class
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(getattr(exc, "exit_code", None), int):
            show()
            return int(exc.exit_code)  # type: ignore[attr-defined]
        if debug:
            traceback.print_exc()
        typer.echo(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)", err=True)
        return EXIT_INTERNAL
    # with standalone_mode=False click returns typer.Exit's code instead of raising
    return result if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
