"""Kernel inception distance on the features of a segmenter trained on real data.

No Inception weights can be had offline, so the features are those of the deepest encoder
map of a real-trained nudiff segmenter, globally average-pooled: what the segmenter "sees"
of an image. KID is the unbiased estimate of the squared maximum mean discrepancy with the
polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets (Binkowski et al.
2018; as torchmetrics' ``KernelInceptionDistance`` computes it). 0 = same distribution; it can
be slightly negative by chance.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def encoder_module(model: nn.Module) -> nn.Module:
    """The deepest encoder block of a nudiff segmenter (U-Net: the last ``down`` block;
    MONAI HoVerNet: its bottleneck)."""
    if hasattr(model, "down"):
        return model.down[-1]
    if hasattr(model, "net") and hasattr(model.net, "bottleneck"):
        return model.net.bottleneck
    raise ValueError(f"no known encoder in {type(model).__name__}")


def _pad_to_multiple(images: np.ndarray, multiple: int) -> np.ndarray:
    """Reflect-pad uint8 (N, H, W, 3) at the bottom / right to sides divisible by ``multiple``."""
    _, h, w, _ = images.shape
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return images
    return np.pad(images, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect")


@torch.no_grad()
def encoder_features(model: nn.Module, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float64 (N, C): the deepest encoder map, globally averaged.

    The images are reflect-padded to the network's input multiple; the model runs in eval
    mode, float32 (its training mode is restored).
    """
    from nudiff.segment.model import image_to_tensor

    images = _pad_to_multiple(np.asarray(images, np.uint8), int(getattr(model, "multiple", 1)))
    captured: list[torch.Tensor] = []
    hook = encoder_module(model).register_forward_hook(
        lambda _m, _i, out: captured.append(out.float().mean(dim=(-2, -1)))
    )
    params = next(model.parameters())
    channels_last = params.is_contiguous(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(images), batch_size):
            x = image_to_tensor(images[i : i + batch_size], params.device)
            model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(captured).cpu().double().numpy()


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-sized feature sets (m, d) with the cubic polynomial kernel."""
    m = len(x)
    k_xx, k_yy, k_xy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / m**2)


def kid(
    features_a: np.ndarray,
    features_b: np.ndarray,
    subsets: int = 50,
    subset_size: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """(mean, sd) of :func:`mmd2_unbiased` over ``subsets`` random subsets of
    ``min(subset_size, len(a), len(b))`` rows of each set (float (N, d) features)."""
    m = min(subset_size, len(features_a), len(features_b))
    if m < 2:
        raise ValueError("KID needs at least 2 feature vectors per set")
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(
            features_a[rng.choice(len(features_a), m, replace=False)],
            features_b[rng.choice(len(features_b), m, replace=False)],
        )
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))
