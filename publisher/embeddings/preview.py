"""Preview PNGs: one fixed projection of the 128 dimensions to RGB for every tile.

Colours are comparable across tiles (and years) because nothing depends on the tile: the
projection matrix is a fixed, seeded random orthonormal 3 x 128 matrix
(``numpy.random.default_rng(PROJECTION_SEED)``, QR-orthonormalised) and the stretch is fixed
(``STRETCH``: each projected channel maps ``[-STRETCH, STRETCH]`` to ``[0, 255]``). Invalid
pixels are transparent. Previews are drawn from an overview level (reduced size).
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np

from tessera_stac.catalog.constants import EMBEDDING_DIM

PROJECTION_SEED = 20250128
STRETCH = 6.0
PREVIEW_FACTOR = 4  # preview drawn from the 1/4 overview (~280 px for a full tile)


@lru_cache(maxsize=1)
def projection() -> np.ndarray:
    """The fixed (128, 3) float32 projection to RGB (orthonormal columns)."""
    rng = np.random.default_rng(PROJECTION_SEED)
    matrix, _ = np.linalg.qr(rng.normal(size=(EMBEDDING_DIM, 3)))
    return matrix.astype(np.float32)


def render(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """RGBA image (h, w, 4) uint8 of dequantised embeddings; NaN scales are transparent."""
    valid = np.isfinite(scales)
    x = codes.astype(np.float32) * np.where(valid, scales, np.float32(0))[..., None]
    rgb = x.reshape(-1, codes.shape[-1]) @ projection()
    rgb = (rgb.reshape(*scales.shape, 3) + STRETCH) * (255.0 / (2 * STRETCH))
    out = np.zeros((*scales.shape, 4), dtype=np.uint8)
    out[..., :3] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    out[..., 3] = np.where(valid, 255, 0).astype(np.uint8)
    out[~valid, :3] = 0
    return out


def png_bytes(rgba: np.ndarray) -> bytes:
    """Encode an RGBA array as PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
