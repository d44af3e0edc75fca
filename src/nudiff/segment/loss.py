"""HoVer-Net's loss (MONAI ``HoVerNetLoss``) with its parts exposed for logging, and the
targets it expects built from nuclei structures."""

from __future__ import annotations

import torch
from monai.apps.pathology.losses import HoVerNetLoss
from torch.nn import functional as F

from nudiff.segment.model import HV, NP


class HoVerNetLossParts(HoVerNetLoss):
    """``HoVerNetLoss`` (NP: Dice + cross-entropy; HV: MSE + MSE of Sobel gradients inside
    nuclei); :meth:`parts` returns the four weighted terms, whose sum is ``forward``."""

    def parts(
        self, prediction: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        p_np, t_np = prediction[NP].float(), target[NP]
        p_hv, t_hv = prediction[HV].float(), target[HV]
        return {
            "np_dice": self.dice(p_np, t_np) * self.lambda_np_dice,
            # class index of the one-hot target: t_np[:, 1] (= argmax, which on CPU costs as
            # much as the rest of the loss for a (8, 2, 256, 256) batch)
            "np_ce": self.ce(p_np, t_np[:, 1].round().long()) * self.lambda_np_ce,
            "hv_mse": F.mse_loss(p_hv, t_hv) * self.lambda_hv_mse,
            "hv_msge": self._mse_gradient_loss(p_hv, t_hv, t_np[:, 1]) * self.lambda_hv_mse_grad,
        }


def structure_targets(structure: torch.Tensor) -> dict[str, torch.Tensor]:
    """Structures (B, 3, H, W) [semantic {0, 1}, h, v] -> HoVerNetLoss targets:
    NP one-hot (B, 2, H, W) [background, nucleus], HV (B, 2, H, W) [h, v]."""
    sem = structure[:, :1]
    return {NP: torch.cat([1 - sem, sem], dim=1), HV: structure[:, 1:3]}
