"""The synthesis configuration: deprecated flat keys, sampling settings resolved from the
models' own."""

import numpy as np
import pytest

from helpers import disk_instance_map
from nudiff.config import REMOVED_IN
from nudiff.data.dataset import load_folder
from nudiff.diffusion.config import DataConfig, SampleConfig
from nudiff.synthesis import SynthesisConfig, synthesize
from nudiff.utils import NudiffError


def test_flat_sampler_keys_of_earlier_versions_are_read_with_a_warning(tmp_path, capsys):
    from nudiff.config import from_dict

    cfg = from_dict(
        SynthesisConfig,
        {"structure_steps": 20, "image_sampler": "dpmsolver++", "guidance_scale": 1.5},
        "old.yaml",
    )
    assert cfg.structure_sample == SampleConfig(sampler="ddim", steps=20)
    assert cfg.image_sample == SampleConfig(sampler="dpmsolver++", steps=50, guidance_scale=1.5)
    err = capsys.readouterr().err
    assert (
        "old.yaml: synthesis keys structure_steps, image_sampler, guidance_scale are deprecated"
        in err
    )
    assert f"will be removed in nudiff {REMOVED_IN}; use structure_sample" in err
    assert from_dict(SynthesisConfig, {}).image_sample is None
    with pytest.raises(NudiffError, match="image_steps and image_sample both given"):
        from_dict(SynthesisConfig, {"image_steps": 5, "image_sample": {"steps": 5}}, "both.yaml")


def test_each_model_is_sampled_with_its_own_settings_unless_synthesis_says_otherwise(
    models,
    tmp_path,
    syn_cfg,
):
    s, i = models  # both trained with sample: {sampler: ddim, steps: 2}
    m = synthesize(s, i, tmp_path / "own", syn_cfg(n=2, structure_sample=None, image_sample=None))
    assert (
        m["config"]["structure_sample"]["steps"] == 2 and m["config"]["image_sample"]["steps"] == 2
    )
    same = synthesize(s, i, tmp_path / "explicit", syn_cfg(n=2))  # the same settings written out
    for a, b in zip(
        load_folder(tmp_path / "own", progress=False),
        load_folder(tmp_path / "explicit", progress=False),
    ):
        np.testing.assert_array_equal(a.image, b.image)
    assert same["config"] == m["config"]
    # the manifest records what was resolved: a rerun with the settings written out is the same set
    synthesize(s, i, tmp_path / "own", syn_cfg(n=2))


def test_one_min_area_rule_for_training_windows_and_conditions():
    from nudiff.diffusion.data import PatchSampler

    assert DataConfig(scale=0.5).hv_min_area == 8 and DataConfig(scale=1).hv_min_area == 30
    assert DataConfig(scale=0.5, min_area=3).hv_min_area == 3
    inst = np.stack([disk_instance_map((32, 32), ((10, 10),), 4)])
    assert PatchSampler(DataConfig(patch_size=16, scale=0.5), inst).min_area == 8
