"""Training windows for the diffusion models, drawn from patches held in memory.

A draw: pick a patch, pick a random ``patch_size`` window (after the one-off resize by
``scale``), apply one of the 8 flips/rotations, encode the instance map as a structure.
Structures are encoded after the crop (border nuclei use their visible part) and then
transformed with :func:`nudiff.structure.dihedral`, which keeps h/v consistent (equivariant);
the image gets the same geometry from :func:`nudiff.structure.dihedral_image`.

Randomness comes only from the ``numpy.random.Generator`` passed to :meth:`draw`; the training
loop derives a fresh one per step from (seed, step, process), so no sampler state is needed
to resume exactly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nudiff.diffusion.config import DataConfig
from nudiff.structure import dihedral, dihedral_image, encode
from nudiff.utils import DataError


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
    from scipy import ndimage as ndi

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
        region = best[y0 * k:y1 * k, x0 * k:x1 * k]
        win = p > region
        region[win] = p[win]
        out[y0 * k:y1 * k, x0 * k:x1 * k][win] = i
    return out


def upsample_labels(inst: np.ndarray, factor: float, method: str = "nearest") -> np.ndarray:
    """int (H, W) instance map resized by ``factor``: ``"nearest"`` (:func:`resize_instance_maps`)
    or ``"smooth"`` (:func:`upsample_instance_map_smooth`; only when enlarging, nearest otherwise)."""
    if method == "smooth" and factor > 1:
        return upsample_instance_map_smooth(inst, factor)
    return resize_instance_maps(np.asarray(inst)[None], factor)[0]


class PatchSampler:
    """Random training windows from in-memory patches.

    Args:
        cfg: window size, resize factor and h/v minimum nucleus area.
        instance_maps: int (N, H, W), 0 background.
        images: uint8 (N, H, W, 3) RGB or ``None`` (structure model).
    """

    def __init__(
        self, cfg: DataConfig, instance_maps: np.ndarray, images: np.ndarray | None = None
    ):
        inst = np.asarray(instance_maps)
        if inst.ndim != 3 or len(inst) == 0:
            raise DataError(
                "instance_maps", f"expected (N, H, W) with N >= 1, got shape {inst.shape}"
            )
        if images is not None:
            images = np.asarray(images)
            if images.dtype != np.uint8 or images.shape != inst.shape + (3,):
                raise DataError(
                    "images",
                    f"expected uint8 {inst.shape + (3,)}, got {images.dtype} {images.shape}",
                )
        self.cfg = cfg
        self.instance_maps = resize_instance_maps(inst, cfg.scale)
        self.images = None if images is None else resize_images(images, cfg.scale)
        p = cfg.patch_size
        if min(self.instance_maps.shape[1:]) < p:
            raise DataError(
                "instance_maps",
                f"patches of {inst.shape[1:]} px resized by {cfg.scale} are smaller than "
                f"patch_size {p}",
            )
        self.min_area = cfg.hv_min_area

    def __len__(self) -> int:
        return len(self.instance_maps)

    def draw(
        self, batch_size: int, rng: np.random.Generator, augment: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Draw ``batch_size`` windows.

        Returns:
            structures: float32 (B, 3, p, p): semantic {0, 1}, h and v in [-1, 1].
            images: uint8 (B, p, p, 3) or ``None`` without images.
        """
        p = self.cfg.patch_size
        _, h, w = self.instance_maps.shape
        structures = np.empty((batch_size, 3, p, p), np.float32)
        images = None if self.images is None else np.empty((batch_size, p, p, 3), np.uint8)
        for b in range(batch_size):
            i = int(rng.integers(len(self)))
            y, x = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))
            k, flip = (int(rng.integers(4)), bool(rng.integers(2))) if augment else (0, False)
            window = self.instance_maps[i, y : y + p, x : x + p]
            structures[b] = dihedral(encode(window, min_area=self.min_area), k, flip)
            if images is not None:
                images[b] = dihedral_image(
                    self.images[i, y : y + p, x : x + p], k, flip, channel_axis=-1
                )
        return structures, images
