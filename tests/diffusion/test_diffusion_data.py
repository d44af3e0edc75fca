import numpy as np
import pytest

from nudiff.diffusion.config import DataConfig
from nudiff.diffusion.data import PatchSampler
from nudiff.utils import DataError


def test_draw_shapes_ranges_and_paired_geometry(toy_patches):
    images, inst = toy_patches
    sampler = PatchSampler(DataConfig(patch_size=16, scale=1.0), inst, images)
    s, im = sampler.draw(16, np.random.default_rng(0))
    assert s.shape == (16, 3, 16, 16) and s.dtype == np.float32
    assert im.shape == (16, 16, 16, 3) and im.dtype == np.uint8
    assert set(np.unique(s[:, 0])) <= {0.0, 1.0}
    assert s[:, 1:].min() >= -1 and s[:, 1:].max() <= 1
    # the image's nuclei (coloured) sit exactly on the structure's nuclei after augmentation
    assert np.array_equal(im[..., 0] == 200, s[:, 0] == 1)
    s2, _ = sampler.draw(16, np.random.default_rng(0))
    assert np.array_equal(s, s2)


def test_scaled_sampler_and_errors(toy_patches):
    images, inst = toy_patches
    sampler = PatchSampler(DataConfig(patch_size=16, scale=0.5), inst, None)
    s, im = sampler.draw(2, np.random.default_rng(1))
    assert s.shape == (2, 3, 16, 16) and im is None
    assert sampler.min_area == round(30 * 0.25)
    with pytest.raises(DataError, match="smaller than"):
        PatchSampler(DataConfig(patch_size=32, scale=0.5), inst)
    with pytest.raises(DataError, match="uint8"):
        PatchSampler(DataConfig(patch_size=16), inst, images.astype(np.float32))
