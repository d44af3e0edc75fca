"""Where a pair's labels come from (``synthesis.structures``): one source per choice, each a
callable ``draw(first_index, count) -> list[LabelWindow]`` (:data:`LabelSource`).

- ``sampled``: structures sampled from the structure model, decoded to instance maps;
- ``subset``: random windows of the labeled subset's own instance maps under one of the 8
  flips/rotations (:func:`subset_window`);
- ``copypaste``: those windows with more of the subset's nuclei pasted in
  (:func:`pasted_window`).

Window ``first_index + j`` is drawn from ``(seed, first_index + j)`` alone, so a source gives
the same windows however a run is chunked or resumed.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
from skimage.segmentation import relabel_sequential

from nudiff.data.copypaste import CopyPasteConfig, donors_of, paste_nuclei
from nudiff.data.io import read_instance_map
from nudiff.data.resize import resize_instance_maps
from nudiff.diffusion.sample import sample_structures
from nudiff.structure import decode
from nudiff.synthesis.config import SynthesisConfig
from nudiff.utils import NudiffError


class LabelWindow(NamedTuple):
    """One window of labels for the image model to draw on.

    Attributes:
        instance_map: int32 (h, w) labels at the structure model's scale: what the structure
            check sees and the image is conditioned on.
        full_size: int32 (H, W) the exact full-resolution labels of a real window; ``None``
            for a sampled window, whose full-size labels are ``instance_map`` upsampled as
            ``label_upsampling`` says.
        structure: float32 (3, h, w) the sampled structure the labels were decoded from;
            ``None`` for a real window (nothing was sampled).
    """

    instance_map: np.ndarray
    full_size: np.ndarray | None = None
    structure: np.ndarray | None = None

    @property
    def exact(self) -> bool:
        """The labels are real, known exactly at full resolution (``full_size``)."""
        return self.full_size is not None


LabelSource = Callable[[int, int], list[LabelWindow]]


def sampled_structures(model, cfg: SynthesisConfig) -> LabelSource:
    """Windows decoded (``cfg.decode``) from structures of ``model`` (a structure denoiser)
    sampled as ``cfg.structure_sample`` says, from noise (``cfg.seed``, index)."""
    sample = cfg.structure_sample

    def draw(first_index: int, count: int) -> list[LabelWindow]:
        structures = sample_structures(
            model,
            count,
            seed=cfg.seed,
            first_index=first_index,
            size=cfg.size,
            sampler=sample.sampler,
            steps=sample.steps,
            batch_size=cfg.batch_size,
            clip_x0=sample.clip_x0,
            precision=cfg.precision,
            progress=False,
        )
        return [LabelWindow(decode(s, cfg.decode), structure=s) for s in structures]

    return draw


def real_windows(
    cfg: SynthesisConfig, real_dir: Path | None, full_side: int, scale: float
) -> LabelSource:
    """``full_side``-px windows of the labels in ``real_dir``/labels (``cfg.structures``:
    ``subset`` or ``copypaste``), taken to the model ``scale``; window ``i`` from the
    generator ``(cfg.seed, i)``.

    Raises:
        NudiffError: no ``real_dir``, or no label map of at least ``full_side`` px a side.
    """
    label_maps = subset_labels(real_dir, full_side, cfg.structures)
    if cfg.structures == "copypaste":
        donors, paste = label_donors(label_maps, cfg.pasted_nuclei)
        window = partial(pasted_window, label_maps, donors, full_side, cfg=paste)
    else:
        window = partial(subset_window, label_maps, full_side)

    def draw(first_index: int, count: int) -> list[LabelWindow]:
        rngs = [np.random.default_rng([cfg.seed, first_index + j]) for j in range(count)]
        full = [window(rng=rng) for rng in rngs]
        return [LabelWindow(resize_instance_maps(f[None], scale)[0], full_size=f) for f in full]

    return draw


def subset_window(label_maps: list[np.ndarray], side: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``side``-px window of one of ``label_maps`` under one of the 8 flips/rotations,
    relabelled 1..n (int32)."""
    m = label_maps[int(rng.integers(len(label_maps)))]
    y, x = int(rng.integers(m.shape[0] - side + 1)), int(rng.integers(m.shape[1] - side + 1))
    window = np.rot90(m[y : y + side, x : x + side], int(rng.integers(4)))
    if rng.integers(2):
        window = window[:, ::-1]
    return relabel_sequential(np.ascontiguousarray(window, dtype=np.int32))[0]


def pasted_window(
    label_maps: list[np.ndarray],
    donors: list,
    side: int,
    rng: np.random.Generator,
    cfg: CopyPasteConfig,
) -> np.ndarray:
    """:func:`subset_window` with up to ``cfg.nuclei`` of ``donors`` (label-only
    :class:`nudiff.data.copypaste.Donor`) pasted at free positions, ids max+1… (int32)."""
    return paste_nuclei(None, subset_window(label_maps, side, rng), donors, rng, cfg)[1]


def label_donors(label_maps: list[np.ndarray], nuclei: int) -> tuple[list, CopyPasteConfig]:
    """Label-only donors of the subset's maps and the paste configuration."""
    cfg = CopyPasteConfig(nuclei=nuclei)
    maps = [SimpleNamespace(image=None, instance_map=m) for m in label_maps]
    return donors_of(maps, cfg, pad=cfg.margin), cfg


def subset_labels(real_dir: Path | None, side: int, source: str = "subset") -> list[np.ndarray]:
    """The instance maps of ``real_dir``/labels, each at least ``side`` px a side."""
    if real_dir is None:
        raise NudiffError(
            f"synthesis.structures '{source}' needs the labeled subset's folder (--real)"
        )
    paths = sorted((Path(real_dir) / "labels").glob("*.png"))
    maps = [read_instance_map(p) for p in paths]
    small = [p.name for p, m in zip(paths, maps) if min(m.shape) < side]
    if not maps or small:
        found = "none found" if not maps else "smaller: " + ", ".join(small[:3])
        raise NudiffError(
            f"{Path(real_dir) / 'labels'}: synthesis.structures '{source}' needs "
            f"label maps of at least {side} px a side ({found})"
        )
    return maps
