import pytest

from nudiff.config import load_config, save_config
from nudiff.diffusion.config import DiffusionConfig
from nudiff.utils import DataError, NudiffError

YAML = """
structure:
  model: {kind: structure, channels: [32, 64, 64], attention_levels: [false, false, true]}
  train: {steps: 100, lr: 1.0e-4}
image:
  model: {kind: image, conditioning: concat}
  sample: {sampler: dpmsolver++, steps: 20, guidance_scale: 1.5}
"""


def test_load_sections(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(YAML)
    s = load_config(DiffusionConfig, path, section="structure")
    i = load_config(DiffusionConfig, path, section="image")
    assert s.model.kind == "structure" and s.model.channels == (32, 64, 64)
    assert s.model.attention_levels == (False, False, True)
    assert s.train.steps == 100 and s.train.lr == 1e-4
    assert i.model.conditioning == "concat" and i.sample.sampler == "dpmsolver++"
    save_config(i, tmp_path / "saved.yaml")
    assert load_config(DiffusionConfig, tmp_path / "saved.yaml") == i


def test_overrides_are_set_within_the_section_and_checked(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(YAML)
    s = load_config(
        DiffusionConfig,
        path,
        section="structure",
        overrides=["train.compile=default", "model.flash_attention=true", "train.steps=7"],
    )
    assert (s.train.compile, s.model.flash_attention, s.train.steps, s.train.lr) == (
        "default",
        True,
        7,
        1e-4,
    )
    with pytest.raises(DataError, match="stepz"):  # a typo is an error, as in the file
        load_config(DiffusionConfig, path, section="structure", overrides=["train.stepz=7"])
    with pytest.raises(NudiffError, match="expected SECTION.KEY=VALUE"):
        load_config(DiffusionConfig, path, section="structure", overrides=["train.steps"])
    assert load_config(DiffusionConfig, None, overrides=["train.steps=9"]).train.steps == 9


def test_unknown_key_and_bad_values(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("structure:\n  train: {stepz: 3}\n")
    with pytest.raises(DataError, match="stepz"):
        load_config(DiffusionConfig, path, section="structure")
    path.write_text("structure:\n  sample: {sampler: euler}\n")
    with pytest.raises(NudiffError, match="sampler"):
        load_config(DiffusionConfig, path, section="structure")
    path.write_text("structure:\n  model: {channels: [32, 64], attention_levels: [false]}\n")
    with pytest.raises(NudiffError, match="attention_levels"):
        load_config(DiffusionConfig, path, section="structure")
