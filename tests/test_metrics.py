import numpy as np
import pytest
from scipy import ndimage as ndi

from nudiff.metrics import (
    aji,
    aji_plus,
    dice,
    evaluate_folders,
    format_table,
    instance_metrics,
    mean_metrics,
    panoptic_quality,
)


def squares(*boxes, shape=(10, 10)):
    m = np.zeros(shape, np.int32)
    for i, (y0, y1, x0, x1) in enumerate(boxes, start=1):
        m[y0:y1, x0:x1] = i
    return m


def test_identical_maps_are_perfect():
    gt = squares((0, 4, 0, 4), (5, 9, 5, 9))
    pred = np.where(gt == 1, 7, np.where(gt == 2, 3, 0))  # ids differ, same nuclei
    assert instance_metrics(gt, pred) == pytest.approx(
        {"dice": 1, "aji": 1, "aji_plus": 1, "dq": 1, "sq": 1, "pq": 1}, abs=1e-6
    )


def test_both_empty_and_one_empty():
    z = np.zeros((5, 5), np.int32)
    one = squares((0, 2, 0, 2), shape=(5, 5))
    assert instance_metrics(z, z) == {
        m: 1.0 for m in ("dice", "aji", "aji_plus", "dq", "sq", "pq")
    }
    for gt, pred in ((one, z), (z, one)):
        assert all(v == 0.0 for v in instance_metrics(gt, pred).values())


def test_hand_computed_shifted_nucleus():
    # GT 4x4=16 px; prediction 4x4 shifted by one column: inter 12, union 20
    gt = squares((0, 4, 0, 4))
    pred = squares((0, 4, 1, 5))
    assert dice(gt, pred) == pytest.approx(24 / 32)
    assert aji(gt, pred) == pytest.approx(12 / 20)
    dq, sq, pq = panoptic_quality(gt, pred)
    assert (dq, sq, pq) == pytest.approx((1.0, 0.6, 0.6), abs=1e-6)


def test_hand_computed_merged_prediction():
    # two GT nuclei of 8 px each; one prediction covering both (16 px)
    gt = squares((0, 2, 0, 4), (2, 4, 0, 4))
    pred = squares((0, 4, 0, 4))
    # AJI: both GT match the same prediction (IoU 0.5 each): inter 8+8, union 16+16
    assert aji(gt, pred) == pytest.approx(16 / 32)
    # AJI+: one-to-one; second GT unpaired adds 8 to the union: 8 / (16 + 8)
    assert aji_plus(gt, pred) == pytest.approx(8 / 24)
    # PQ: IoU 0.5 is not > 0.5 -> no match: TP 0, FP 1, FN 2
    assert panoptic_quality(gt, pred) == pytest.approx((0.0, 0.0, 0.0))


def test_hand_computed_split_prediction():
    # one GT of 16 px split into a 12 px and a 4 px prediction
    gt = squares((0, 4, 0, 4))
    pred = squares((0, 4, 0, 3), (0, 4, 3, 4))
    # AJI: GT matched to the 12-px part (IoU .75): inter 12, union 16; the 4-px part is an
    # unpaired prediction: union += 4
    assert aji(gt, pred) == pytest.approx(12 / 20)
    # PQ: TP 1 (IoU .75), FP 1: DQ = 1/(1+.5) ; SQ = .75
    dq, sq, pq = panoptic_quality(gt, pred)
    assert dq == pytest.approx(2 / 3) and sq == pytest.approx(0.75, abs=1e-6)
    assert pq == pytest.approx(0.5, abs=1e-6)


def test_missed_nucleus_adds_its_area_to_union():
    gt = squares((0, 4, 0, 4), (6, 8, 6, 8))
    pred = squares((0, 4, 0, 4))
    assert aji(gt, pred) == pytest.approx(16 / (16 + 4))
    assert panoptic_quality(gt, pred)[0] == pytest.approx(1 / 1.5)


def _perturbed(gt: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pred = np.roll(gt, (rng.integers(-2, 3), rng.integers(-2, 3)), axis=(0, 1))
    ids = np.unique(pred)[1:]
    drop = rng.choice(ids, size=len(ids) // 10, replace=False)
    pred = np.where(np.isin(pred, drop), 0, pred)
    return ndi.grey_dilation(pred, size=2) if seed % 2 else pred


@pytest.mark.parametrize("seed", range(4))
def test_pq_equals_cellseg_metrics(seed, monuseg):
    from cellseg_metrics import panoptic_quality as ref_pq

    from nudiff.data.io import read_instance_map

    path = sorted((monuseg / "train" / "labels").glob("*.png"))[seed]
    gt = read_instance_map(path)[:400, :400]
    pred = _perturbed(gt, seed)
    ref = ref_pq(gt, pred)
    dq, sq, pq = panoptic_quality(gt, pred)
    assert (dq, sq, pq) == pytest.approx((ref["dq"], ref["sq"], ref["pq"]), abs=1e-6)
    # cellseg-metrics' AJI matches by largest intersection, ours by largest IoU: close, not equal
    from cellseg_metrics import aggregated_jaccard_index

    assert aji(gt, pred) == pytest.approx(aggregated_jaccard_index(gt, pred), abs=0.02)


def test_pq_equals_cellseg_metrics_synthetic():
    from cellseg_metrics import panoptic_quality as ref_pq

    rng = np.random.default_rng(0)
    gt = ndi.label(rng.random((80, 80)) > 0.7)[0]
    pred = ndi.label(ndi.binary_dilation(gt > 0))[0]
    ref = ref_pq(gt, pred)
    assert panoptic_quality(gt, pred) == pytest.approx((ref["dq"], ref["sq"], ref["pq"]), abs=1e-6)


def test_a_whole_1000px_image(monuseg):
    # speed lives in benchmarks/metrics_speed.py (timed tests flake on a shared CPU)
    from nudiff.data.io import read_instance_map

    gt = read_instance_map(sorted((monuseg / "train" / "labels").glob("*.png"))[0])
    assert instance_metrics(gt, gt)["aji"] == pytest.approx(1.0)
    m = instance_metrics(gt, _perturbed(gt, 1))
    assert 0.3 < m["aji"] < 1.0 and 0.3 < m["pq"] < 1.0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        instance_metrics(np.zeros((3, 3)), np.zeros((3, 4)))


def test_evaluate_folders_writes_csv_json_and_mean(tmp_path):
    from nudiff.data.io import write_instance_map
    from nudiff.utils import DataError

    gt_a = squares((0, 4, 0, 4))
    gt_b = squares((0, 4, 0, 4), (6, 8, 6, 8))
    for name, gt, pred in (("a", gt_a, gt_a), ("b", gt_b, squares((0, 4, 0, 4)))):
        write_instance_map(tmp_path / "gt" / "labels" / f"{name}.png", gt)
        write_instance_map(tmp_path / "pred" / f"{name}.png", pred)
    rep = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "out")
    assert rep["n_images"] == 2
    assert rep["mean"]["aji"] == pytest.approx((1 + 0.8) / 2)
    assert rep["mean"] == mean_metrics(rep["per_image"])
    assert (tmp_path / "out" / "metrics.csv").read_text().splitlines()[-1].startswith("mean,")
    assert "mean" in format_table(rep)
    (tmp_path / "pred" / "b.png").unlink()
    with pytest.raises(DataError, match="no prediction"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt")
