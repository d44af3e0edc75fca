"""The building blocks of `nudiff quality`: statistics, W1, colour, texture, KID, C2ST."""

import numpy as np
import pytest
from quality.quality_fixtures import colour_shift, he_pair

from helpers import disk_instance_map
from nudiff.quality import stats
from nudiff.quality.c2st import c2st
from nudiff.quality.kid import encoder_features, kid, mmd2_unbiased


def test_statistics_of_hand_made_maps():
    inst = disk_instance_map((64, 64), ((15, 15), (45, 45)), 5)
    st = stats.statistics([inst, np.zeros_like(inst)])
    assert st["count"].tolist() == [2, 0]
    assert len(st["area"]) == 2 and st["area"][0] == (inst == 1).sum()
    assert np.all(st["eccentricity"] < 0.2) and np.all(st["solidity"] > 0.9)
    np.testing.assert_allclose(st["equivalent_diameter"], np.sqrt(4 * st["area"] / np.pi))
    p = stats.pair_statistics(inst)
    assert p["count"] == 2 and p["mean_area"] == st["area"].mean()
    assert np.isnan(stats.pair_statistics(np.zeros_like(inst))["mean_area"])


def test_distances_zero_for_equal_and_normalised_by_reference_sd():
    a = {"x": np.array([0.0, 1.0, 2.0, 3.0])}
    assert stats.distances(a, a, ["x"])["x"] == 0
    b = {"x": a["x"] + 2}
    assert stats.distances(a, b, ["x"])["x"] == pytest.approx(2)
    assert stats.distances(a, b, ["x"], normalise=True)["x"] == pytest.approx(2 / a["x"].std())
    assert np.isnan(stats.distances(a, {"x": np.array([])}, ["x"])["x"])


def test_colour_statistics_see_a_colour_shift():
    images = np.stack([he_pair(i)[0] for i in range(6)])
    col = stats.colour_statistics(images)
    assert set(col) == set(stats.COLOUR_STATS) and all(len(v) == 6 for v in col.values())
    shifted = stats.colour_statistics(np.stack([colour_shift(i) for i in images]))
    d = stats.distances(col, shifted, stats.COLOUR_STATS, normalise=True)
    assert d["lab_a_mean"] > 3  # greener: a* falls by many real sds


def test_laplacian_variance_and_grey():
    flat = np.full((32, 32, 3), 128, np.uint8)
    assert stats.grey(flat)[0, 0] == pytest.approx(128, abs=0.01)
    assert stats.laplacian_variance(stats.grey(flat)) == 0
    noisy = np.random.default_rng(0).integers(0, 255, (32, 32)).astype(np.float32)
    assert stats.laplacian_variance(noisy) > 1000


def test_tiled_windows_do_not_overlap_and_are_deterministic():
    class S:
        def __init__(self, seed):
            self.image, self.instance_map = he_pair(seed, size=100, n=10)

    samples = [S(0), S(1)]
    a_img, a_lab = stats.tiled_windows(samples, 32, 18, seed=3)
    b_img, b_lab = stats.tiled_windows(samples, 32, 18, seed=3)
    np.testing.assert_array_equal(a_img, b_img)
    assert a_img.shape == (18, 32, 32, 3) and a_lab.shape == (18, 32, 32)
    # 2 images x 3 x 3 tiles: all 18 distinct tiles, no repeat
    assert len({w.tobytes() for w in a_img}) == 18
    # more than the tiles: the rest are random crops
    assert stats.tiled_windows(samples, 32, 25, seed=3)[0].shape[0] == 25


def test_visible_nuclei_and_threshold():
    image, inst = he_pair(3)
    thr = stats.h_threshold(image[None], inst[None])
    visible, total, dice = stats.visible_nuclei(image, inst, thr)
    assert total == inst.max() and visible == total and dice > 0.8
    assert stats.visible_nuclei(image, np.roll(inst, 20, axis=1), thr)[0] < total


def test_matched_threshold_carries_across_a_stain_shift():
    image, inst = he_pair(3)
    thr = stats.h_threshold(image[None], inst[None])
    total = inst.max()
    pale = np.round(255 * (image / 255) ** 0.5).astype(np.uint8)  # optical density halved
    assert stats.visible_nuclei(pale, inst, thr)[0] < total  # the real threshold hides them
    share = stats.share_below(image[None], thr)
    matched = stats.matched_threshold(pale[None], share)
    assert matched < thr and stats.visible_nuclei(pale, inst, matched)[0] == total
    assert stats.matched_threshold(image[None], share) == pytest.approx(thr, rel=0.05)


def test_haematoxylin_blobs_without_a_label_are_counted():
    image, inst = he_pair(3)
    thr = stats.h_threshold(image[None], inst[None])
    big = np.bincount(inst.ravel())[1:] >= stats.MIN_BLOB_AREA
    unlabeled, blobs = stats.h_unlabeled(image, inst, thr)
    assert unlabeled == 0 and blobs == big.sum()  # every dark blob has its label
    first = np.argmax(big) + 1  # one nucleus-sized label erased: its blob is unlabeled
    assert stats.h_unlabeled(image, np.where(inst == first, 0, inst), thr) == (1, blobs)
    assert stats.h_unlabeled(image, inst, thr, min_area=10_000) == (0, 0)  # none nucleus-sized


def test_mmd2_matches_its_definition_and_kid_separates():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 4)), rng.normal(size=(20, 4)) + 1

    def k(a, b):
        return (a @ b / 4 + 1) ** 3

    m = 20
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy)
    same = kid(rng.normal(size=(200, 4)), rng.normal(size=(200, 4)), subsets=20, subset_size=50)
    apart = kid(
        rng.normal(size=(200, 4)), rng.normal(size=(200, 4)) + 1, subsets=20, subset_size=50
    )
    assert abs(same[0]) < 0.1 < apart[0]


def test_encoder_features_unet_shape_and_padding(make_model):
    model = make_model()
    feats = encoder_features(model, np.stack([he_pair(i, size=60)[0] for i in range(3)]))
    assert feats.shape == (3, 32) and np.isfinite(feats).all()
    assert model.training  # restored


@pytest.fixture
def make_model():
    def make():
        import torch
        from quality.quality_fixtures import tiny_segment_config

        from nudiff.segment.model import build_segmenter

        torch.manual_seed(0)
        return build_segmenter(tiny_segment_config(1)).train()

    return make


def test_c2st_tells_shifted_colours_not_the_same_distribution():
    a = np.stack([he_pair(i)[0] for i in range(24)])
    b = np.stack([he_pair(100 + i)[0] for i in range(24)])
    same = c2st(a, b, seed=0, epochs=20)
    shifted = c2st(a, np.stack([colour_shift(i) for i in b]), seed=0, epochs=20)
    assert shifted.accuracy > 0.9 and shifted.accuracy > same.accuracy + 0.2
    assert shifted.p_a.shape == (24,) and np.nanmax(shifted.p_a) < 0.5
    again = c2st(a, b, seed=0, epochs=20, device="cpu")
    assert again.accuracy == same.accuracy  # seeded
    np.testing.assert_array_equal(again.p_a, same.p_a)
