import pytest

from nudiff.config import load_config, save_config
from nudiff.segment.config import SegmentConfig
from nudiff.structure import DecodeParams
from nudiff.utils import DataError, NudiffError


def test_load_section_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "segment:\n  model: {base: 8}\n  train: {steps: 10, real_ratio: null}\n"
        "  augment: {scale: [0.9, 1.1]}\n  post: {center_threshold: 0.4}\n"
    )
    cfg = load_config(SegmentConfig, path, section="segment")
    assert cfg.model.level_widths() == (8, 16, 32, 64, 128)
    assert cfg.train.steps == 10 and cfg.train.real_ratio is None
    assert cfg.augment.scale == (0.9, 1.1)
    assert cfg.post.decode_params() == DecodeParams(center_threshold=0.4)
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(SegmentConfig, tmp_path / "saved.yaml") == cfg


def test_unknown_key_and_bad_value(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("segment:\n  train: {stepz: 10}\n")
    with pytest.raises(DataError, match="stepz"):
        load_config(SegmentConfig, path, section="segment")
    path.write_text("segment:\n  train: {crop_size: 100}\n")
    with pytest.raises(NudiffError, match="multiple of 16"):
        load_config(SegmentConfig, path, section="segment")
