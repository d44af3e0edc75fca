"""What a researcher's folder must hold before any training: every image labeled, labels that
are instance maps (one id per nucleus, not a binary mask), and enough nuclei to learn from.

Every problem is one line naming the file (:class:`nudiff.utils.DataError`), found before
anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from nudiff.data.dataset import Sample, load_folder
from nudiff.utils import DataError

MIN_NUCLEI = 30  # fewer labeled nuclei than this leave nothing to learn a nucleus from


def looks_binary(instance_map: np.ndarray) -> bool:
    """A mask whose one foreground id covers several separate blobs: nuclei not told apart.

    ``instance_map``: int (H, W). True when it has a single id > 0 (e.g. 1 or 255) whose pixels
    form at least two 8-connected components."""
    ids = np.unique(instance_map)
    ids = ids[ids > 0]
    if len(ids) != 1:
        return False
    _, n = ndimage.label(instance_map == ids[0], structure=np.ones((3, 3)))
    return n >= 2


def count_nuclei(samples: list[Sample]) -> int:
    return int(sum(len(np.unique(s.instance_map[s.instance_map > 0])) for s in samples))


def check_labeled_folder(
    folder: str | os.PathLike,
    held_out: int = 0,
    min_nuclei: int = MIN_NUCLEI,
    purpose: str = "to train on",
) -> list[Sample]:
    """Load the paired folder ``folder`` (every problem listed: an image without its label, an
    unreadable file, shapes that differ) and check its labels; ``held_out`` of its images will
    be held out for evaluation, so at least one more is needed to train on; ``min_nuclei`` labeled
    nuclei are needed for ``purpose`` (a test folder: one, "to score on"). Returns the samples.

    Raises:
        DataError: naming the folder or the file, one line per problem.
    """
    folder = Path(folder)
    samples = load_folder(folder, progress=False)
    for s in samples:
        if looks_binary(s.instance_map):
            raise DataError(
                folder / "labels" / s.name,
                "is a binary mask, not an instance map: each "
                "nucleus needs its own id (1, 2, 3, ...; 0 = background)",
            )
    if len(samples) <= held_out:
        raise DataError(
            folder,
            f"holds {len(samples)} labeled image(s): {held_out} held out for "
            "evaluation leave none to train on (give --test DIR, or --hold-out 0 with --test)",
        )
    n = count_nuclei(samples)
    if n < min_nuclei:
        raise DataError(
            folder, f"holds {n} labeled nuclei; at least {min_nuclei} are needed {purpose}"
        )
    return samples
