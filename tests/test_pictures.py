import numpy as np
import pytest

from helpers import disk_instance_map
from nudiff.pictures import mosaic, overlay, structure_picture
from nudiff.structure import encode


def test_overlay_draws_only_on_nucleus_rims():
    inst = disk_instance_map()
    img = np.zeros(inst.shape + (3,), np.uint8)
    out = overlay(img, inst, (0, 255, 0))
    drawn = out.any(axis=2)
    assert drawn.any()
    assert not drawn[inst == 0].any()  # contours lie inside the nuclei
    assert drawn.sum() < (inst > 0).sum() / 2  # rims, not fills


def test_structure_picture_and_mosaic_shapes():
    s = encode(disk_instance_map())
    pic = structure_picture(s)
    assert pic.shape == (64, 3 * 64 + 8, 3) and pic.dtype == np.uint8
    m = mosaic([pic] * 5, ncols=2, gap=2)
    assert m.shape == (3 * 64 + 4, 2 * pic.shape[1] + 2, 3)
    with pytest.raises(ValueError):
        mosaic([])
