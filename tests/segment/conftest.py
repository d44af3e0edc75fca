"""Tiny synthetic nuclei images for the segmenter tests: dark discs on pink noise."""

from dataclasses import dataclass

import numpy as np
import pytest

from nudiff.config import from_dict
from nudiff.segment.config import SegmentConfig


@dataclass
class Toy:
    name: str
    image: np.ndarray
    instance_map: np.ndarray
    source: str = "toy"


def disc_sample(seed: int, shape=(64, 64), n=6, name=None) -> Toy:
    """Up to ``n`` discs (radius 4-7, may touch) on noise: uint8 (H, W, 3) + int32 (H, W)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    inst = np.zeros(shape, np.int32)
    for i in range(1, n + 1):
        r = rng.uniform(4, 7)
        cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (inst == 0)
        inst[disc] = i
    bg = np.array([230, 180, 210], np.float64)
    fg = np.array([90, 60, 140], np.float64)
    img = np.where(inst[..., None] > 0, fg, bg) + rng.normal(0, 12, shape + (3,))
    return Toy(name or f"toy{seed}", np.clip(img, 0, 255).astype(np.uint8), inst)


@pytest.fixture
def toys() -> list[Toy]:
    return [disc_sample(s) for s in range(6)]


def tiny_config(**train) -> SegmentConfig:
    """A segmenter small enough for tests: widths 8..32, 64-px crops, float32."""
    t = {
        "steps": 6,
        "batch_size": 4,
        "crop_size": 64,
        "lr": 3e-3,
        "warmup_steps": 2,
        "precision": "no",
        "val_every": 3,
        "checkpoint_every": 3,
        "keep_checkpoints": 2,
        "log_every": 1,
        "target_context": 4,
    }
    t.update(train)
    return from_dict(
        SegmentConfig,
        {
            "model": {"widths": [8, 16, 32]},
            "train": t,
            "infer": {"tile": 64, "overlap": 0.25, "batch_size": 4},
        },
    )


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine, two OpenMP threads make the tiny
    operations of these tests up to 50x slower whenever another process holds a core."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def make_toy():
    """``make_toy(seed, shape=(64, 64), n=6)`` -> a disc sample (see ``disc_sample``)."""
    return disc_sample


@pytest.fixture
def make_config():
    """``make_config(**train_overrides)`` -> a tiny ``SegmentConfig`` (see ``tiny_config``)."""
    return tiny_config
