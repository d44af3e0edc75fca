"""Resizing images and instance maps (nudiff.data.resize)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage.measure import regionprops

from helpers import disk_instance_map
from nudiff.data.resize import resize_images, resize_instance_maps, upsample_instance_map_smooth


def test_resize():
    img = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1).repeat(3, axis=-1)
    small = resize_images(img, 0.5)
    assert small.shape == (1, 2, 2, 3) and small.dtype == np.uint8
    assert small[0, 0, 0, 0] == round((0 + 1 + 4 + 5) / 4)
    inst = np.arange(16, dtype=np.int32).reshape(1, 4, 4)
    assert resize_instance_maps(inst, 0.5).tolist() == [[[5, 7], [13, 15]]]


def _smooth_reference(inst, k, sigma):
    """Whole-image one-hot argmax: what the crop-wise function must equal."""
    onehot = np.eye(inst.max() + 1, dtype=np.float32)[inst].transpose(2, 0, 1)
    up = F.interpolate(
        torch.from_numpy(onehot)[None], scale_factor=k, mode="bilinear", align_corners=False
    )[0].numpy()
    up = np.stack([ndi.gaussian_filter(c, sigma, mode="nearest") for c in up])
    return up.argmax(0)


def test_smooth_label_upsampling_matches_the_one_hot_argmax_and_rounds_outlines():
    small = disk_instance_map((32, 32), centers=((6, 6), (6, 14), (22, 20), (30, 2)), radius=4)
    smooth = upsample_instance_map_smooth(small, 2, sigma=1.0)
    assert smooth.shape == (64, 64) and smooth.dtype == np.int32
    # crop-wise == whole-image argmax (ids touching each other and the border included)
    assert (smooth == _smooth_reference(small, 2, 1.0)).mean() > 0.999
    assert set(np.unique(smooth)) == set(np.unique(small))
    nearest = resize_instance_maps(small[None], 2)[0]
    for a, b in zip(regionprops(nearest), regionprops(smooth)):
        assert a.label == b.label
        assert abs(b.area - a.area) <= 0.12 * a.area  # area kept
    solid = {r.label: r.solidity for r in regionprops(smooth)}
    jagged = {r.label: r.solidity for r in regionprops(nearest)}
    assert np.mean([solid[i] for i in (1, 2, 3)]) > np.mean([jagged[i] for i in (1, 2, 3)]) + 0.05
    assert (upsample_instance_map_smooth(small, 1) == small).all()
    with pytest.raises(ValueError, match="integer"):
        upsample_instance_map_smooth(small, 1.5)
