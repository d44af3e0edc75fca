"""Windows and the statistics compared between real and synthetic pairs.

Pure functions over numpy arrays: images are uint8 ``(N, S, S, 3)`` RGB, instance maps int
``(N, S, S)`` with 0 = background. Distributions are compared by the 1-D Wasserstein distance
(``scipy.stats.wasserstein_distance``), optionally divided by the reference's standard
deviation so that statistics of different units can be read on one scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.stats import wasserstein_distance
from skimage.color import rgb2hed, rgb2lab
from skimage.measure import regionprops

from nudiff.quality.fidelity import uncovered
from nudiff.structure import relabel

#: per-window (count) and per-nucleus statistics of instance maps
STRUCTURE_STATS = ("count", "area", "eccentricity", "solidity", "equivalent_diameter")
#: per-image colour statistics: mean and std of each HED and Lab channel
COLOUR_STATS = tuple(
    f"{space}_{ch}_{m}"
    for space, chans in (("hed", "hed"), ("lab", "lab"))
    for ch in chans
    for m in ("mean", "std")
)
#: per-pair summaries of an instance map (what the synthesis filter checks)
PAIR_STATS = ("count", "mean_area", "mean_eccentricity", "mean_solidity")


def windows(samples, scale: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping ``size`` windows of the samples resized by ``scale``.

    samples: objects with ``image`` uint8 (H, W, 3) and ``instance_map`` int (H, W).
    Returns uint8 (N, size, size, 3) images and int32 (N, size, size) relabelled maps.
    """
    from nudiff.data.resize import resize_images, resize_instance_maps

    out_i, out_l = [], []
    for s in samples:
        img = resize_images(s.image[None], scale)[0]
        lab = resize_instance_maps(s.instance_map[None], scale)[0]
        for y in range(0, lab.shape[0] - size + 1, size):
            for x in range(0, lab.shape[1] - size + 1, size):
                out_i.append(img[y : y + size, x : x + size])
                out_l.append(relabel(lab[y : y + size, x : x + size]))
    return np.stack(out_i), np.stack(out_l)


def random_windows(
    samples: Sequence, size: int, n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random ``size`` crops, drawn from the samples in turn (a shuffled round robin).

    Every sample must be at least ``size`` px on both sides. Deterministic for a seed.
    Returns uint8 (n, size, size, 3) images and int32 (n, size, size) relabelled maps.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(samples))
    images, labels = [], []
    for k in range(n):
        s = samples[order[k % len(samples)]]
        h, w = s.instance_map.shape
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        images.append(s.image[y : y + size, x : x + size])
        labels.append(relabel(s.instance_map[y : y + size, x : x + size]))
    return np.stack(images), np.stack(labels)


