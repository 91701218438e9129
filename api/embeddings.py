"""Embedding access routes (filled below)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["Embeddings"])
