"""Classifier two-sample test: can a small CNN tell two image sets apart?

A 4-layer convolutional network, trained from scratch (on the GPU when there is one), learns to
tell set A (real) from set B (synthetic, or another half of the real data: the floor). Balanced
classes, two-fold: each half of the images is predicted by the network trained on the other half,
so every image gets a held-out prediction. Accuracy 0.5 means indistinguishable, 1.0 perfectly
separable. Random flips and quarter turns during training; deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class C2STResult:
    """accuracy: held-out accuracy over both folds (0.5 = indistinguishable).
    p_a: float (len(B),) held-out probability that each image of B belongs to A ("looks
        real" when A is real); NaN for images left out to balance the classes.
    n_per_class: images of each set used.
    """

    accuracy: float
    p_a: np.ndarray
    n_per_class: int


def small_cnn(width: int = 16) -> nn.Module:
    """(B, 3, H, W) in [-0.5, 0.5] -> (B,) logit of "set B". Four stride-2 conv blocks and a
    global average pool: ~70 k parameters at width 16."""
    layers: list[nn.Module] = []
    c = 3
    for w in (width, 2 * width, 4 * width, 4 * width):
        layers += [
            nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
        ]
        c = w
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 1), nn.Flatten(0)
    )


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0 - 0.5


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The same random flip and quarter turn for the whole batch (cheap, and the batch mixes
    both classes, so it teaches nothing about either)."""
    if torch.rand((), generator=gen) < 0.5:
        x = x.flip(-1)
    return torch.rot90(x, int(torch.randint(0, 4, (), generator=gen)), dims=(-2, -1))


def _fit_predict(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
) -> torch.Tensor:
    """Train a fresh :func:`small_cnn` on ``device``; held-out probabilities of class 1 for
    ``x_test`` (on the CPU). The random draws stay on the CPU, so a seed picks the same batches
    on any device."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = small_cnn().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = max(1, epochs * len(x_train) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x_train), (min(batch_size, len(x_train)),), generator=gen)
        loss = loss_fn(model(_augment(x_train[idx].to(device), gen)), y_train[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        return torch.cat(
            [
                torch.sigmoid(model(x_test[i : i + 64].to(device))).cpu()
                for i in range(0, len(x_test), 64)
            ]
        )


def c2st(
    images_a: np.ndarray,
    images_b: np.ndarray,
    seed: int = 0,
    epochs: int = 15,
    batch_size: int = 32,
    lr: float = 3e-3,
    device: torch.device | str | None = None,
) -> C2STResult:
    """Held-out accuracy of telling ``images_a`` from ``images_b`` (uint8 (N, S, S, 3), S a
    multiple of 16 is best; both sets the same S).

    ``min(len(A), len(B))`` images of each set (a seeded random choice), split in two folds;
    each fold's network trains for ``epochs`` passes over the other fold, on ``device``
    (default: the GPU when there is one).
    """
    from nudiff.utils import default_device

    device = torch.device(device) if device is not None else default_device()
    if images_a.shape[1:] != images_b.shape[1:]:
        raise ValueError(
            f"image sets differ in shape: {images_a.shape[1:]} vs {images_b.shape[1:]}"
        )
    rng = np.random.default_rng(seed)
    n = min(len(images_a), len(images_b))
    if n < 2:
        raise ValueError("c2st needs at least 2 images in each set")
    ia, ib = rng.permutation(len(images_a))[:n], rng.permutation(len(images_b))[:n]
    x = _to_tensor(np.concatenate([images_a[ia], images_b[ib]]))
    y = torch.cat([torch.zeros(n), torch.ones(n)])
    fold = np.concatenate([np.arange(n) % 2, np.arange(n) % 2])
    p_b = torch.empty(2 * n)
    for k in (0, 1):
        test = torch.from_numpy(fold == k)
        p_b[test] = _fit_predict(
            x[~test], y[~test], x[test], epochs, batch_size, lr, seed + k, device
        )
    accuracy = float(((p_b > 0.5).float() == y).float().mean())
    p_a = np.full(len(images_b), np.nan)
    p_a[ib] = 1.0 - p_b[n:].numpy()
    return C2STResult(accuracy, p_a, n)
