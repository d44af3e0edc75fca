"""Tiny models and data for the diffusion tests (widths 8/16, 16-px windows, a few steps).

Shared through fixtures only (tests import nothing from here)."""

import numpy as np
import pytest

from helpers import tiny_diffusion_config
from nudiff.diffusion.config import DiffusionConfig


def tiny_config(kind: str = "structure", conditioning: str = "spade", **train) -> DiffusionConfig:
    return tiny_diffusion_config(kind, conditioning, **train)


def discs(shape, centers, radius) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inst = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centers, start=1):
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    return inst


def make_toy_patches() -> tuple[np.ndarray, np.ndarray]:
    """4 patches of 48 px: uint8 images (4, 48, 48, 3) and instance maps (4, 48, 48)."""
    rng = np.random.default_rng(0)
    inst = np.stack(
        [discs((48, 48), [tuple(rng.integers(8, 40, 2)) for _ in range(4)], 6) for _ in range(4)]
    )
    images = rng.integers(0, 60, (4, 48, 48, 3)).astype(np.uint8)
    images[inst > 0] = (200, 60, 160)
    return images, inst


@pytest.fixture
def make_config():
    """``make_config(kind="structure", conditioning="spade", **train_overrides)``: tiny config."""
    return tiny_config


@pytest.fixture
def toy_patches() -> tuple[np.ndarray, np.ndarray]:
    return make_toy_patches()


def random_denoiser(cfg, seed: int = 0):
    """A Denoiser whose zero-initialised layers (MONAI zeroes the output convs) get random
    weights, so that its output depends on every input."""
    import torch

    from nudiff.diffusion.networks import Denoiser

    torch.manual_seed(seed)
    model = Denoiser(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.05)
    return model.eval()


@pytest.fixture
def make_denoiser():
    """``make_denoiser(cfg, seed=0)`` -> a randomly initialised, eval-mode Denoiser."""
    return random_denoiser


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and on a shared CPU two threads of tiny ops can
    stall each other (x10 slower): run these tests on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
