import numpy as np
import pytest
import torch

from nudiff.segment.model import HV, NP, build_segmenter, image_to_tensor
from nudiff.segment.predict import overlay, predict_instances, predict_structure
from nudiff.utils import DataError


@pytest.fixture
def model(make_config):
    torch.manual_seed(0)
    m = build_segmenter(make_config()).eval()
    # make the untrained BatchNorm statistics non-trivial
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m


def test_one_tile_equals_untiled(model, make_toy):
    image = make_toy(0).image  # 64 x 64: exactly one tile
    structure = predict_structure(model, image, tile=64, overlap=0.5)
    with torch.no_grad():
        out = model(image_to_tensor(image))
    expected = torch.cat([torch.softmax(out[NP], 1)[:, 1:], out[HV]], 1)[0].numpy()
    np.testing.assert_allclose(structure, expected, atol=1e-5)


@pytest.mark.parametrize("shape", [(100, 130), (40, 50), (64, 200)])
def test_any_size_and_deterministic(model, make_toy, shape):
    image = make_toy(1, shape).image
    inst, structure = predict_instances(model, image, tile=64, overlap=0.5)
    assert inst.shape == shape and inst.dtype == np.int32
    assert structure.shape == (3, *shape) and structure.dtype == np.float32
    assert 0 <= structure[0].min() and structure[0].max() <= 1
    inst2, structure2 = predict_instances(model, image, tile=64, overlap=0.5)
    assert np.array_equal(structure, structure2) and np.array_equal(inst, inst2)


def test_constant_blend_and_training_mode_restored(model, make_toy):
    model.train()
    image = make_toy(2, (96, 96)).image
    s = predict_structure(model, image, tile=64, overlap=0.25, blend="constant")
    assert s.shape == (3, 96, 96) and model.training


def test_overlay_draws_contours(make_toy):
    toy = make_toy(3)
    out = overlay(toy.image, toy.instance_map)
    assert out.shape == toy.image.shape and out.dtype == np.uint8
    changed = (out != toy.image).any(-1)
    assert changed.any() and not changed[toy.instance_map == 0].any()


def test_bad_input_shape(model):
    with pytest.raises(ValueError, match="uint8"):
        predict_structure(model, np.zeros((32, 32), np.uint8), tile=64)


def test_load_segmenter_missing(tmp_path):
    from nudiff.segment.predict import load_segmenter

    with pytest.raises(DataError, match="model.safetensors"):
        load_segmenter(tmp_path)


@pytest.mark.parametrize("k, flip", [(1, False), (2, True), (3, True)])
def test_full_tta_is_equivariant(model, make_toy, k, flip):
    """With all 8 transforms, predicting a turned / flipped image gives the turned / flipped
    structure (h, v signs and axes included): the inverse transforms are right."""
    from nudiff.structure import dihedral, dihedral_image

    image = make_toy(4).image  # one 64-px tile: no tiling asymmetry
    s = predict_structure(model, image, tile=64, tta=8)
    s_t = predict_structure(model, dihedral_image(image, k, flip, channel_axis=-1), tile=64, tta=8)
    np.testing.assert_allclose(s_t, dihedral(s, k, flip), atol=1e-5)
    # without TTA the untrained network is not equivariant: the test could fail
    s1 = predict_structure(model, image, tile=64)
    s1_t = predict_structure(model, dihedral_image(image, k, flip, channel_axis=-1), tile=64)
    assert np.abs(s1_t - dihedral(s1, k, flip)).max() > 1e-3
    with pytest.raises(ValueError, match="tta"):
        predict_structure(model, image, tile=64, tta=9)
