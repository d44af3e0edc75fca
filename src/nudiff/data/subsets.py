"""Labeled subsets of a patch pool, measured in **nuclei**, as the paper's 10/20/50/100 %.

The *nuclei fraction* of a set of patches is the number of unique ``(source folder, source
image, nucleus id)`` triples that any chosen patch contains, divided by the number of such
triples over the whole pool. Patches overlap (stride < size), so it is neither a fraction of
patches nor of pixels.

A strategy only *orders* the pool; ``choose_subset`` then takes patches in that order until
the target nuclei fraction is reached. Strategies live in the ``STRATEGIES`` registry:

- ``"random"``: a seeded shuffle.
- ``"kmeans"``: the paper's diversity idea without pretrained weights. Each patch gets 16
  hand-made features (see ``patch_features``), standardised; k-means (K = 6,
  ``scipy.cluster.vq.kmeans2``, k-means++ init seeded by ``seed``) clusters them; the order is
  round-robin over clusters, each time the not-yet-taken patch nearest its centroid. (The paper
  used ResNet-50 features and tuned a per-cluster proportion by hand.) Well separated data
  cluster the same way for most seeds, so different seeds may give the same subset.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.cluster.vq import kmeans2
from skimage.color import rgb2hed
from skimage.measure import regionprops

from nudiff.data.io import read_image, read_instance_map
from nudiff.utils import progress_bar, write_json

FEATURE_NAMES = (
    [f"{s}_{c}" for s in ("mean", "sd") for c in ("r", "g", "b")]
    + [f"{s}_{c}" for s in ("mean", "sd") for c in ("h", "e", "d")]
    + ["n_nuclei", "mean_area", "mean_eccentricity", "foreground_fraction"]
)

FeatureFn = Callable[[], np.ndarray]
OrderFn = Callable[..., list[int]]


@dataclass
class SubsetConfig:
    """How labeled subsets are chosen (YAML section ``data``)."""

    fractions: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.5, 1.0])
    strategy: str = "kmeans"
    seed: int = 0
    n_clusters: int = 6


def patch_features(image: np.ndarray, instance_map: np.ndarray) -> np.ndarray:
    """16 features of one patch, ``float64 (16,)``, in the order of ``FEATURE_NAMES``.

    Mean and sd of RGB (in [0, 1]) and of the ``rgb2hed`` stain channels; number of nuclei,
    mean nucleus area (px), mean eccentricity and foreground fraction of ``instance_map``.
    """
    rgb = image.reshape(-1, 3).astype(np.float64) / 255.0
    hed = rgb2hed(image).reshape(-1, 3)
    props = regionprops(instance_map)
    areas = [p.area for p in props]
    ecc = [p.eccentricity for p in props]
    return np.concatenate(
        [
            rgb.mean(0),
            rgb.std(0),
            hed.mean(0),
            hed.std(0),
            [
                len(props),
                np.mean(areas) if areas else 0.0,
                np.mean(ecc) if ecc else 0.0,
                float((instance_map > 0).mean()),
            ],
        ]
    )


def features_from_dir(
    patch_dir: str | os.PathLike, patches: list[dict[str, Any]], progress: bool = False
) -> np.ndarray:
    """``patch_features`` of every manifest patch read from ``patch_dir``: ``(N, 16)``."""
    patch_dir = Path(patch_dir)
    rows = []
    for p in progress_bar(patches, desc="patch features", unit="patch", disable=not progress):
        image = read_image(patch_dir / p["image_file"])
        rows.append(patch_features(image, read_instance_map(patch_dir / p["label_file"])))
    return np.array(rows, dtype=np.float64).reshape(len(patches), len(FEATURE_NAMES))


def order_random(
    patches: list[dict], rng: np.random.Generator, features: FeatureFn, **_
) -> list[int]:
    """A seeded permutation of the pool."""
    return rng.permutation(len(patches)).tolist()


def order_kmeans(
    patches: list[dict],
    rng: np.random.Generator,
    features: FeatureFn,
    n_clusters: int = 6,
    **_: Any,
) -> list[int]:
    """Round-robin over k-means clusters, nearest-to-centroid first (see module docstring)."""
    feats = np.asarray(features(), dtype=np.float64)
    if len(feats) == 0:
        return []
    sd = feats.std(0)
    z = (feats - feats.mean(0)) / np.where(sd > 0, sd, 1.0)
    k = max(1, min(n_clusters, len(z)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty clusters just stay empty
        centroids, labels = kmeans2(z, k, minit="++", rng=rng)
    queues = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        dist = np.linalg.norm(z[members] - centroids[c], axis=1)
        queues.append(members[np.lexsort((members, dist))].tolist())
    order: list[int] = []
    while any(queues):
        for q in queues:
            if q:
                order.append(q.pop(0))
    return order


STRATEGIES: dict[str, OrderFn] = {"random": order_random, "kmeans": order_kmeans}


def nuclei_keys(patch: dict[str, Any]) -> set[tuple[str, str, int]]:
    """The pool-wide identities ``(source, image, id)`` of the nuclei in a manifest patch."""
    return {(patch["source"], patch["image"], int(i)) for i in patch["source_ids"]}


def choose_subset(
    manifest_patches: list[dict[str, Any]],
    fraction: float,
    strategy: str = "random",
    seed: int = 0,
    *,
    features: np.ndarray | None = None,
    patch_dir: str | os.PathLike | None = None,
    n_clusters: int = 6,
) -> list[str]:
    """Names of the patches whose nuclei cover ``fraction`` of the pool's nuclei.

    Args:
        manifest_patches: the ``patches`` list of a patch manifest (``cut_patches``).
        fraction: target nuclei fraction in (0, 1]; 1.0 returns every patch.
        strategy: a key of ``STRATEGIES``.
        seed: makes the choice deterministic.
        features: ``(N, 16)`` precomputed ``patch_features`` (``"kmeans"`` only); else they
            are read from ``patch_dir`` when the strategy asks for them.
    Returns:
        patch names in manifest order.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown subset strategy {strategy!r}; known: {sorted(STRATEGIES)}")
    if fraction >= 1.0:
        return [p["name"] for p in manifest_patches]

    def get_features() -> np.ndarray:
        if features is not None:
            return features
        if patch_dir is None:
            raise ValueError(f"strategy {strategy!r} needs features or patch_dir")
        return features_from_dir(patch_dir, manifest_patches)

    keys = [nuclei_keys(p) for p in manifest_patches]
    target = math.ceil(fraction * len(set().union(*keys)) - 1e-9)
    rng = np.random.default_rng(seed)
    order = STRATEGIES[strategy](manifest_patches, rng, get_features, n_clusters=n_clusters)
    chosen: set[int] = set()
    covered: set[tuple[str, str, int]] = set()
    for i in order:
        if len(covered) >= target:
            break
        chosen.add(i)
        covered |= keys[i]
    return [p["name"] for i, p in enumerate(manifest_patches) if i in chosen]


