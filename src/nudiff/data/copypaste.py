"""Copy-paste augmentation of a labeled subset (the InsMix-style baseline arm).

Real nuclei — image pixels and their exact label — are cut from the subset's patches and
pasted at free positions of other patches of the same subset, so a segmenter sees new nucleus
arrangements on real backgrounds. It is the bar diffusion pairs must beat to be worth their
hours (``real+copypaste`` arm of ``nudiff experiment``).

Labels stay exact by construction: a nucleus is pasted only where it and a ``margin``-px ring
around it are background, so it never overlaps or touches another nucleus and gets a fresh id;
blending (a Gaussian-feathered alpha *outside* the nucleus mask) changes only background
pixels next to the pasted nucleus, never pixels of the label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from nudiff.utils import NudiffError


@dataclass
class CopyPasteConfig:
    """Copy-paste augmentation (YAML ``experiment.copypaste``).

    nuclei: how many nuclei to try to paste into each augmented patch (fewer are pasted when
        the patch has no room).
    attempts: random positions tried per nucleus before giving up on it.
    margin: px of background required around a pasted nucleus (no touching, no overlap).
    feather: sd (px) of the blending ring outside the nucleus (0: hard paste).
    match_colour: shift a pasted nucleus's mean colour to the target patch's mean nucleus colour.
    min_area: nuclei smaller than this (px) or cut by their patch border are not used as donors.
    seed: the augmented set is a deterministic function of (subset, config, seed).
    resample: each finished image is taken to this scale and back (area down, bilinear up, as
        synthesis upsamples an image model's windows), labels unchanged: real pixels with only
        the detail an image model painting at that scale can give. A diagnostic (is the painter's
        resolution what holds its pairs back?); 1 = off.
    """

    nuclei: int = 12
    attempts: int = 20
    margin: int = 2
    feather: float = 1.0
    match_colour: bool = True
    min_area: int = 30
    seed: int = 0
    resample: float = 1.0

    def __post_init__(self):
        if not 0 < self.resample <= 1:
            raise NudiffError(f"copypaste.resample must be in (0, 1], got {self.resample}")


@dataclass
class Donor:
    """One nucleus to paste: ``image`` uint8 (h, w, 3) crop around it (``pad`` px of context;
    ``None`` for label-only donors), ``mask`` bool (h, w) its pixels, ``context`` bool (h, w)
    pixels that are background in the donor patch (only those may be blended into the target)."""

    image: np.ndarray
    mask: np.ndarray
    context: np.ndarray
    patch: int


def donors_of(samples: list, cfg: CopyPasteConfig, pad: int) -> list[Donor]:
    """Every whole nucleus (not touching its patch border, area ≥ ``cfg.min_area``) of
    ``samples`` (objects with ``image`` uint8 (H, W, 3), or ``None`` for label-only donors, and
    ``instance_map`` int (H, W))."""
    donors = []
    for k, s in enumerate(samples):
        inst = s.instance_map
        h, w = inst.shape
        for i, sl in enumerate(ndi.find_objects(inst), start=1):
            if sl is None:
                continue
            y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
            if y0 == 0 or x0 == 0 or y1 == h or x1 == w:
                continue  # cut by the patch border: not a whole nucleus
            mask = inst[sl] == i
            if mask.sum() < cfg.min_area:
                continue
            ys = slice(max(0, y0 - pad), min(h, y1 + pad))
            xs = slice(max(0, x0 - pad), min(w, x1 + pad))
            crop = None if s.image is None else s.image[ys, xs].copy()
            donors.append(Donor(crop, inst[ys, xs] == i, inst[ys, xs] == 0, k))
    return donors


def _turn(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    a = np.rot90(a, k, axes=(0, 1))
    return np.ascontiguousarray(a[:, ::-1] if flip else a)


def _blend(
    region: np.ndarray,
    crop: np.ndarray,
    mask: np.ndarray,
    context: np.ndarray,
    free: np.ndarray,
    target_colour: np.ndarray | None,
    cfg: CopyPasteConfig,
) -> None:
    """Blend a donor ``crop`` into ``region`` (float32, in place): its nucleus (``mask``) fully,
    a feathered ring of its own background (``context``) only where the target is ``free``
    background, so the ring never reaches existing nuclei."""
    alpha = mask.astype(np.float32)
    if cfg.feather > 0:
        ring = ndi.gaussian_filter(alpha, cfg.feather) * context
        alpha = np.maximum(alpha, ring * free)
    src = crop.astype(np.float32)
    if cfg.match_colour and target_colour is not None:
        src[mask] += target_colour - src[mask].mean(0)
    region[:] = alpha[..., None] * src + (1 - alpha[..., None]) * region


def paste_nuclei(
    image: np.ndarray,
    instance_map: np.ndarray,
    donors: list[Donor],
    rng: np.random.Generator,
    cfg: CopyPasteConfig,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Paste up to ``cfg.nuclei`` random donors (random quarter turn and flip) at random free
    positions of ``image`` uint8 (H, W, 3) / ``instance_map`` int (H, W).

    Returns the new image, the new instance map (pasted nuclei get ids max+1, max+2, …; no
    existing label pixel changes) and how many nuclei were pasted. ``image=None`` pastes labels
    only (``donors`` may then be label-only) and returns ``None`` as the image.
    """
    labels_only = image is None
    image = None if labels_only else image.astype(np.float32)
    inst = instance_map.astype(np.int32).copy()
    h, w = inst.shape
    margin = np.ones((2 * cfg.margin + 1,) * 2, bool)
    occupied = ndi.binary_dilation(inst > 0, margin) if cfg.margin else inst > 0
    target_colour = image[inst > 0].mean(0) if not labels_only and (inst > 0).any() else None
    pasted = 0
    for _ in range(cfg.nuclei):
        d = donors[rng.integers(len(donors))]
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        mask, context = _turn(d.mask, k, flip), _turn(d.context, k, flip)
        ch, cw = mask.shape
        if ch >= h or cw >= w:
            continue
        for _ in range(cfg.attempts):
            y, x = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
            if not occupied[y : y + ch, x : x + cw][mask].any():
                break
        else:
            continue
        if not labels_only:
            _blend(
                image[y : y + ch, x : x + cw],
                _turn(d.image, k, flip),
                mask,
                context,
                inst[y : y + ch, x : x + cw] == 0,
                target_colour,
                cfg,
            )
        inst[y : y + ch, x : x + cw][mask] = inst.max() + 1
        grown = ndi.binary_dilation(mask, margin) if cfg.margin else mask
        occupied[y : y + ch, x : x + cw] |= grown
        pasted += 1
    if labels_only:
        return None, inst, pasted
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), inst, pasted


