"""What a cell trains on: the fraction's pairs and patches, made once per configuration."""

from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import disk_instance_map
from nudiff.experiment.grid import Cell, load_plan
from nudiff.experiment.store import synthetic_done
from nudiff.experiment.training_data import make_pairs, training_data
from nudiff.layout import RunLayout
from nudiff.synthesis import FilterConfig, check_structure
from nudiff.utils import NudiffError, read_json, write_json

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _plan(name: str = "kumar-grid.yaml"):
    return load_plan(CONFIGS / name)


def test_structure_filter_reasons():
    cfg = FilterConfig()
    assert check_structure(np.zeros((32, 32), np.int32), cfg) == "too_few_nuclei"
    assert check_structure(disk_instance_map(), cfg) is None
    assert check_structure(np.ones((32, 32), np.int32), cfg) == "too_much_foreground"
    dust = np.zeros((32, 32), np.int32)
    dust[::4, ::4] = np.arange(1, 65).reshape(8, 8)
    assert check_structure(dust, cfg) == "nuclei_too_small"


def test_a_synthetic_set_made_with_another_configuration_is_refused(tmp_path):
    plan, run = _plan(), RunLayout(tmp_path)
    syn = tmp_path / "diffusion" / "f0.10" / "synthetic"
    seg = tmp_path / "cells" / "f0.10_real_s0"
    made = replace(
        plan.synthesis,
        n=plan.experiment.n_synthetic,
        filter=replace(plan.synthesis.filter, segmenter="elsewhere/f0.10_real_s0"),
    )
    config = asdict(made)
    del config["structures"]  # a manifest from before the key existed: counts as its default
    write_json(syn / "manifest.json", {"config": config, "n_accepted": 256})
    # same recipe (the segmenter folder may have moved): the set is used as it is
    assert make_pairs(plan, run, tmp_path / "data", 0.1, None, seg) == syn == run.synthetic(0.1)
    plan.synthesis.image_sample = replace(plan.image.sample, guidance_scale=3.0)
    with pytest.raises(
        NudiffError, match=r"another synthesis configuration .*image_sample.guidance_scale"
    ):
        make_pairs(plan, run, tmp_path / "data", 0.1, None, seg)


def test_pairs_made_elsewhere_need_no_filter_segmenter(tmp_path):
    """A fraction whose synthetic set is complete (made on a GPU, say) counts as done;
    run_experiment asks this before it (re)trains the filter's reference cell."""
    plan, run = _plan("kumar-gpu.yaml"), RunLayout(tmp_path)
    syn = tmp_path / "diffusion" / "f0.10" / "synthetic"
    assert not synthetic_done(plan, run, 0.1)
    made = replace(
        plan.synthesis,
        n=plan.experiment.n_synthetic,
        filter=replace(plan.synthesis.filter, segmenter="runs/kumar-gpu-device/seg"),
    )
    write_json(syn / "manifest.json", {"config": asdict(made), "n_accepted": 255})
    assert not synthetic_done(plan, run, 0.1)  # one short
    write_json(syn / "manifest.json", {"config": asdict(made), "n_accepted": 256})
    assert synthetic_done(plan, run, 0.1)


def test_each_arm_composes_the_subset_with_the_extra_sets_it_needs(tmp_path, monkeypatch):
    import nudiff.experiment.training_data as td

    plan, run = _plan(), RunLayout(tmp_path)
    real = ["r"] * 3
    monkeypatch.setattr(td, "copypaste_set", lambda plan, run, real, fraction: ["c"] * 2)
    monkeypatch.setattr(
        td,
        "load_folder",
        lambda folder, progress: ["s"] * 4 if folder == run.synthetic(0.1) else None,
    )
    composed = {
        arm: training_data(plan, run, Cell(0.1, arm, 0), real)
        for arm in (
            "real",
            "real+syn",
            "real+copypaste",
            "real+copypaste+syn",
            "real-dup",
            "syn-only",
        )
    }
    assert composed == {
        "real": (real, None),
        "real+syn": (real, ["s"] * 4),
        "real+copypaste": (real, ["c"] * 2),
        "real+copypaste+syn": (real, ["c", "c", "s", "s", "s", "s"]),
        "real-dup": (["r"] * 7, None),
        "syn-only": (["s"] * 4, None),
    }


def test_a_copy_paste_set_is_reused_only_under_its_configuration(tmp_path, monkeypatch):
    import nudiff.experiment.training_data as td

    plan, run = _plan(), RunLayout(tmp_path)
    plan.experiment.n_synthetic = 2
    made = []

    def fake_set(real, n, cfg):
        made.append(cfg)
        return real[:n], [1] * n

    monkeypatch.setattr(td, "copy_paste_set", fake_set)
    real = [
        SimpleNamespace(
            name=f"r{i}",
            image=np.zeros((8, 8, 3), np.uint8),
            instance_map=disk_instance_map((8, 8), ((4, 4),), 2),
        )
        for i in range(2)
    ]
    td.copypaste_set(plan, run, real, 0.1)
    config = read_json(run.copypaste(0.1) / "manifest.json")["config"]
    del config["margin"]  # a manifest from before the key existed: counts as its default
    write_json(run.copypaste(0.1) / "manifest.json", {"config": config})
    assert len(td.copypaste_set(plan, run, real, 0.1)) == 2 and len(made) == 1  # reused
    plan.experiment.copypaste.nuclei += 1
    td.copypaste_set(plan, run, real, 0.1)
    assert len(made) == 2  # another configuration: made again
