"""Serving a built STAC Browser beside the API (the newcomer issue fills this in)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI


def mount_browser(app: FastAPI, directory: Path) -> None:
    """Serve the STAC Browser build in ``directory`` under ``/browser``."""
