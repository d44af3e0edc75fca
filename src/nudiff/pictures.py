"""Pictures people would rather look at than read: overlays, structure panels, mosaics.

All functions are pure: they take arrays and return an RGB uint8 (H, W, 3) picture; write it
with :func:`nudiff.data.io.write_image`. A low module: the stages (training grids, predictions,
synthesis mosaics) and the reports draw with it.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from skimage.color import hsv2rgb
from skimage.segmentation import find_boundaries


def instance_colours(n: int, seed: int = 0) -> np.ndarray:
    """(n + 1, 3) uint8 bright colours; row 0 (background) is black."""
    rng = np.random.default_rng(seed)
    hsv = np.stack([rng.random(n), np.full(n, 0.9), np.full(n, 1.0)], axis=1)
    rgb = (hsv2rgb(hsv[None])[0] * 255).astype(np.uint8)
    return np.concatenate([np.zeros((1, 3), np.uint8), rgb])


def overlay(
    image: np.ndarray, instance_map: np.ndarray, colour: tuple[int, int, int] | None = None
) -> np.ndarray:
    """Instance contours drawn on the image. image uint8 (H, W, 3); instance_map int (H, W).

    Each nucleus gets its own colour unless ``colour`` is given (e.g. (0, 255, 0)).
    """
    out = np.asarray(image, np.uint8).copy()
    inst = np.asarray(instance_map)
    edges = find_boundaries(inst, mode="inner") & (inst > 0)
    if colour is not None:
        out[edges] = colour
    else:
        out[edges] = instance_colours(int(inst.max()))[inst[edges]]
    return out


def label_picture(instance_map: np.ndarray) -> np.ndarray:
    """Instance map as a picture: each nucleus filled with its own colour, black background."""
    inst = np.asarray(instance_map)
    return instance_colours(int(inst.max()))[inst]


def structure_picture(structure: np.ndarray) -> np.ndarray:
    """The 3 structure channels side by side: semantic (grey), h and v (blue -1 .. red +1).

    structure float (3, H, W), semantic in [0, 1] (or [-1, 1]), h/v in [-1, 1].
    Returns uint8 (H, 3W + 8, 3).
    """
    s = np.asarray(structure, np.float32)
    sem = s[0] if s[0].min() >= 0 else (s[0] + 1) / 2
    grey = (np.clip(sem, 0, 1) * 255).astype(np.uint8)
    cmap = colormaps["coolwarm"]
    panels = [np.repeat(grey[..., None], 3, axis=2)]
    for ch in (1, 2):
        panels.append((cmap((np.clip(s[ch], -1, 1) + 1) / 2)[..., :3] * 255).astype(np.uint8))
    return hstack(panels, gap=4)


def structure_rgb(structure: np.ndarray) -> np.ndarray:
    """Compact RGB rendering of a structure: (semantic, (h+1)/2, (v+1)/2) -> uint8 (H, W, 3)."""
    s = np.asarray(structure, np.float32)
    sem = s[0] if s[0].min() >= 0 else (s[0] + 1) / 2
    rgb = np.stack([sem, (s[1] + 1) / 2, (s[2] + 1) / 2], axis=-1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def hstack(pictures: list[np.ndarray], gap: int = 4, fill: int = 255) -> np.ndarray:
    """Side by side with a white gap; pictures are padded at the bottom to the tallest."""
    h = max(p.shape[0] for p in pictures)
    cols = []
    for i, p in enumerate(pictures):
        p = _rgb(p)
        if p.shape[0] < h:
            p = np.concatenate([p, np.full((h - p.shape[0],) + p.shape[1:], fill, np.uint8)])
        cols.append(p)
        if i < len(pictures) - 1:
            cols.append(np.full((h, gap, 3), fill, np.uint8))
    return np.concatenate(cols, axis=1)


def mosaic(tiles: list[np.ndarray], ncols: int = 8, gap: int = 2, fill: int = 255) -> np.ndarray:
    """Tiles (all the same size) in a grid, row-major."""
    if not tiles:
        raise ValueError("mosaic needs at least one tile")
    tiles = [_rgb(t) for t in tiles]
    th, tw = tiles[0].shape[:2]
    ncols = min(ncols, len(tiles))
    nrows = -(-len(tiles) // ncols)
    out = np.full((nrows * (th + gap) - gap, ncols * (tw + gap) - gap, 3), fill, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        out[r * (th + gap) : r * (th + gap) + th, c * (tw + gap) : c * (tw + gap) + tw] = t[
            :th, :tw
        ]
    return out


def _rgb(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p)
    if p.ndim == 2:
        p = np.repeat(p[..., None], 3, axis=2)
    if p.dtype != np.uint8:
        p = (np.clip(p, 0, 1) * 255).astype(np.uint8)
    return p
