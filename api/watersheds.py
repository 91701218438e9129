"""Micro-watershed routes (CoRE Stack issue): per-MWS mean vectors and similar watersheds.

``router`` is mounted by ``tessera_stac.api.app.create_app``.
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["Watersheds"])
