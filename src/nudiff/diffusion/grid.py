"""Sample grids written during training: structures and images as RGB PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from nudiff.utils import atomic_path


def render_structure(structure: np.ndarray) -> np.ndarray:
    """Structure float (3, H, W) (semantic [0, 1], h/v [-1, 1]) -> uint8 (H, W, 3) RGB:
    R = semantic, G = (h + 1) / 2, B = (v + 1) / 2."""
    s = np.asarray(structure, np.float32)
    rgb = np.stack([s[0], (s[1] + 1) / 2, (s[2] + 1) / 2], axis=-1)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def tile(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Tiles uint8 (H, W, 3), all one size, arranged as ``rows`` -> one uint8 image (white gaps)."""
    h, w, _ = rows[0][0].shape
    ncol = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, t in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y : y + h, x : x + w] = t
    return out


def save_png(image: np.ndarray, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def structure_grid(structures: np.ndarray, ncol: int = 8) -> np.ndarray:
    """Sampled structures (n, 3, H, W) -> a grid image, ``ncol`` per row."""
    tiles = [render_structure(s) for s in structures]
    return tile([tiles[i : i + ncol] for i in range(0, len(tiles), ncol)])


def image_grid(
    structures: np.ndarray, images: np.ndarray, real: np.ndarray | None = None
) -> np.ndarray:
    """One row per sample: conditioning structure | generated image | (real image)."""
    rows = []
    for i in range(len(structures)):
        row = [render_structure(structures[i]), images[i]]
        if real is not None:
            row.append(real[i])
        rows.append(row)
    return tile(rows)
