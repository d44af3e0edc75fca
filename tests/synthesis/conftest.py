"""Tiny models for the synthesis tests: both diffusion models trained a few steps (16-px
windows at scale 0.5), an untrained segmenter, and a synthesis configuration that accepts
anything. Shared through fixtures only (tests import nothing from here)."""

import numpy as np
import pytest
import torch

from helpers import disk_instance_map
from helpers import tiny_diffusion_config as tiny_config
from nudiff.diffusion.config import DiffusionConfig, SampleConfig
from nudiff.diffusion.train import train
from nudiff.quality.filter import FilterConfig
from nudiff.synthesis import SynthesisConfig


def _cfg(kind: str) -> DiffusionConfig:
    batch = SampleConfig().batch_size  # as _syn_cfg's explicit settings
    return tiny_config(kind, steps=2, sample_every=0, sample_steps=2, sample_batch_size=batch)


def _syn_cfg(n=5, **kw) -> SynthesisConfig:
    # an untrained model's structures are noise: accept anything so the plumbing is tested
    kw = {"structure_sample": SampleConfig(steps=2), "image_sample": SampleConfig(steps=2)} | kw
    return SynthesisConfig(
        n=n,
        batch_size=2,
        precision="no",
        filter=FilterConfig(
            min_nuclei=0, min_mean_area=None, max_mean_area=None, max_foreground=1.0
        ),
        **kw,
    )


@pytest.fixture
def tiny_diffusion_config():
    """``kind`` -> a tiny :class:`DiffusionConfig` (widths 8/16, 16-px windows at scale 0.5)."""
    return _cfg


@pytest.fixture
def syn_cfg():
    """``(n=5, **fields)`` -> a :class:`SynthesisConfig` whose filter accepts anything."""
    return _syn_cfg


@pytest.fixture(scope="package")
def models(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    inst = np.stack([disk_instance_map((48, 48), ((12, 12), (12, 26), (34, 30)), 6)] * 3)
    images = np.full(inst.shape + (3,), 230, np.uint8)
    images[inst > 0] = (90, 40, 150)
    train(_cfg("structure"), root / "s", None, inst)
    train(_cfg("image"), root / "i", images, inst)
    return root / "s", root / "i"


@pytest.fixture(scope="package")
def untrained_segmenter(tmp_path_factory):
    """A segmenter run folder (untrained weights: the filter's plumbing, not its judgement)."""
    from nudiff.config import from_dict
    from nudiff.model_folder import save_model_folder
    from nudiff.segment.config import SegmentConfig
    from nudiff.segment.model import build_segmenter

    cfg = from_dict(SegmentConfig, {"model": {"widths": [8, 16]}, "infer": {"tile": 32}})
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("seg")
    save_model_folder(root / "model", build_segmenter(cfg), cfg, "segmenter", {"step": 0})
    return root
