"""Tiny H&E-like pairs for the quality tests (import as `quality.quality_fixtures`: tests/ is on
the path).

Images: dark purple elliptical nuclei (haematoxylin) on a textured pink background (eosin).
"""

from pathlib import Path

import numpy as np

from nudiff.config import from_dict
from nudiff.data.io import write_image, write_instance_map
from nudiff.segment.config import SegmentConfig


def he_pair(seed: int, size: int = 64, n: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (size, size, 3) H&E-like image and its int32 instance map (up to ``n`` ellipses,
    semi-axes 3-6 px, not touching)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inst = np.zeros((size, size), np.int32)
    k = 0
    for _ in range(4 * n):
        if k == n:
            break
        a, b, th = rng.uniform(3.5, 6), rng.uniform(2.5, 4.5), rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0, size, 2)
        u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
        v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
        e = (u / a) ** 2 + (v / b) ** 2 <= 1
        grown = (u / (a + 2)) ** 2 + (v / (b + 2)) ** 2 <= 1
        if e.sum() < 12 or (inst[grown] > 0).any():
            continue
        k += 1
        inst[e] = k
    bg = np.array([235, 170, 205], float) + rng.normal(0, 8, 3)
    fg = np.array([95, 55, 145], float) + rng.normal(0, 8, 3)
    texture = rng.normal(0, 10, (size, size, 1))
    img = np.where(inst[..., None] > 0, fg, bg) + texture
    return np.clip(img, 0, 255).astype(np.uint8), inst


def write_folder(folder: Path, pairs, prefix: str = "p") -> Path:
    for i, (image, inst) in enumerate(pairs):
        write_image(folder / "images" / f"{prefix}{i:03d}.png", image)
        write_instance_map(folder / "labels" / f"{prefix}{i:03d}.png", inst)
    return folder


def colour_shift(image: np.ndarray) -> np.ndarray:
    """The off-colour of an under-trained image model: greener, less red."""
    out = image.astype(int) + np.array([-45, 35, 10])
    return np.clip(out, 0, 255).astype(np.uint8)


def tiny_segment_config(steps: int) -> SegmentConfig:
    return from_dict(
        SegmentConfig,
        {
            "model": {"widths": [8, 16, 32], "channels_last": False},
            "train": {
                "steps": steps,
                "batch_size": 8,
                "crop_size": 64,
                "lr": 5e-3,
                "warmup_steps": 5,
                "precision": "no",
                "val_every": steps,
                "checkpoint_every": steps,
                "log_every": 50,
                "target_context": 4,
                "tune_post": False,
            },
            "infer": {"tile": 64, "overlap": 0.25, "batch_size": 4},
        },
    )
