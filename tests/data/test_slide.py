"""Slides: a pyramidal TIFF written here, read back by level, by µm/px, as a thumbnail."""

import numpy as np
import pytest

from nudiff.data.slide import open_slide, tissue_mask, write_pyramid
from nudiff.utils import DataError


def glass_with_tissue(shape=(300, 400), seed=0) -> np.ndarray:
    """White glass with a pink-purple rectangle of 'tissue': uint8 (H, W, 3)."""
    rng = np.random.default_rng(seed)
    img = np.full(shape + (3,), 245, np.float64)
    img[60:220, 80:300] = (200, 120, 180)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def pyramid(tmp_path):
    img = glass_with_tissue()
    return write_pyramid(tmp_path / "s.tif", img, mpp=0.25, levels=3, tile=64), img


def test_levels_and_regions(pyramid):
    path, img = pyramid
    with open_slide(path) as view:
        assert view.size == (400, 300) and view.scale == 1.0 and view.mpp == pytest.approx(0.25)
        assert np.array_equal(view.read(30, 20, 150, 70), img[20:90, 30:180])
    with open_slide(path, level=1) as view:
        assert view.size == (200, 150) and view.scale == 2.0 and view.mpp == pytest.approx(0.5)
        assert view.read(0, 0, 200, 150).shape == (150, 200, 3)


def test_target_mpp_picks_a_level_and_resizes(pyramid):
    path, _ = pyramid
    with open_slide(path, mpp=0.5) as view:
        assert (view.level, view.resize, view.scale) == (1, 1.0, 2.0)
    with open_slide(path, mpp=0.75) as view:  # level 1 (0.5 µm/px) resized by 2/3
        assert view.level == 1 and view.scale == pytest.approx(3.0)
        assert view.size == (133, 100)
        assert view.read(10, 10, 50, 40).shape == (40, 50, 3)


def test_region_outside_and_bad_files(pyramid, tmp_path):
    path, _ = pyramid
    with open_slide(path) as view, pytest.raises(DataError, match="outside the slide"):
        view.read(390, 0, 20, 20)
    with pytest.raises(DataError, match="level 5 does not exist"):
        open_slide(path, level=5)
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(DataError, match="bad.svs: not a readable slide"):
        open_slide(bad)
    with pytest.raises(DataError, match="slide not found"):
        open_slide(tmp_path / "missing.svs")


def test_mpp_needs_a_resolution(tmp_path):
    path = write_pyramid(tmp_path / "nompp.tif", glass_with_tissue(), mpp=None, levels=1)
    with pytest.raises(DataError, match="records no µm/px"):
        open_slide(path, mpp=0.5)


def test_thumbnail_and_tissue_mask(pyramid):
    path, img = pyramid
    with open_slide(path) as view:
        thumb, t = view.thumbnail(max_side=100, strip=16)
    assert thumb.shape == (75, 100, 3) and t == pytest.approx(0.25)
    mask = tissue_mask(thumb, dilate=0)
    assert mask[35, 45] and not mask[5, 5] and not mask[70, 95]
    assert 0.2 < mask.mean() < 0.4  # the rectangle is 160 x 220 of 300 x 400 (29 %)


def test_tissue_mask_without_glass_is_all_tissue():
    rng = np.random.default_rng(1)
    tissue = rng.integers(60, 200, (50, 50, 3)).astype(np.uint8)
    assert tissue_mask(tissue).all()
    assert not tissue_mask(np.full((20, 20, 3), 250, np.uint8)).any()
