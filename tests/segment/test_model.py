import pytest
import torch
from monai.apps.pathology.losses import HoVerNetLoss

from nudiff.config import from_dict
from nudiff.segment.config import SegmentConfig
from nudiff.segment.loss import HoVerNetLossParts, structure_targets
from nudiff.segment.model import HV, NP, build_segmenter, count_parameters


def test_default_unet_size():
    n = count_parameters(build_segmenter(SegmentConfig()))
    assert 1.5e6 <= n <= 2.5e6


@pytest.mark.parametrize("size", [64, 256])
def test_output_shapes(size):
    model = build_segmenter(SegmentConfig()).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert set(out) == {NP, HV} == {"nucleus_prediction", "horizontal_vertical"}
    assert out[NP].shape == (2, 2, size, size)
    assert out[HV].shape == (2, 2, size, size)


def test_input_must_be_divisible():
    with pytest.raises(ValueError, match="divisible by 16"):
        build_segmenter(SegmentConfig())(torch.rand(1, 3, 72, 64))


def test_tanh_head_bounds_hv():
    cfg = from_dict(SegmentConfig, {"model": {"widths": [8, 16], "hv_activation": "tanh"}})
    out = build_segmenter(cfg)(torch.randn(1, 3, 32, 32) * 50)
    assert out[HV].abs().max() <= 1


def test_loss_parts_sum_to_monai_loss():
    torch.manual_seed(0)
    structure = torch.zeros(2, 3, 32, 32)
    structure[:, 0, 8:20, 8:20] = 1
    structure[:, 1, 8:20, 8:20] = torch.linspace(-1, 1, 12)
    structure[:, 2, 8:20, 8:20] = torch.linspace(-1, 1, 12)[:, None]
    target = structure_targets(structure)
    assert target[NP].shape == (2, 2, 32, 32) and torch.equal(
        target[NP].sum(1), torch.ones(2, 32, 32)
    )
    pred = {NP: torch.randn(2, 2, 32, 32), HV: torch.randn(2, 2, 32, 32)}
    parts = HoVerNetLossParts().parts(pred, target)
    assert set(parts) == {"np_dice", "np_ce", "hv_mse", "hv_msge"}
    torch.testing.assert_close(sum(parts.values()), HoVerNetLoss()(pred, target))


def test_hovernet_config_needs_256():
    from nudiff.utils import NudiffError

    with pytest.raises(NudiffError, match="256"):
        from_dict(SegmentConfig, {"model": {"arch": "hovernet"}, "train": {"crop_size": 128}})


def test_hovernet_arch_outputs():
    """MONAI HoVerNet (fast, decoder padding): 256 in, 256 out, same keys (~4 s on CPU)."""
    model = build_segmenter(from_dict(SegmentConfig, {"model": {"arch": "hovernet"}})).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 256, 256))
    assert out[NP].shape == (1, 2, 256, 256) and out[HV].shape == (1, 2, 256, 256)
