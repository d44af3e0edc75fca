"""Tiny fixtures shared by tests (importable: tests/ is on pythonpath)."""

import numpy as np

from nudiff.diffusion.config import (
    DataConfig,
    DenoiserConfig,
    DiffusionConfig,
    DiffusionTrainConfig,
    SampleConfig,
)

#: the tiny diffusion trainings of the tests: a few steps, fp32, every bookkeeping path taken
TINY_TRAIN = {
    "steps": 4,
    "batch_size": 2,
    "lr": 1e-3,
    "warmup_steps": 2,
    "precision": "no",
    "checkpoint_every": 2,
    "keep_checkpoints": 3,
    "log_every": 1,
    "sample_every": 2,
}


def tiny_diffusion_config(
    kind: str = "structure",
    conditioning: str = "spade",
    attention: tuple[bool, bool] = (False, True),
    sample_steps: int = 3,
    sample_batch_size: int = 4,
    prediction_type: str | None = None,
    **train,
) -> DiffusionConfig:
    """A diffusion config small enough for a test (widths 8/16, 16-px windows at scale 0.5);
    ``train`` overrides :data:`TINY_TRAIN`."""
    extra = {} if prediction_type is None else {"prediction_type": prediction_type}
    return DiffusionConfig(
        model=DenoiserConfig(
            kind=kind,
            channels=(8, 16),
            attention_levels=attention,
            num_res_blocks=1,
            num_head_channels=8,
            norm_num_groups=8,
            conditioning=conditioning,
            spade_channels=8,
        ),
        data=DataConfig(patch_size=16, scale=0.5),
        train=DiffusionTrainConfig(**(TINY_TRAIN | train)),
        sample=SampleConfig(sampler="ddim", steps=sample_steps, batch_size=sample_batch_size),
        **extra,
    )


def disk_instance_map(
    shape=(64, 64), centers=((20, 20), (20, 34), (45, 40)), radius=8
) -> np.ndarray:
    """Touching discs: a tiny, hand-checkable instance map."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inst = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centers, start=1):
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    return inst
