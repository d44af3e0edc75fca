"""Overlapping patches, as the NuDiff notebook's ``extract_patches``.

Windows of ``size`` on a grid of ``stride``, plus one more row/column flush with the
bottom/right border when the grid does not end there: a 1000 px side with 256/128 gives
origins 0, 128, ..., 640, 744, i.e. 7 x 7 = 49 patches. No patch is filtered out.

An image smaller than ``size`` along an axis is padded at the bottom/right up to ``size``:
the image by reflection (``np.pad(mode="reflect")``), the instance map with zeros (so padded
pixels are background, never mirrored nuclei). Patch origins stay in source coordinates.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from nudiff.data.dataset import Sample
from nudiff.data.io import write_image, write_instance_map
from nudiff.structure import relabel
from nudiff.utils import DataError, progress_bar, write_json

PATCH_MANIFEST = "manifest.json"


class Patch(NamedTuple):
    """One window: origin ``(y, x)`` in the source, ``uint8 (S, S, 3)``, ``int32 (S, S)``."""

    y: int
    x: int
    image: np.ndarray
    instance_map: np.ndarray


def window_origins(length: int, size: int, stride: int) -> list[int]:
    """Window starts along one axis: ``0, stride, ...`` plus one flush with the far end."""
    if size <= 0 or stride <= 0:
        raise ValueError(f"size and stride must be positive, got {size}, {stride}")
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def pad_to(image: np.ndarray, instance_map: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """Pad bottom/right up to ``size``: reflect the image, zero-fill the instance map."""
    pad_y, pad_x = max(0, size - image.shape[0]), max(0, size - image.shape[1])
    if not (pad_y or pad_x):
        return image, instance_map
    mode = "reflect" if min(image.shape[:2]) > 1 else "edge"  # reflect needs >= 2 pixels
    image = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), mode=mode)
    instance_map = np.pad(instance_map, ((0, pad_y), (0, pad_x)))
    return image, instance_map


def extract_patches(
    image: np.ndarray, instance_map: np.ndarray, size: int = 256, stride: int = 128
) -> list[Patch]:
    """Cut ``image`` ``uint8 (H, W, 3)`` and ``instance_map`` ``(H, W)`` into patches.

    Returns ``Patch(y, x, image (size, size, 3) uint8, instance_map (size, size) int32)`` in
    row-major order; each patch's ids are relabelled 1..N in increasing source-id order.
    """
    if image.shape[:2] != instance_map.shape:
        raise ValueError(f"image {image.shape[:2]} and instance map {instance_map.shape} differ")
    height, width = image.shape[:2]
    image, instance_map = pad_to(image, instance_map, size)
    patches = []
    for y in window_origins(height, size, stride):
        for x in window_origins(width, size, stride):
            window = (slice(y, y + size), slice(x, x + size))
            patches.append(Patch(y, x, image[window], relabel(instance_map[window])))
    return patches


def patch_name(image_name: str, y: int, x: int) -> str:
    return f"{image_name}_y{y:04d}_x{x:04d}"


def cut_patches(
    samples: list[Sample],
    size: int = 256,
    stride: int = 128,
    out_dir: str | os.PathLike = "patches",
    progress: bool = True,
) -> dict[str, Any]:
    """Cut every sample into patches and write them with a manifest; return the manifest.

    Writes ``out_dir/images/<name>.png`` (RGB), ``out_dir/labels/<name>.png`` (16-bit ids
    1..N) and ``out_dir/manifest.json``: ``{"size", "stride", "patches": [...]}`` where each
    patch records ``name, source`` (folder), ``image`` (source image name), ``y, x, size,
    n_nuclei, source_ids`` (``source_ids[i]`` is the source-image id of patch nucleus i + 1)
    and its ``image_file``/``label_file`` relative to ``out_dir``. Earlier patch files in
    ``out_dir`` that are not in the new manifest are removed.
    """
    out_dir = Path(out_dir)
    names = [s.name for s in samples]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DataError(out_dir, f"duplicate source image names {dup}; patch names would clash")
    entries = []
    for sample in progress_bar(
        samples, desc="cutting patches", unit="image", disable=not progress
    ):
        padded_map = pad_to(sample.image, sample.instance_map, size)[1]
        for y, x, img, inst in extract_patches(sample.image, sample.instance_map, size, stride):
            name = patch_name(sample.name, y, x)
            ids = np.unique(padded_map[y : y + size, x : x + size])
            image_file = write_image(out_dir / "images" / f"{name}.png", img)
            label_file = write_instance_map(out_dir / "labels" / f"{name}.png", inst)
            entries.append(
                {
                    "name": name,
                    "source": sample.source,
                    "image": sample.name,
                    "y": y,
                    "x": x,
                    "size": size,
                    "n_nuclei": int(inst.max()),
                    "source_ids": ids[ids > 0].tolist(),
                    "image_file": image_file.relative_to(out_dir).as_posix(),
                    "label_file": label_file.relative_to(out_dir).as_posix(),
                }
            )
    keep = {e["image_file"] for e in entries} | {e["label_file"] for e in entries}
    remove_stale(out_dir, ("images", "labels"), keep)
    manifest = {"size": size, "stride": stride, "patches": entries}
    write_json(out_dir / PATCH_MANIFEST, manifest)
    return manifest


def remove_stale(root: Path, subdirs: tuple[str, ...], keep: set[str]) -> None:
    """Delete image files under ``root/<subdir>`` whose relative path is not in ``keep``."""
    for sub in subdirs:
        folder = root / sub
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            rel = path.relative_to(root).as_posix()
            if path.suffix in (".png", ".tif") and path.is_file() and rel not in keep:
                path.unlink()
