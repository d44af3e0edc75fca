"""Stain normalisation of H&E images to a reference set (torchstain, numpy backend).

Used to pull synthetic images' colour onto the labeled subset's before a segmenter sees them
(a lever of the pair-quality work): ``reinhard`` matches per-channel Lab mean and sd,
``macenko`` re-expresses the image in the reference's H and E stain vectors. The reference is
fitted once on a mosaic of the reference images, so a whole subset, not one patch, sets it —
which gives every normalised image the same colour statistics. ``reinhard-each`` instead gives
each image the Lab mean and sd of *one* reference image, picked by the image's own content, so a
set keeps the spread of real colours between patches.
"""

from __future__ import annotations

import os
import warnings
import zlib
from pathlib import Path

import numpy as np

from nudiff.utils import NudiffError

STAIN_METHODS = ("none", "reinhard", "macenko", "reinhard-each")


def _mosaic(images: list[np.ndarray], side: int = 1024) -> np.ndarray:
    """The reference images tiled into one uint8 (<= side, <= side, 3) picture (crops of equal
    size, at most as many as fit), so the fit sees every stain of the set in proportion."""
    size = min(min(im.shape[:2]) for im in images)
    per_row = max(1, side // size)
    tiles = [im[:size, :size] for im in images[: per_row * per_row]]
    rows = [np.concatenate(tiles[i : i + per_row], axis=1) for i in range(0, len(tiles), per_row)]
    width = rows[0].shape[1]
    rows = [r for r in rows if r.shape[1] == width] or rows[:1]
    return np.concatenate(rows, axis=0)


class PerImageReinhard:
    """Reinhard to one reference image per normalised image: reference ``crc32(image) % n``, so
    the choice is deterministic and independent of the order images come in (resumed runs)."""

    def __init__(self, reference: list[np.ndarray]):
        import torchstain

        self.normalizers = []
        for image in reference:
            n = torchstain.normalizers.ReinhardNormalizer(backend="numpy")
            n.fit(image)
            self.normalizers.append(n)

    def pick(self, image: np.ndarray) -> int:
        return zlib.crc32(np.ascontiguousarray(image).tobytes()) % len(self.normalizers)

    def normalize(self, image: np.ndarray) -> np.ndarray:
        return self.normalizers[self.pick(image)].normalize(image)


def fit_stain_normalizer(reference: list[np.ndarray], method: str):
    """A torchstain normalizer fitted to ``reference`` (uint8 RGB images); ``None`` for "none"."""
    if method not in STAIN_METHODS:
        raise NudiffError(f"stain normalisation {method!r}: choose from {STAIN_METHODS}")
    if method == "none":
        return None
    if not reference:
        raise NudiffError("stain normalisation needs at least one reference image")
    if method == "reinhard-each":
        return PerImageReinhard(reference)
    import torchstain

    normalizer = (
        torchstain.normalizers.ReinhardNormalizer
        if method == "reinhard"
        else torchstain.normalizers.MacenkoNormalizer
    )(backend="numpy")
    normalizer.fit(_mosaic(reference))
    return normalizer


def normalize_stain(image: np.ndarray, normalizer) -> np.ndarray:
    """``image`` uint8 (H, W, 3) in the reference's stain; unchanged where the method cannot
    estimate the image's stains (e.g. Macenko on an image with almost no tissue)."""
    if normalizer is None:
        return image
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = normalizer.normalize(image)
    except (np.linalg.LinAlgError, ValueError, IndexError):
        return image
    out = out[0] if isinstance(out, tuple) else out
    out = np.asarray(out)
    if out.shape != image.shape or not np.isfinite(out).all():
        return image
    return np.clip(out, 0, 255).astype(np.uint8)


def normalize_folder(
    folder: str | os.PathLike, reference: list[np.ndarray], out: str | os.PathLike, method: str
) -> dict:
    """Copy paired folder ``folder`` to ``out`` with every image stain-normalised to
    ``reference``; labels unchanged. Returns (and writes) ``out/manifest.json``."""
    from nudiff.data.dataset import load_folder
    from nudiff.data.io import write_image, write_instance_map
    from nudiff.utils import progress_bar, read_json, write_json

    folder, out = Path(folder), Path(out)
    normalizer = fit_stain_normalizer(reference, method)
    samples = load_folder(folder, progress=False)
    unchanged = 0
    for s in progress_bar(samples, desc=f"stain {method}", unit="image"):
        image = normalize_stain(s.image, normalizer)
        unchanged += int(image is s.image)
        write_image(out / "images" / f"{s.name}.png", image)
        write_instance_map(out / "labels" / f"{s.name}.png", s.instance_map)
    source = read_json(folder / "manifest.json") if (folder / "manifest.json").exists() else {}
    manifest = {
        "source": str(folder),
        "stain_method": method,
        "n_reference": len(reference),
        "n": len(samples),
        "n_unchanged": unchanged,
        "source_manifest": {k: v for k, v in source.items() if k != "samples"},
    }
    write_json(out / "manifest.json", manifest)
    return manifest
