"""Segmenter networks with HoVer-Net's two outputs.

Every network maps an image batch ``(B, 3, H, W)`` float in [0, 1] to a dict with MONAI's
``HoVerNetBranch`` keys, as ``monai.apps.pathology.losses.HoVerNetLoss`` expects:

- ``"nucleus_prediction"`` (NP): ``(B, 2, H, W)`` logits of background / nucleus
  (softmax; the loss takes Dice + cross-entropy over the two classes);
- ``"horizontal_vertical"`` (HV): ``(B, 2, H, W)``: the horizontal then the vertical map,
  targets in [-1, 1] (linear output as HoVer-Net, or tanh).
"""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.nets import HoVerNet
from monai.utils.enums import HoVerNetBranch
from torch import nn

from nudiff.segment.config import SegmentConfig, SegmenterNetConfig

NP = HoVerNetBranch.NP.value
HV = HoVerNetBranch.HV.value


def _norm(kind: str, channels: int) -> nn.Module:
    return (
        nn.BatchNorm2d(channels) if kind == "batch" else nn.InstanceNorm2d(channels, affine=True)
    )


class DoubleConv(nn.Sequential):
    """(conv3x3 -> norm -> ReLU) x 2; keeps H, W."""

    def __init__(self, c_in: int, c_out: int, norm: str = "batch"):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            _norm(norm, c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            _norm(norm, c_out),
            nn.ReLU(inplace=True),
        )


class UNetSegmenter(nn.Module):
    """A plain U-Net (max-pool down, transposed-conv up, skip concatenation), one shared
    encoder/decoder, and two 1x1 heads: NP (2 logits) and HV (2 maps).

    Widths (16, 32, 64, 128, 256) give ~1.9 M parameters. H and W must be divisible by
    ``2 ** (len(widths) - 1)``.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 64, 128, 256),
        norm: str = "batch",
        hv_activation: str = "linear",
        in_channels: int = 3,
    ):
        super().__init__()
        self.multiple = 2 ** (len(widths) - 1)
        self.down = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.down.append(DoubleConv(c, w, norm))
            c = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(c, w, 2, stride=2))
            self.dec.append(DoubleConv(2 * w, w, norm))
            c = w
        self.np_head = nn.Conv2d(c, 2, 1)
        self.hv_head = nn.Conv2d(c, 2, 1)
        self.hv_activation = hv_activation

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[-1] % self.multiple or x.shape[-2] % self.multiple:
            raise ValueError(
                f"input H, W must be divisible by {self.multiple}, got {tuple(x.shape[-2:])}"
            )
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        hv = self.hv_head(x)
        if self.hv_activation == "tanh":
            hv = torch.tanh(hv)
        return {NP: self.np_head(x), HV: hv}


class HoVerNetSegmenter(nn.Module):
    """MONAI ``HoVerNet(mode="fast", decoder_padding=True)``: 256x256 in, 256x256 out, no
    type branch, no pretrained weights (nothing can be downloaded). ~34 M parameters: GPU."""

    multiple = 256

    def __init__(self, hv_activation: str = "linear"):
        super().__init__()
        self.net = HoVerNet(
            mode="fast",
            in_channels=3,
            np_out_channels=2,
            out_classes=0,
            decoder_padding=True,
            pretrained_url=None,
        )
        self.hv_activation = hv_activation

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(x)
        hv = out[HV]
        if self.hv_activation == "tanh":
            hv = torch.tanh(hv)
        return {NP: out[NP], HV: hv}


def build_segmenter(cfg: SegmentConfig | SegmenterNetConfig) -> nn.Module:
    """The network named by ``cfg.model.arch`` (randomly initialised, float32, train mode)."""
    m = cfg.model if isinstance(cfg, SegmentConfig) else cfg
    if m.arch == "hovernet":
        return HoVerNetSegmenter(m.hv_activation)
    return UNetSegmenter(m.level_widths(), m.norm, m.hv_activation)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def image_to_tensor(images, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``(H, W, 3)`` or ``(B, H, W, 3)`` numpy -> float32 ``(B, 3, H, W)`` in [0, 1]."""
    a = np.ascontiguousarray(images)
    t = torch.from_numpy(a if a.flags.writeable else a.copy())
    if t.ndim == 3:
        t = t[None]
    return t.to(device).permute(0, 3, 1, 2).float().div_(255.0)
