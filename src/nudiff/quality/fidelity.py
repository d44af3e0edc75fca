"""Label fidelity: does the image show the nuclei its label says, and only those?

A segmenter trained on real data segments every image; its prediction is scored against the
pair's own label (Dice, AJI, PQ, ... of :func:`nudiff.metrics.instance_metrics`). On real pairs
this is simply the segmenter's accuracy (the reference); a synthetic pair scoring far below it
has a label the image does not show, which is what misleads a segmenter trained on it.

Two rates say which way a pair disagrees (:func:`label_agreement`): the **unlabeled-nucleus
rate**, nuclei the segmenter finds where the label has none (a pair that shows a nucleus its
label calls background teaches the segmenter to miss nuclei), and the **missed-label rate**,
labeled nuclei the image does not show.
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
#: the per-pair rates of :func:`label_agreement`
FIDELITY_RATES = ("unlabeled_rate", "missed_rate")
#: a nucleus counts as there when at least this share of its pixels is covered by the other map
MIN_OVERLAP = 0.5


def uncovered(
    instances: np.ndarray, other_foreground: np.ndarray, min_overlap: float
) -> np.ndarray:
    """The ids of ``instances`` (> 0) with less than ``min_overlap`` of their pixels in
    ``other_foreground``."""
    ids = instances.ravel()
    area = np.bincount(ids)
    covered = np.bincount(
        ids, weights=other_foreground.ravel().astype(np.float64), minlength=len(area)
    )
    present = np.nonzero(area)[0]
    present = present[present > 0]
    return present[covered[present] < min_overlap * area[present]]


def label_agreement(
    label: np.ndarray, predicted: np.ndarray, min_overlap: float = MIN_OVERLAP
) -> dict[str, float]:
    """Which way an image and its label disagree, from a real-trained segmenter's ``predicted``
    instances.

    label, predicted: int (H, W) instance maps, 0 = background. A predicted nucleus with less
    than ``min_overlap`` of its pixels on labeled foreground is *unlabeled*; a labeled nucleus
    with less than ``min_overlap`` of its pixels on predicted foreground is *missed*.

    Returns ``unlabeled_rate`` (unlabeled / predicted nuclei, 0 when none is predicted),
    ``missed_rate`` (missed / labeled nuclei, 0 when none is labeled) and the counts
    ``n_unlabeled``, ``n_missed``, ``n_predicted``, ``n_labeled``.
    """
    label, predicted = np.asarray(label), np.asarray(predicted)
    unlabeled = uncovered(predicted, label > 0, min_overlap)
    missed = uncovered(label, predicted > 0, min_overlap)
    n_pred, n_label = len(np.unique(predicted[predicted > 0])), len(np.unique(label[label > 0]))
    return {
        "unlabeled_rate": len(unlabeled) / n_pred if n_pred else 0.0,
        "missed_rate": len(missed) / n_label if n_label else 0.0,
        "n_unlabeled": len(unlabeled),
        "n_missed": len(missed),
        "n_predicted": n_pred,
        "n_labeled": n_label,
    }


def unlabeled_nuclei(
    label: np.ndarray, predicted: np.ndarray, min_overlap: float = MIN_OVERLAP
) -> np.ndarray:
    """``predicted`` with only its unlabeled nuclei kept (the others set to 0): what a mosaic
    outlines in another colour."""
    predicted = np.asarray(predicted)
    return np.where(
        np.isin(predicted, uncovered(predicted, np.asarray(label) > 0, min_overlap)), predicted, 0
    )


def load(run_dir: str | os.PathLike):
    """(model, config) of a trained ``nudiff segment train`` run, on the CPU."""
    from nudiff.segment.predict import load_segmenter

    return load_segmenter(run_dir)


def pair_fidelity(
    model,
    cfg,
    images: Sequence[np.ndarray],
    instance_maps: Sequence[np.ndarray],
    progress: bool = True,
    unlabeled: list | None = None,
) -> list[dict[str, float]]:
    """Per pair, :data:`FIDELITY_METRICS` of the segmenter's prediction against the label and
    the :data:`FIDELITY_RATES` (:func:`label_agreement`).

    images: N uint8 (H, W, 3) (sizes may differ between pairs); instance_maps: N int (H, W);
    ``model``/``cfg`` from :func:`load` (or :func:`nudiff.segment.predict.load_segmenter`).
    unlabeled: a list that receives, per pair, the predicted nuclei the label lacks
    (:func:`unlabeled_nuclei`), for pictures.
    """
    from nudiff.metrics import instance_metrics
    from nudiff.segment.predict import predict_with_config

    out = []
    for image, label in progress_bar(
        list(zip(images, instance_maps)), desc="label fidelity", unit="pair", disable=not progress
    ):
        pred, _ = predict_with_config(model, cfg, np.ascontiguousarray(image))
        m = instance_metrics(label, pred)
        rates = label_agreement(label, pred)
        out.append(
            {k: float(m[k]) for k in FIDELITY_METRICS}
            | {k: float(rates[k]) for k in FIDELITY_RATES}
        )
        if unlabeled is not None:
            unlabeled.append(unlabeled_nuclei(label, pred))
    return out
