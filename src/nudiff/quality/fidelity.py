"""Label fidelity: does the image show the nuclei its label says?

A segmenter trained on real data segments every image; its prediction is scored against the
pair's own label (Dice, AJI, PQ, ... of :func:`nudiff.metrics.instance_metrics`). On real pairs
this is simply the segmenter's accuracy (the reference); a synthetic pair scoring far below it
has a label the image does not show, which is what misleads a segmenter trained on it.
Inference is the segmenter's own (:func:`nudiff.segment.predict.predict_with_config`: its
tiling, test-time augmentation and post-processing).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from nudiff.utils import progress_bar

#: the per-pair scores kept (a subset of nudiff.metrics.METRICS)
FIDELITY_METRICS = ("dice", "aji", "pq")


def load(run_dir: str | os.PathLike):
    """(model, config) of a trained ``nudiff segment train`` run, on the CPU."""
    from nudiff.segment.predict import load_segmenter

    return load_segmenter(run_dir)


def pair_fidelity(model, cfg, images: Sequence[np.ndarray], instance_maps: Sequence[np.ndarray],
                  progress: bool = True) -> list[dict[str, float]]:
    """Per pair, :data:`FIDELITY_METRICS` of the segmenter's prediction against the label.

    images: N uint8 (H, W, 3) (sizes may differ between pairs); instance_maps: N int (H, W);
    ``model``/``cfg`` from
    :func:`load` (or :func:`nudiff.segment.predict.load_segmenter`).
    """
    from nudiff.metrics import instance_metrics
    from nudiff.segment.predict import predict_with_config

    out = []
    for image, label in progress_bar(list(zip(images, instance_maps)), desc="label fidelity",
                                     unit="pair", disable=not progress):
        pred, _ = predict_with_config(model, cfg, np.ascontiguousarray(image))
        m = instance_metrics(label, pred)
        out.append({k: float(m[k]) for k in FIDELITY_METRICS})
    return out
