"""Helpers shared by the CLI modules: global flags, JSON output, progress bars."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import typer


@dataclass
class _State:
    debug: bool = False


state = _State()

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


def emit(data: Any, as_json: bool, text: str | None = None) -> None:
    """Print ``data`` as JSON (``--json``) or ``text`` for people."""
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        typer.echo(text if text is not None else str(data))


def progress(total: int | None, desc: str, disable: bool = False) -> Any:
    """A tqdm progress bar on stderr (hidden when not a terminal unless forced)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="it", file=sys.stderr, disable=disable, leave=False)


#: ``--engine`` of every command that runs per-tile work (publish, join): one default for all
ENGINE_OPTION = typer.Option(
    "process",
    "--engine",
    help="Where per-tile work runs: serial (this process), process (a local process pool) or "
    "dask (Dask distributed: a local cluster, or the one at --scheduler).",
)
SCHEDULER_OPTION = typer.Option(
    None,
    "--scheduler",
    envvar="DASK_SCHEDULER_ADDRESS",
    help="Dask scheduler tcp://host:port (implies --engine dask; env DASK_SCHEDULER_ADDRESS).",
)
WORKERS_OPTION = typer.Option(
    None, "--workers", "-w", help="Local worker processes (default: all cores)."
)
