"""Tiny synthetic paired folders for the data-layer tests."""

from pathlib import Path

import numpy as np
import pytest

from nudiff.data.io import write_image, write_instance_map


def blob_instance_map(shape, n, rng) -> np.ndarray:
    """``n`` random non-overlapping-ish discs of radius 4..9; int32, ids 1..n (some may merge)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inst = np.zeros(shape, np.int32)
    for i in range(1, n + 1):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r = rng.integers(4, 10)
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return inst


def tissue_image(inst: np.ndarray, rng) -> np.ndarray:
    """Pinkish background, purple nuclei, a little noise: uint8 (H, W, 3)."""
    img = np.empty(inst.shape + (3,), np.float64)
    img[:] = (230, 180, 210)
    img[inst > 0] = (120, 60, 160)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_folder(root: Path, names, shape=(160, 160), n_nuclei=25, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for name in names:
        inst = blob_instance_map(shape, n_nuclei, rng)
        write_image(root / "images" / f"{name}.png", tissue_image(inst, rng))
        write_instance_map(root / "labels" / f"{name}.png", inst)
    return root


@pytest.fixture
def make_folder():
    """``make_folder(root, names, shape=(160, 160), n_nuclei=25, seed=0) -> root``."""
    return write_folder
