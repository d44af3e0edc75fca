"""The denoising networks (MONAI diffusion U-Nets) and the condition of the image model.

Condition of the image model (``condition_tensor``), 4 channels at the image resolution:

====  ===========  ===========================================================
 ch    name         values
====  ===========  ===========================================================
 0     semantic     {0, 1}: 1 on nuclei
 1     h            [-1, 1]: HoVer-Net horizontal map, 0 on background
 2     v            [-1, 1]: HoVer-Net vertical map, 0 on background
 3     indicator    1 for a real structure (also one with no nuclei), 0 for null
====  ===========  ===========================================================

The *null* condition of classifier-free guidance is all zeros, indicator included. The
reference used an all-zero 3-channel map, which is also "a patch without nuclei"; the
indicator keeps the two apart, so guidance never pushes an empty patch away from itself.
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.networks.nets import DiffusionModelUNet, SPADEDiffusionModelUNet
from torch import nn

from nudiff.diffusion.config import DenoiserConfig, DiffusionConfig
from nudiff.model_folder import DIFFUSION_KINDS, read_model_folder, save_model_folder
from nudiff.utils import DataError

STRUCTURE_CHANNELS = 3
IMAGE_CHANNELS = 3
CONDITION_CHANNELS = 4


def condition_tensor(
    structures: torch.Tensor, drop_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Structures -> the image model's condition (see module docstring).

    Args:
        structures: float (B, 3, H, W): semantic in {0, 1}, h and v in [-1, 1].
        drop_mask: bool (B,), True where the condition is replaced by the null condition.
    Returns:
        float (B, 4, H, W): [semantic, h, v, indicator]; all zeros where dropped.
    """
    if structures.ndim != 4 or structures.shape[1] != STRUCTURE_CHANNELS:
        raise ValueError(f"structures must be (B, 3, H, W), got {tuple(structures.shape)}")
    b, _, h, w = structures.shape
    indicator = structures.new_ones((b, 1, h, w))
    cond = torch.cat([structures, indicator], dim=1)
    if drop_mask is not None:
        keep = (~drop_mask.to(device=cond.device, dtype=torch.bool)).to(cond.dtype)
        cond = cond * keep.view(b, 1, 1, 1)
    return cond


def null_condition(x: torch.Tensor) -> torch.Tensor:
    """The null condition (B, 4, H, W) of zeros, for a batch ``x`` (B, C, H, W)."""
    b, _, h, w = x.shape
    return x.new_zeros((b, CONDITION_CHANNELS, h, w))


def build_network(model: DenoiserConfig) -> nn.Module:
    """The MONAI U-Net for ``model`` (epsilon prediction, 3 output channels)."""
    common = {
        "spatial_dims": 2,
        "out_channels": 3,
        "num_res_blocks": model.num_res_blocks,
        "channels": model.channels,
        "attention_levels": model.attention_levels,
        "norm_num_groups": model.norm_num_groups,
        "num_head_channels": model.num_head_channels,
        "use_flash_attention": model.flash_attention,
    }
    extra = 3 if model.self_condition else 0  # the previous estimate of x_0
    if model.kind == "structure":
        return DiffusionModelUNet(in_channels=STRUCTURE_CHANNELS + extra, **common)
    if model.conditioning == "spade":
        return SPADEDiffusionModelUNet(
            in_channels=IMAGE_CHANNELS + extra,
            label_nc=CONDITION_CHANNELS,
            spade_intermediate_channels=model.spade_channels,
            **common,
        )
    return DiffusionModelUNet(in_channels=IMAGE_CHANNELS + CONDITION_CHANNELS + extra, **common)


class Denoiser(nn.Module):
    """eps = Denoiser(x_t, t, cond, x0_prev): one interface for both models and conditionings.

    ``x``: float (B, 3, H, W) noisy sample; ``t``: int64 (B,) timesteps in [0, T);
    ``cond``: the image model's condition (B, 4, H, W) from :func:`condition_tensor`, ``None``
    for the null condition; ignored by the structure model. ``x0_prev``: with
    ``model.self_condition``, the previous estimate of x_0 (B, 3, H, W); ``None`` = zeros (no
    estimate yet); ignored otherwise. Returns eps (or v) (B, 3, H, W).
    ``config`` travels with the module so that samplers know the schedule and sizes.
    """

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.config = config
        self.net = build_network(config.model)

    @property
    def conditional(self) -> bool:
        return self.config.model.kind == "image"

    @property
    def self_conditioned(self) -> bool:
        return self.config.model.self_condition

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
        x0_prev: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.self_conditioned:
            x = torch.cat([x, torch.zeros_like(x) if x0_prev is None else x0_prev.to(x.dtype)], 1)
        if not self.conditional:
            return self.net(x, t)
        if cond is None:
            cond = null_condition(x)
        cond = cond.to(x.dtype)
        if self.config.model.conditioning == "spade":
            return self.net(x, t, seg=cond)
        return self.net(torch.cat([x, cond], dim=1), t)


def save_denoiser(model: Denoiser, directory: str | Path, info: dict | None = None) -> Path:
    """Write ``model`` as a model folder (:mod:`nudiff.model_folder`: ``model.safetensors`` +
    ``config.yaml`` of kind ``structure`` or ``image``), replacing ``directory`` atomically."""
    return save_model_folder(directory, model, model.config, model.config.model.kind, info)


def load_denoiser(directory: str | Path, kind: str | None = None) -> Denoiser:
    """Read a model folder written by :func:`save_denoiser` (or a diffusion model folder of an
    earlier version: ``config.json``); CPU, eval mode. ``kind``: ``"structure"`` or ``"image"``
    (``None``: either); a folder of another kind is a :class:`DataError` naming it."""
    folder = read_model_folder(
        directory, DiffusionConfig, DIFFUSION_KINDS if kind is None else (kind,)
    )
    if folder.config.model.kind != folder.kind:
        raise DataError(
            folder.path,
            f"holds a model of kind {folder.kind!r} whose config says "
            f"model.kind {folder.config.model.kind!r}",
        )
    model = Denoiser(folder.config)
    try:
        model.load_state_dict(folder.weights)
    except RuntimeError as e:
        raise DataError(
            folder.path, f"the weights do not fit the config ({str(e).splitlines()[0]})"
        ) from None
    return model.eval()
