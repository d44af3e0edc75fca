"""Training windows for the diffusion models, drawn from patches held in memory.

A draw: pick a patch, pick a random ``patch_size`` window (after the one-off resize by
``scale``), apply one of the 8 flips/rotations, encode the instance map as a structure.
Structures are encoded after the crop (border nuclei use their visible part) and then
transformed with :func:`nudiff.structure.dihedral`, which keeps h/v consistent (equivariant);
the image gets the same geometry from :func:`nudiff.structure.dihedral_image`.

Randomness comes only from the ``numpy.random.Generator`` passed to :meth:`draw`; the training
loop derives a fresh one per step from (seed, step, process), so no sampler state is needed
to resume exactly. The resize helpers it uses are :mod:`nudiff.data.resize`'s.
"""

from __future__ import annotations

import numpy as np

from nudiff.data.resize import (  # re-exported: their home before nudiff.data.resize
    resize_images,
    resize_instance_maps,
    upsample_instance_map_smooth,
    upsample_labels,
)
from nudiff.diffusion.config import DataConfig
from nudiff.structure import dihedral, dihedral_image, encode
from nudiff.utils import DataError

__all__ = [
    "PatchSampler",
    "resize_images",
    "resize_instance_maps",
    "upsample_instance_map_smooth",
    "upsample_labels",
]


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