def subset_summary(manifest_patches: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Achieved nuclei fraction, patch and source-image counts of a chosen subset."""
    chosen = set(names)
    pool: set[tuple[str, str, int]] = set()
    covered: set[tuple[str, str, int]] = set()
    images = set()
    for p in manifest_patches:
        keys = nuclei_keys(p)
        pool |= keys
        if p["name"] in chosen:
            covered |= keys
            images.add((p["source"], p["image"]))
    return {
        "achieved_fraction": len(covered) / len(pool) if pool else 0.0,
        "n_patches": len(chosen),
        "n_source_images": len(images),
        "n_nuclei_covered": len(covered),
        "n_nuclei_total": len(pool),
    }


def subset_filename(fraction: float, seed: int) -> str:
    return f"frac{fraction:.2f}_seed{seed}.json"


def write_subset(
    out_dir: str | os.PathLike,
    manifest_patches: list[dict[str, Any]],
    names: list[str],
    fraction: float,
    seed: int,
    strategy: str,
) -> dict[str, Any]:
    """Write ``out_dir/frac{f:.2f}_seed{seed}.json`` and return its content."""
    record = {
        "fraction": fraction,
        "seed": seed,
        "strategy": strategy,
        **subset_summary(manifest_patches, names),
        "patches": list(names),
    }
    write_json(Path(out_dir) / subset_filename(fraction, seed), record)
    return record


def write_subsets(
    out_dir: str | os.PathLike,
    manifest_patches: list[dict[str, Any]],
    cfg: SubsetConfig,
    patch_dir: str | os.PathLike,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Choose and write one subset per ``cfg.fractions`` (features read once from
    ``patch_dir`` when the strategy is not ``"random"``); return ``{file name: summary}``."""
    features = None
    if cfg.strategy != "random" and any(f < 1.0 for f in cfg.fractions):
        features = features_from_dir(patch_dir, manifest_patches, progress)
    written = {}
    for fraction in cfg.fractions:
        names = choose_subset(
            manifest_patches,
            fraction,
            cfg.strategy,
            cfg.seed,
            features=features,
            patch_dir=patch_dir,
            n_clusters=cfg.n_clusters,
        )
        record = write_subset(out_dir, manifest_patches, names, fraction, cfg.seed, cfg.strategy)
        written[subset_filename(fraction, cfg.seed)] = {
            k: v for k, v in record.items() if k != "patches"
        }
    return written
