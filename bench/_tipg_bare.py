"""tipg as it ships (``tipg.main``), for ``bench_features``: the reference serving the same
tables with no extras. Configured by the environment (``DATABASE_URL``, ``TIPG_DB_SCHEMAS``)."""

from __future__ import annotations

from typing import Any


def create_app() -> Any:
    """tipg's own application (its settings read from the environment at import)."""
    from tipg.main import app

    return app
