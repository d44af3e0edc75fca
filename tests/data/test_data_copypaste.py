import numpy as np
import pytest

from nudiff.data.copypaste import CopyPasteConfig, copy_paste_set, donors_of, paste_nuclei
from nudiff.data.dataset import Sample
from nudiff.metrics import instance_metrics
from nudiff.structure import decode, encode
from nudiff.utils import NudiffError


def _patch(seed: int, size: int = 96, n: int = 5) -> Sample:
    """A pink patch with ``n`` dark elliptical nuclei away from each other and the border."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = np.full((size, size, 3), (235, 180, 210), np.uint8)
    inst = np.zeros((size, size), np.int32)
    centers = [(20, 20), (20, 70), (50, 45), (75, 20), (75, 72)][:n]
    for i, (cy, cx) in enumerate(centers, start=1):
        a, b = rng.uniform(4, 7, 2)
        disk = ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 <= 1
        inst[disk] = i
        image[disk] = (90 + 10 * i, 40, 120)
    return Sample(f"p{seed}", image, inst, "fixture")


def test_pasted_labels_are_exact_and_ids_unique():
    subset = [_patch(s) for s in range(4)]
    cfg = CopyPasteConfig(nuclei=10, seed=3)
    out, counts = copy_paste_set(subset, 6, cfg)
    assert len(out) == 6 and sum(counts) > 6
    for s, pasted in zip(out, counts):
        ids = np.unique(s.instance_map)[1:]
        # every id one connected nucleus; pasted ids are new ones (1..5 are the originals)
        assert len(ids) == 5 + pasted and ids.max() == 5 + pasted
        from scipy import ndimage as ndi

        for i in ids:
            assert ndi.label(s.instance_map == i)[1] == 1
        # re-encoding the label and decoding it gives back its instances
        m = instance_metrics(s.instance_map, decode(encode(s.instance_map)))
        assert m["aji"] > 0.97 and m["pq"] > 0.95


def test_paste_never_changes_existing_labels_nor_touches_nuclei():
    target = _patch(0)
    donors = donors_of([_patch(1), _patch(2)], CopyPasteConfig(), pad=3)
    assert len(donors) == 10
    rng = np.random.default_rng(0)
    image, inst, pasted = paste_nuclei(
        target.image, target.instance_map, donors, rng, CopyPasteConfig(nuclei=20, margin=2)
    )
    old = target.instance_map > 0
    assert pasted > 0 and np.array_equal(inst[old], target.instance_map[old])
    assert np.array_equal(image[old], target.image[old])  # blending reaches background only
    from scipy import ndimage as ndi

    new = inst > target.instance_map.max()
    assert not (ndi.binary_dilation(new, np.ones((3, 3))) & old).any()  # >= 1 px apart


def test_copy_paste_is_deterministic_and_skips_border_nuclei():
    subset = [_patch(s) for s in range(3)]
    a, _ = copy_paste_set(subset, 3, CopyPasteConfig(seed=1))
    b, _ = copy_paste_set(subset, 3, CopyPasteConfig(seed=1))
    assert all(
        np.array_equal(x.image, y.image) and np.array_equal(x.instance_map, y.instance_map)
        for x, y in zip(a, b)
    )
    cut = _patch(9)
    cut.instance_map[cut.instance_map == 1] = 0
    cut.instance_map[:8, :8] = 1  # touches the border: not a donor
    assert len(donors_of([cut], CopyPasteConfig(), pad=2)) == 4
    with pytest.raises(ValueError, match="no whole nucleus"):
        copy_paste_set(
            [Sample("e", cut.image, np.zeros_like(cut.instance_map), "x")], 1, CopyPasteConfig()
        )


def test_label_only_paste_gives_the_labels_of_the_full_paste():
    subset = [_patch(s) for s in range(3)]
    cfg = CopyPasteConfig(nuclei=8)
    donors = donors_of(subset, cfg, pad=cfg.margin)
    label_only = donors_of(
        [Sample(s.name, None, s.instance_map, "labels") for s in subset], cfg, pad=cfg.margin
    )
    assert all(d.image is None for d in label_only) and len(label_only) == len(donors)
    for seed in range(3):
        image, inst, n = paste_nuclei(
            subset[0].image, subset[0].instance_map, donors, np.random.default_rng(seed), cfg
        )
        none, labels, m = paste_nuclei(
            None, subset[0].instance_map, label_only, np.random.default_rng(seed), cfg
        )
        assert none is None and m == n > 0
        np.testing.assert_array_equal(labels, inst)


def test_resample_blurs_the_images_and_keeps_the_labels():
    subset = [_patch(i) for i in range(3)]
    sharp, _ = copy_paste_set(subset, 3, CopyPasteConfig())
    soft, _ = copy_paste_set(subset, 3, CopyPasteConfig(resample=0.5))
    for a, b in zip(sharp, soft):
        assert np.array_equal(a.instance_map, b.instance_map) and a.image.shape == b.image.shape
        # half the detail: the edges of the nuclei are softer, the colours the same on average
        grad_a = (np.diff(a.image.astype(float), axis=1) ** 2).mean()
        grad_b = (np.diff(b.image.astype(float), axis=1) ** 2).mean()
        assert grad_b < 0.7 * grad_a
        assert abs(a.image.mean() - b.image.mean()) < 1.0
    with pytest.raises(NudiffError, match="resample"):
        CopyPasteConfig(resample=2.0)
