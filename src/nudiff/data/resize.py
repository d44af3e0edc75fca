"""Resizing images and instance maps: area averaging / bilinear for images, nearest or smooth
for labels (ids kept). Used by the diffusion models' training windows, synthesis and the
quality measures."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi


def resize_images(images: np.ndarray, scale: float) -> np.ndarray:
    """uint8 (N, H, W, 3) -> uint8 (N, round(H s), round(W s), 3) by area averaging."""
    if scale == 1:
        return images
    n, h, w, _ = images.shape
    size = (round(h * scale), round(w * scale))
    out = []
    for chunk in np.array_split(np.arange(n), max(1, n // 64)):
        t = torch.from_numpy(images[chunk]).permute(0, 3, 1, 2).float()
        mode = "area" if scale < 1 else "bilinear"
        t = F.interpolate(t, size=size, mode=mode)
        out.append(t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def at_scale(images: np.ndarray, scale: float) -> np.ndarray:
    """Square uint8 windows (N, S, S, 3) as a model working at ``scale`` sees them: taken down
    by area averaging and back up bilinearly to S (what synthesis does to its own images)."""
    if scale >= 1:
        return images
    small = resize_images(images, scale)
    return resize_images(small, images.shape[1] / small.shape[1])


def resize_instance_maps(instance_maps: np.ndarray, scale: float) -> np.ndarray:
    """int (N, H, W) -> int32 (N, round(H s), round(W s)), nearest (pixel-centre aligned)."""
    inst = np.asarray(instance_maps, np.int32)
    if scale == 1:
        return inst
    _, h, w = inst.shape
    rows = np.minimum(
        ((np.arange(round(h * scale)) + 0.5) * h / round(h * scale)).astype(int), h - 1
    )
    cols = np.minimum(
        ((np.arange(round(w * scale)) + 0.5) * w / round(w * scale)).astype(int), w - 1
    )
    return inst[:, rows][:, :, cols]


def upsample_instance_map_smooth(inst: np.ndarray, factor: int, sigma: float = 1.0) -> np.ndarray:
    """int (H, W) -> int32 (H k, W k) with smooth outlines instead of nearest's staircase.

    Every nucleus's mask and the background's are upsampled bilinearly by the integer ``factor``
    and smoothed (Gaussian, ``sigma`` output px); each output pixel takes the label whose smoothed
    mask is largest (background on ties). Works nucleus by nucleus on padded crops, so memory
    stays that of the output; ids are kept (a nucleus too small to win any pixel disappears).
    """
    k = int(round(factor))
    if k < 1 or abs(factor - k) > 1e-6:
        raise ValueError(f"smooth label upsampling needs an integer factor >= 1, got {factor}")
    inst = np.asarray(inst, np.int32)
    if k == 1:
        return inst

    def up(mask: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(mask.astype(np.float32))[None, None]
        t = F.interpolate(t, scale_factor=k, mode="bilinear", align_corners=False)[0, 0].numpy()
        return ndi.gaussian_filter(t, sigma, mode="nearest") if sigma > 0 else t

    h, w = inst.shape
    best = up(inst == 0)
    out = np.zeros((h * k, w * k), np.int32)
    pad = 2 + int(np.ceil(4 * sigma / k))  # the crop's mask is 0 where its smoothing reaches
    for i, sl in enumerate(ndi.find_objects(inst), start=1):
        if sl is None:
            continue
        y0, y1 = max(sl[0].start - pad, 0), min(sl[0].stop + pad, h)
        x0, x1 = max(sl[1].start - pad, 0), min(sl[1].stop + pad, w)
        p = up(inst[y0:y1, x0:x1] == i)
        region = best[y0 * k : y1 * k, x0 * k : x1 * k]
        win = p > region
        region[win] = p[win]
        out[y0 * k : y1 * k, x0 * k : x1 * k][win] = i
    return out


def upsample_labels(inst: np.ndarray, factor: float, method: str = "nearest") -> np.ndarray:
    """int (H, W) instance map resized by ``factor``: ``"nearest"`` (:func:`resize_instance_maps`)
    or ``"smooth"`` (:func:`upsample_instance_map_smooth`; only when enlarging, nearest
    otherwise)."""
    if method == "smooth" and factor > 1:
        return upsample_instance_map_smooth(inst, factor)
    return resize_instance_maps(np.asarray(inst)[None], factor)[0]