def copy_paste_set(samples: list, n: int, cfg: CopyPasteConfig) -> tuple[list, list[int]]:
    """``n`` augmented patches from a labeled subset: patch ``i`` is subset patch
    ``rng.integers(len)`` with nuclei of the *other* subset patches pasted in, ``rng`` seeded by
    ``(cfg.seed, i)``. Returns ``Sample``s named ``cp_0000``… and the pasted count of each."""
    from nudiff.data.dataset import Sample

    pad = int(np.ceil(3 * cfg.feather)) + cfg.margin
    donors = donors_of(samples, cfg, pad)
    if not donors:
        raise ValueError("copy-paste: the subset has no whole nucleus to paste")
    out, counts = [], []
    for i in range(n):
        rng = np.random.default_rng([cfg.seed, i])
        k = int(rng.integers(len(samples)))
        others = [d for d in donors if d.patch != k] or donors
        image, inst, pasted = paste_nuclei(
            samples[k].image, samples[k].instance_map, others, rng, cfg
        )
        if cfg.resample != 1:
            image = resample_image(image, cfg.resample)
        out.append(Sample(f"cp_{i:04d}", image, inst, "copypaste"))
        counts.append(pasted)
    return out, counts


def resample_image(image: np.ndarray, scale: float) -> np.ndarray:
    """uint8 (H, W, 3) taken to ``scale`` (area averaging) and back to (H, W) (bilinear)."""
    from nudiff.data.resize import at_scale  # torch: kept out of the CLI's import time

    back = at_scale(image[None], scale)
    h, w = image.shape[:2]
    if back.shape[1:3] != (h, w):
        raise ValueError(f"resample {scale}: {h}x{w} px do not go to that scale and back exactly")
    return back[0]
