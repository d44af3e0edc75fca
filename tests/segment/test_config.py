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
    assert cfg.post == DecodeParams(center_threshold=0.4)
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(SegmentConfig, tmp_path / "saved.yaml") == cfg


def test_post_is_decode_params_with_strict_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("segment:\n  post: {center_treshold: 0.4}\n")  # a typo is an error
    with pytest.raises(DataError, match="center_treshold"):
        load_config(SegmentConfig, path, section="segment")
    path.write_text("segment:\n  post: {method: watershed}\n")
    with pytest.raises(DataError, match=r"c.yaml\[segment\]:post: decode method must be one of"):
        load_config(SegmentConfig, path, section="segment")
    # written before post was a DecodeParams: null meant the default
    path.write_text("segment:\n  post: {fg_threshold: null, min_marker: 2, method: null}\n")
    assert load_config(SegmentConfig, path, section="segment").post == DecodeParams(min_marker=2)


def test_unknown_key_and_bad_value(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("segment:\n  train: {stepz: 10}\n")
    with pytest.raises(DataError, match="stepz"):
        load_config(SegmentConfig, path, section="segment")
    path.write_text("segment:\n  train: {crop_size: 100}\n")
    with pytest.raises(NudiffError, match="multiple of 16"):
        load_config(SegmentConfig, path, section="segment")