def tiled_windows(
    samples: Sequence, size: int, n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` non-overlapping ``size`` windows: each sample is tiled from a random offset,
    and a seeded random choice of all those tiles is kept (so every image contributes in
    proportion to its area). Falls back to :func:`random_windows` (which may overlap) for the
    rest when the samples hold fewer than ``n`` tiles.
    Returns uint8 (n, size, size, 3) images and int32 (n, size, size) relabelled maps.
    """
    rng = np.random.default_rng(seed)
    tiles = []
    for i, s in enumerate(samples):
        h, w = s.instance_map.shape
        oy, ox = rng.integers(0, h % size + 1), rng.integers(0, w % size + 1)
        tiles += [
            (i, y, x) for y in range(oy, h - size + 1, size) for x in range(ox, w - size + 1, size)
        ]
    chosen = [tiles[k] for k in rng.permutation(len(tiles))[:n]]
    images = [samples[i].image[y : y + size, x : x + size] for i, y, x in chosen]
    labels = [relabel(samples[i].instance_map[y : y + size, x : x + size]) for i, y, x in chosen]
    if len(chosen) < n:
        extra_i, extra_l = random_windows(samples, size, n - len(chosen), seed + 1)
        images, labels = images + list(extra_i), labels + list(extra_l)
    return np.stack(images), np.stack(labels)


def centre_crop(
    image: np.ndarray, instance_map: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The central ``size`` crop of one pair (unchanged when it already is that size)."""
    h, w = instance_map.shape
    y, x = (h - size) // 2, (w - size) // 2
    return image[y : y + size, x : x + size], relabel(instance_map[y : y + size, x : x + size])


def _nucleus_props(instance_map: np.ndarray) -> dict[str, np.ndarray]:
    props = regionprops(np.asarray(instance_map, np.int32))
    return {
        "area": np.array([p.area for p in props], float),
        "eccentricity": np.array([p.eccentricity for p in props], float),
        "solidity": np.array([p.solidity for p in props], float),
        "equivalent_diameter": np.array([p.equivalent_diameter_area for p in props], float),
    }


def statistics(instance_maps) -> dict[str, np.ndarray]:
    """:data:`STRUCTURE_STATS` of a set of windows: ``count`` has one value per window, the
    others one value per nucleus (area and diameter in px)."""
    per_window = [_nucleus_props(inst) for inst in instance_maps]
    out = {"count": np.array([len(p["area"]) for p in per_window], float)}
    for k in STRUCTURE_STATS[1:]:
        out[k] = np.concatenate([p[k] for p in per_window]) if per_window else np.zeros(0)
    return out


def pair_statistics(instance_map: np.ndarray) -> dict[str, float]:
    """:data:`PAIR_STATS` of one instance map (means are NaN without nuclei)."""
    p = _nucleus_props(instance_map)
    n = len(p["area"])

    def mean(k: str) -> float:
        return float(p[k].mean()) if n else float("nan")

    return {
        "count": float(n),
        "mean_area": mean("area"),
        "mean_eccentricity": mean("eccentricity"),
        "mean_solidity": mean("solidity"),
    }


def distances(
    reference: dict, other: dict, keys: Sequence[str] = STRUCTURE_STATS, normalise: bool = False
) -> dict[str, float]:
    """Wasserstein-1 between ``reference[k]`` and ``other[k]`` for each key (NaN when either is
    empty); ``normalise`` divides by the reference's standard deviation (unit-free)."""
    out = {}
    for k in keys:
        a, b = np.asarray(reference[k], float), np.asarray(other[k], float)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if not (len(a) and len(b)):
            out[k] = float("nan")
            continue
        d = float(wasserstein_distance(a, b))
        if normalise:
            d /= max(float(a.std()), 1e-12)
        out[k] = d
    return out


def colour_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """:data:`COLOUR_STATS`, one value per image: mean and std of the haematoxylin, eosin and
    DAB optical densities (``skimage.color.rgb2hed``) and of CIE L*a*b* (L in [0, 100])."""
    out: dict[str, list[float]] = {k: [] for k in COLOUR_STATS}
    for img in images:
        for space, conv in (("hed", rgb2hed), ("lab", rgb2lab)):
            chans = conv(np.asarray(img, np.uint8)).reshape(-1, 3)
            for i, ch in enumerate(space):
                out[f"{space}_{ch}_mean"].append(float(chans[:, i].mean()))
                out[f"{space}_{ch}_std"].append(float(chans[:, i].std()))
    return {k: np.array(v) for k, v in out.items()}


def grey(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> float32 (H, W) luma in [0, 255] (ITU-R 601, as PIL's "L")."""
    return np.asarray(image, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def laplacian_variance(grey_image: np.ndarray) -> float:
    """Variance of the Laplacian of a grey (H, W) image: high-frequency energy (residual
    diffusion noise raises it, blur lowers it)."""
    return float(ndi.laplace(np.asarray(grey_image, np.float32)).var())


def haematoxylin(images: np.ndarray) -> np.ndarray:
    """The haematoxylin optical density (``rgb2hed``'s H) of uint8 RGB images, (N, H, W)."""
    return np.stack([rgb2hed(i)[..., 0] for i in images])


def h_threshold(images: np.ndarray, instance_maps: np.ndarray) -> float:
    """Haematoxylin optical density threshold that best matches real labels (max pixel Dice
    of ``H > t`` against the foreground, over quantiles 0.30..0.95 of H)."""
    h = haematoxylin(images)
    fg = np.asarray(instance_maps) > 0
    best = max(
        np.quantile(h, np.linspace(0.3, 0.95, 27)),
        key=lambda t: 2 * ((h > t) & fg).sum() / ((h > t).sum() + fg.sum()),
    )
    return float(best)


def share_below(images: np.ndarray, threshold: float) -> float:
    """The share of the images' pixels whose haematoxylin is at most ``threshold``."""
    return float((haematoxylin(images) <= threshold).mean())


def matched_threshold(images: np.ndarray, share: float) -> float:
    """The haematoxylin threshold for ``images`` that leaves ``share`` of their pixels at or
    below it: pass :func:`share_below` of the real images at their threshold (quantile
    matching). A threshold in optical density does not carry across a stain shift: painted
    images a little paler than the real ones would show no nucleus above the real threshold,
    however plain their nuclei are; their own quantile does."""
    return float(np.quantile(haematoxylin(images), share))


def visible_nuclei(
    image: np.ndarray, instance_map: np.ndarray, threshold: float
) -> tuple[int, int, float]:
    """(visible nuclei, nuclei, pixel Dice of the H mask against the foreground) of one pair.

    A nucleus is *visible* when more than half of its pixels have haematoxylin above
    ``threshold`` (see :func:`h_threshold`).
    """
    hpos = rgb2hed(image)[..., 0] > threshold
    inst = np.asarray(instance_map)
    fg = inst > 0
    dice = 2 * (hpos & fg).sum() / max(hpos.sum() + fg.sum(), 1)
    n = int(inst.max())
    if n == 0:
        return 0, 0, float(dice)
    frac = np.bincount(inst.ravel(), weights=hpos.ravel(), minlength=n + 1)[1:] / np.maximum(
        np.bincount(inst.ravel(), minlength=n + 1)[1:], 1
    )
    present = np.bincount(inst.ravel(), minlength=n + 1)[1:] > 0
    return int((frac[present] > 0.5).sum()), int(present.sum()), float(dice)


#: haematoxylin blobs smaller than this (px, full resolution) are not counted as nuclei
#: (HoVer-Net's 30 px rule)
MIN_BLOB_AREA = 30


def h_unlabeled(
    image: np.ndarray,
    instance_map: np.ndarray,
    threshold: float,
    min_area: int = MIN_BLOB_AREA,
    min_overlap: float = 0.5,
) -> tuple[int, int]:
    """(haematoxylin blobs without a label, haematoxylin blobs) of one pair: nucleus-sized
    components of ``H > threshold`` (8-connected, at least ``min_area`` px) with less than
    ``min_overlap`` of their pixels on the label's foreground. The label-free count of nuclei
    an image shows and its label lacks (no segmenter involved).

    image: uint8 (H, W, 3) RGB; instance_map: int (H, W), 0 = background."""
    hpos = rgb2hed(image)[..., 0] > threshold
    blobs, _ = ndi.label(hpos, structure=np.ones((3, 3)))
    area = np.bincount(blobs.ravel())
    blobs[(area < min_area)[blobs]] = 0  # background (id 0) stays 0
    n_blobs = int((area[1:] >= min_area).sum())
    return len(uncovered(blobs, np.asarray(instance_map) > 0, min_overlap)), n_blobs


def agreement(images, instance_maps, threshold: float) -> dict[str, float]:
    """Image-label agreement of a set: fraction of visible nuclei (pooled), mean pixel Dice."""
    counts = [visible_nuclei(i, m, threshold) for i, m in zip(images, instance_maps)]
    visible, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
    return {
        "visible_fraction": visible / max(total, 1),
        "pixel_dice": float(np.mean([c[2] for c in counts])),
        "n_nuclei": total,
    }
