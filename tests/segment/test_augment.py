import numpy as np
import pytest
import torch
from skimage.color import hed2rgb, rgb2hed

from nudiff.segment.augment import augmented_crop, color_augment, hed_to_rgb, rgb_to_hed
from nudiff.segment.config import AugmentConfig
from nudiff.structure import encode


def _orientation_ok(structure: np.ndarray, image_mask_min: int = 30) -> None:
    """Inside every nucleus h grows left -> right and v top -> bottom."""
    from scipy import ndimage as ndi

    labels, n = ndi.label(structure[0] > 0)
    checked = 0
    for i in range(1, n + 1):
        ys, xs = np.nonzero(labels == i)
        h, v = structure[1][ys, xs], structure[2][ys, xs]
        if ys.size < image_mask_min or np.ptp(xs) < 4 or np.ptp(ys) < 4 or not h.any():
            continue
        assert np.corrcoef(xs, h)[0, 1] > 0.8
        assert np.corrcoef(ys, v)[0, 1] > 0.8
        checked += 1
    assert checked > 0


def test_plain_crop_is_a_window_with_encoded_targets(make_toy):
    s = make_toy(0, (64, 80), n=8)
    rng = np.random.default_rng(0)
    img, structure = augmented_crop(s.image, s.instance_map, 48, rng, AugmentConfig(enabled=False))
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8
    assert structure.shape == (3, 48, 48) and structure.dtype == np.float32
    # find the window and compare with encode of the same window
    hits = [
        (y, x)
        for y in range(17)
        for x in range(33)
        if np.array_equal(s.image[y : y + 48, x : x + 48], img)
    ]
    assert len(hits) == 1
    y, x = hits[0]
    np.testing.assert_array_equal(structure, encode(s.instance_map[y : y + 48, x : x + 48]))


def test_small_sample_is_padded(make_toy):
    s = make_toy(1, (40, 50))
    img, structure = augmented_crop(
        s.image,
        s.instance_map,
        64,
        np.random.default_rng(1),
        AugmentConfig(p_affine=1.0),
        context=4,
    )
    assert img.shape == (64, 64, 3) and structure.shape == (3, 64, 64)


def _separate_discs(seed: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Elliptic nuclei on a grid (never touching) and a matching image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inst = np.zeros((size, size), np.int32)
    for i, (cy, cx) in enumerate(
        [(y, x) for y in range(12, size, 24) for x in range(12, size, 24)], 1
    ):
        ry, rx = rng.uniform(5, 9, 2)
        inst[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = i
    img = np.where(inst[..., None] > 0, 80, 220).astype(np.uint8).repeat(3, -1)
    return img, inst


@pytest.mark.parametrize("seed", range(4))
def test_targets_follow_the_geometry(seed):
    image, instance_map = _separate_discs(seed)
    rng = np.random.default_rng(seed)
    img, structure = augmented_crop(
        image, instance_map, 64, rng, AugmentConfig(p_affine=1.0), context=8
    )
    assert set(np.unique(structure[0])) <= {0.0, 1.0}
    assert structure[1:].min() >= -1 and structure[1:].max() <= 1
    # nuclei are the dark pixels: the semantic target sits on them after the warp
    dark = img.mean(-1) < 160
    assert (dark == (structure[0] > 0)).mean() > 0.97
    _orientation_ok(structure)


def test_hed_matches_skimage():
    rgb = np.random.default_rng(0).uniform(0.05, 1, (2, 8, 8, 3))
    x = torch.tensor(rgb, dtype=torch.float32).permute(0, 3, 1, 2)
    hed = rgb_to_hed(x)
    np.testing.assert_allclose(hed.permute(0, 2, 3, 1).numpy(), rgb2hed(rgb), atol=1e-5)
    back = hed_to_rgb(hed).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(back, hed2rgb(rgb2hed(rgb)), atol=1e-4)


def test_color_augment_range_and_seed():
    x = torch.rand(4, 3, 32, 32)
    cfg = AugmentConfig(p_blur=0.5, p_noise=0.5)
    a = color_augment(x.clone(), np.random.default_rng(3), cfg)
    b = color_augment(x.clone(), np.random.default_rng(3), cfg)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(color_augment(x, np.random.default_rng(0), AugmentConfig(enabled=False)), x)


@pytest.mark.parametrize("shape", [(120, 140), (40, 30)])
def test_warp_matches_scipy_affine_transform(shape):
    """The torch resampler equals scipy's (bilinear image, nearest labels, mirror outside),
    whether the footprint lies inside the sample (view path) or leaves it (reflection)."""
    from scipy import ndimage as ndi

    from nudiff.segment.augment import _warp, random_affine

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    inst = ndi.label(rng.random(shape) > 0.6)[0]
    size = 32
    for _ in range(5):
        matrix = random_affine(rng, AugmentConfig())
        centre = np.array([rng.uniform(0, shape[0]), rng.uniform(0, shape[1])])
        img, lab = _warp(image, inst, matrix, centre, size)
        offset = centre - matrix @ np.full(2, (size - 1) / 2)

        def ref(a, order, matrix=matrix, offset=offset):
            return ndi.affine_transform(
                a.astype(np.float64),
                matrix,
                offset,
                output_shape=(size, size),
                order=order,
                mode="mirror",
            )

        expect = np.stack([ref(image[..., c], 1) for c in range(3)], axis=-1)
        assert np.abs(img.astype(np.float64) - expect).max() <= 0.51
        # nearest neighbour: labels may differ only where a sample point sits half-way
        assert (lab == ref(inst, 0)).mean() > 0.99
