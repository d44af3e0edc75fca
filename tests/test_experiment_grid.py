from pathlib import Path

import pytest

from nudiff.experiment.grid import (
    ARMS,
    Cell,
    ExperimentConfig,
    cells_of,
    check_windows,
    find_cells,
    load_plan,
    model_kinds,
    reference_cell,
)
from nudiff.utils import NudiffError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _plan(name: str = "kumar-grid.yaml", overrides: list[str] | None = None):
    """A shipped config of ``configs/``, loaded (with ``--set``-style ``overrides``)."""
    return load_plan(CONFIGS / name, overrides)


def test_cells_only_where_synthetic_pairs_exist():
    cfg = ExperimentConfig(
        fractions=[0.1, 1.0],
        arms=["real", "real+syn"],
        seeds=[0],
        seeds_by_fraction={0.1: [0, 1, 2]},
        synthetic_fractions=[0.1],
    )
    names = [c.name for c in cells_of(cfg)]
    assert names == [
        "f0.10_real_s0",
        "f0.10_real_s1",
        "f0.10_real_s2",
        "f0.10_real+syn_s0",
        "f0.10_real+syn_s1",
        "f0.10_real+syn_s2",
        "f1.00_real_s0",
    ]


def test_arm_fractions_and_seeds_restrict_an_arm():
    cfg = ExperimentConfig(
        fractions=[0.1, 0.5],
        arms=["real", "syn-only"],
        seeds=[0],
        seeds_by_fraction={0.1: [0, 1]},
        arm_fractions={"syn-only": [0.1]},
        arm_seeds={"syn-only": [3]},
    )
    names = [c.name for c in cells_of(cfg)]
    assert names == ["f0.10_real_s0", "f0.10_real_s1", "f0.10_syn-only_s3", "f0.50_real_s0"]


def test_unknown_arm_in_arm_fractions_is_an_error():
    with pytest.raises(NudiffError, match="arms"):
        ExperimentConfig(arm_fractions={"syn_only": [0.1]})


def test_unknown_arm_is_an_error():
    with pytest.raises(NudiffError, match="arms"):
        ExperimentConfig(arms=["real", "bogus"])


def test_the_arm_table_says_what_each_arm_needs_and_trains_on():
    real, extra = ["r1", "r2", "r3"], ["x1", "x2", "x3", "x4"]
    assert ARMS["real"].compose(real, None) == (real, None)
    assert ARMS["real+syn"].compose(real, extra) == (real, extra)
    assert ARMS["syn-only"].compose(real, extra) == (extra, None)
    dup, syn = ARMS["real-dup"].compose(real, extra)  # as many patches as real + extra, all real
    assert syn is None and len(dup) == 7 and set(dup) == set(real)
    assert [a for a, arm in ARMS.items() if arm.pairs] == [
        "real+syn",
        "real+copypaste+syn",
        "real-dup",
        "syn-only",
    ]
    assert [a for a, arm in ARMS.items() if arm.copypaste] == [
        "real+copypaste",
        "real+copypaste+syn",
    ]
    assert [a for a, arm in ARMS.items() if arm.versus_copypaste] == [
        "real+syn",
        "real+copypaste+syn",
    ]
    assert Cell(0.1, "real+copypaste+syn", 0).needs is ARMS["real+copypaste+syn"]


@pytest.mark.parametrize(
    "name", ["demo.yaml", "cpu-grid.yaml", "cpu.yaml", "paper.yaml", "kumar-grid.yaml"]
)
def test_shipped_configs_load(name):
    plan = _plan(name)
    assert plan.structure.model.kind == "structure" and plan.image.model.kind == "image"
    assert cells_of(plan.experiment)
    check_windows(plan, name)  # every shipped grid's patches hold its models' windows


def test_patches_smaller_than_a_models_window_are_refused_upfront():
    # 64-px patches at scale 0.5 are 32 px: the models' 64-px windows do not fit
    with pytest.raises(
        NudiffError,
        match=r"demo.yaml: data.patch_size 64 .* window structure.data.patch_size 64: "
        r"set data.patch_size >= 128",
    ):
        check_windows(_plan("demo.yaml", ["data.patch_size=64"]), "demo.yaml")
    # a grid of real cells only trains no diffusion model
    check_windows(_plan("demo.yaml", ["data.patch_size=64", "experiment.arms=[real]"]), "x")


def test_unknown_section_is_an_error(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("experiment: {}\nsegmnet: {}\n")
    with pytest.raises(NudiffError, match="segmnet"):
        load_plan(p)


def test_overrides_set_nested_keys_and_are_checked():
    cfg = CONFIGS / "kumar-grid.yaml"
    plan = load_plan(
        cfg,
        [
            "segment.train.real_ratio=0.9",
            "experiment.arms=[real, real+syn]",
            "segment.train.synthetic_until=null",
        ],
    )
    assert plan.segment.train.real_ratio == 0.9 and plan.experiment.arms == ["real", "real+syn"]
    with pytest.raises(NudiffError, match="SECTION.KEY=VALUE"):
        load_plan(cfg, ["segment.train.real_ratio"])
    with pytest.raises(NudiffError, match="real_ratio_typo"):
        load_plan(cfg, ["segment.train.real_ratio_typo=1"])


def test_reference_cell_is_fixed_whatever_seeds_a_run_asks_for():
    cfg = ExperimentConfig(fractions=[0.1, 1.0], seeds=[4], seeds_by_fraction={0.1: [2, 1]})
    assert reference_cell(cfg, 0.1).name == "f0.10_real_s0"
    assert reference_cell(cfg, 1.0).name == "f1.00_real_s0"
    cfg.filter_seed = 3
    assert reference_cell(cfg, 0.1).name == "f0.10_real_s3"


def test_find_cells_picks_cells_of_the_grid_by_name():
    cfg = _plan().experiment
    names = [c.name for c in cells_of(cfg)]
    assert [c.name for c in find_cells(cfg, [names[3], names[0]])] == [
        names[0],
        names[3],
    ]  # grid order
    with pytest.raises(NudiffError, match="f0.10_real_s9.*--list-cells"):
        find_cells(cfg, [names[0], "f0.10_real_s9"])


def test_demo_runs_the_methods_pairs_in_three_cells():
    """The main job runs NuDiff's own pairs (sampled structures, both shipped models) without
    the fidelity ranking (benchmarks/results/verdict-kumar-random/), in no more cells than its
    45-minute budget holds."""
    plan = _plan("demo.yaml")
    names = [c.name for c in cells_of(plan.experiment)]
    assert names == ["f0.10_real_s0", "f0.10_real+syn_s0", "f1.00_real_s0"]
    assert plan.synthesis.structures == "sampled" and model_kinds(plan) == ("structure", "image")
    assert plan.synthesis.filter.segmenter == "real" and plan.synthesis.filter.keep_top is None
