"""Which way an image and its label disagree: unlabeled nuclei and missed labels (pure)."""

import numpy as np
import pytest

from nudiff.quality.fidelity import label_agreement, unlabeled_nuclei
from nudiff.quality.filter import FilterConfig, check_filter, select_pairs
from nudiff.utils import NudiffError


def _maps():
    label = np.zeros((40, 40), np.int32)
    label[2:8, 2:8], label[12:18, 12:18], label[30:36, 30:36] = 1, 2, 3
    pred = np.zeros_like(label)
    pred[2:8, 2:8] = 5  # label 1, found
    pred[13:19, 13:19] = 6  # label 2, found shifted by one pixel (25 of 36 pixels on it)
    pred[22:26, 2:6] = 7  # where the label has none: unlabeled
    pred[31:33, 33:40] = (
        8  # 6 of its 14 pixels on label 3: unlabeled; label 3: 6 of 36 found, missed
    )
    return label, pred


def test_unlabeled_nuclei_and_missed_labels_are_counted_by_overlap():
    label, pred = _maps()
    r = label_agreement(label, pred)
    assert (r["n_predicted"], r["n_labeled"], r["n_unlabeled"], r["n_missed"]) == (4, 3, 2, 1)
    assert r["unlabeled_rate"] == pytest.approx(2 / 4) and r["missed_rate"] == pytest.approx(1 / 3)
    assert set(np.unique(unlabeled_nuclei(label, pred))) == {0, 7, 8}
    assert label_agreement(label, label) == {
        "unlabeled_rate": 0.0,
        "missed_rate": 0.0,
        "n_unlabeled": 0,
        "n_missed": 0,
        "n_predicted": 3,
        "n_labeled": 3,
    }
    empty = np.zeros_like(label)
    assert label_agreement(empty, empty)["unlabeled_rate"] == 0.0
    assert (
        label_agreement(label, empty)["missed_rate"] == 1.0
        and label_agreement(empty, pred)["unlabeled_rate"] == 1.0
    )


def test_the_filter_rejects_pairs_with_too_many_unlabeled_nuclei():
    scores = {
        k: {"count": 5.0, "fidelity_pq": pq, "fidelity_unlabeled_rate": u}
        for k, pq, u in (("a", 0.9, 0.5), ("b", 0.6, 0.0), ("c", 0.7, 0.1))
    }
    kept, rejected = select_pairs(scores, FilterConfig(max_unlabeled_rate=0.2, keep_top=2 / 3))
    assert kept == ["b", "c"] and rejected == {"a": "unlabeled_nuclei"}
    with pytest.raises(NudiffError, match="max_unlabeled_rate need a segmenter"):
        check_filter(FilterConfig(max_unlabeled_rate=0.2), None)
