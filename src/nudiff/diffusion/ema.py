"""Exponential moving average of a model's weights (what the samplers use)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``self.model``, a frozen copy whose weights follow the trained model.

    After update n (1-based) the decay is ``min(decay, (1 + n) / (10 + n))``: the average
    warms up quickly, which matters for the short CPU trainings. Non-float entries of the
    state dict (none in the MONAI U-Nets) are copied.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        d = self.current_decay()
        src = model.state_dict()
        for name, shadow in self.model.state_dict().items():
            value = src[name].detach().to(shadow.device)
            if shadow.is_floating_point():
                shadow.lerp_(value.to(shadow.dtype), 1.0 - d)
            else:
                shadow.copy_(value)
