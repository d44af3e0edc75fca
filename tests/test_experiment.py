import pytest

from helpers import disk_instance_map
from nudiff.experiment import ExperimentConfig, cells_of, load_plan
from nudiff.synthesis import FilterConfig, check_structure
from nudiff.utils import NudiffError


def test_cells_only_where_synthetic_pairs_exist():
    cfg = ExperimentConfig(fractions=[0.1, 1.0], arms=["real", "real+syn"], seeds=[0],
                           seeds_by_fraction={0.1: [0, 1, 2]}, synthetic_fractions=[0.1])
    names = [c.name for c in cells_of(cfg)]
    assert names == ["f0.10_real_s0", "f0.10_real_s1", "f0.10_real_s2",
                     "f0.10_real+syn_s0", "f0.10_real+syn_s1", "f0.10_real+syn_s2", "f1.00_real_s0"]


def test_arm_fractions_and_seeds_restrict_an_arm():
    cfg = ExperimentConfig(fractions=[0.1, 0.5], arms=["real", "syn-only"], seeds=[0],
                           seeds_by_fraction={0.1: [0, 1]}, arm_fractions={"syn-only": [0.1]},
                           arm_seeds={"syn-only": [3]})
    names = [c.name for c in cells_of(cfg)]
    assert names == ["f0.10_real_s0", "f0.10_real_s1", "f0.10_syn-only_s3", "f0.50_real_s0"]


def test_unknown_arm_in_arm_fractions_is_an_error():
    with pytest.raises(NudiffError, match="arms"):
        ExperimentConfig(arm_fractions={"syn_only": [0.1]})


def test_unknown_arm_is_an_error():
    with pytest.raises(NudiffError, match="arms"):
        ExperimentConfig(arms=["real", "bogus"])


@pytest.mark.parametrize("name", ["demo.yaml", "cpu-grid.yaml", "cpu.yaml", "paper.yaml", "kumar-grid.yaml"])
def test_shipped_configs_load(name):
    plan = _plan(name)
    assert plan.structure.model.kind == "structure" and plan.image.model.kind == "image"
    assert cells_of(plan.experiment)


def test_unknown_section_is_an_error(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("experiment: {}\nsegmnet: {}\n")
    with pytest.raises(NudiffError, match="segmnet"):
        load_plan(p)


def test_structure_filter_reasons():
    import numpy as np

    cfg = FilterConfig()
    assert check_structure(np.zeros((32, 32), np.int32), cfg) == "too_few_nuclei"
    assert check_structure(disk_instance_map(), cfg) is None
    assert check_structure(np.ones((32, 32), np.int32), cfg) == "too_much_foreground"
    dust = np.zeros((32, 32), np.int32)
    dust[::4, ::4] = np.arange(1, 65).reshape(8, 8)
    assert check_structure(dust, cfg) == "nuclei_too_small"


def _plan(name: str = "kumar-grid.yaml", overrides: list[str] | None = None):
    """A shipped config of ``configs/``, loaded (with ``--set``-style ``overrides``)."""
    from pathlib import Path

    return load_plan(Path(__file__).resolve().parents[1] / "configs" / name, overrides)


def test_cell_fingerprint_follows_what_decides_the_numbers():
    from nudiff.experiment import Cell, cell_fingerprint

    plan, cell = _plan(), Cell(0.1, "real", 0)
    base = cell_fingerprint(plan, cell)
    assert cell_fingerprint(plan, Cell(0.1, "real", 1)) != base
    plan.image.train.steps += 1  # diffusion settings do not decide a real-only cell
    assert cell_fingerprint(plan, cell) == base
    assert cell_fingerprint(plan, Cell(0.1, "real+syn", 0)) != cell_fingerprint(_plan(), Cell(0.1, "real+syn", 0))
    plan.segment.train.steps += 1
    assert cell_fingerprint(plan, cell) != base


def test_the_combined_arm_is_decided_by_both_extra_sets():
    from nudiff.experiment import Cell, cell_fingerprint

    cell = Cell(0.1, "real+copypaste+syn", 0)
    base = cell_fingerprint(_plan(), cell)
    plan = _plan()
    plan.experiment.copypaste.nuclei += 1
    assert cell_fingerprint(plan, cell) != base
    assert cell_fingerprint(plan, Cell(0.1, "real+syn", 0)) == cell_fingerprint(_plan(), Cell(0.1, "real+syn", 0))
    plan = _plan()
    plan.image.train.steps += 1
    assert cell_fingerprint(plan, cell) != base
    assert cell_fingerprint(plan, Cell(0.1, "real+copypaste", 0)) == cell_fingerprint(
        _plan(), Cell(0.1, "real+copypaste", 0))


def test_committed_cells_are_taken_or_refused(tmp_path):
    from nudiff.experiment import Cell, _commit_cell, _committed
    from nudiff.utils import read_json, write_json

    plan, cell = _plan(), Cell(0.1, "real", 0)
    run, results = tmp_path / "run", tmp_path / "results"
    metrics = {"per_image": {"a": {"aji": 0.5}}, "mean": {"aji": 0.5}, "n_images": 1}
    write_json(run / "cells" / cell.name / "metrics.json", metrics)
    _commit_cell(results, plan, cell, run, {f"cells/{cell.name}/train": 60.0})
    saved = read_json(results / "cells" / f"{cell.name}.json")
    assert saved["per_image"] == metrics["per_image"] and saved["minutes"] == {"train": 1.0}
    assert saved["segment_steps"] == plan.segment.train.steps

    fresh = tmp_path / "fresh"  # another machine: the cell is taken from the committed folder
    assert _committed(results, plan, cell, fresh / "cells" / cell.name)
    assert read_json(fresh / "cells" / cell.name / "metrics.json")["per_image"] == metrics["per_image"]
    assert not _committed(results, plan, Cell(1.0, "real", 0), fresh / "cells" / "f1.00_real_s0")

    plan.segment.train.steps = 10
    with pytest.raises(NudiffError, match="another configuration"):
        _committed(results, plan, cell, tmp_path / "other" / "cells" / cell.name)
    with pytest.raises(NudiffError, match="another configuration"):  # finished here as well
        _committed(results, plan, cell, run / "cells" / cell.name)


def test_overrides_set_nested_keys_and_are_checked():
    from pathlib import Path

    cfg = Path(__file__).resolve().parents[1] / "configs" / "kumar-grid.yaml"
    plan = load_plan(cfg, ["segment.train.real_ratio=0.9", "experiment.arms=[real, real+syn]",
                           "segment.train.synthetic_until=null"])
    assert plan.segment.train.real_ratio == 0.9 and plan.experiment.arms == ["real", "real+syn"]
    with pytest.raises(NudiffError, match="SECTION.KEY=VALUE"):
        load_plan(cfg, ["segment.train.real_ratio"])
    with pytest.raises(NudiffError, match="real_ratio_typo"):
        load_plan(cfg, ["segment.train.real_ratio_typo=1"])


def test_a_finished_but_uncommitted_cell_is_not_counted_as_committed(tmp_path):
    from nudiff.experiment import Cell, _committed
    from nudiff.utils import write_json

    plan, cell = _plan(), Cell(0.1, "real", 0)
    cell_dir = tmp_path / "run" / "cells" / cell.name
    write_json(cell_dir / "metrics.json", {"per_image": {}, "mean": {}, "n_images": 0})
    assert _committed(None, plan, cell, cell_dir)
    assert not _committed(tmp_path / "results", plan, cell, cell_dir)  # the loop will commit it


def test_a_step_timed_before_runs_again_and_times_from_another_process_are_kept(tmp_path):
    # a filter segmenter whose metrics came from --results has its train time on file but no
    # model: the time must not stop it from being trained again (it once did, silently)
    from nudiff.experiment import timed_step
    from nudiff.utils import read_json, write_json

    path = tmp_path / "timings.json"
    write_json(path, {"cells/f0.10_real_s0/train": 6248.4})
    timings = read_json(path)
    ran = []
    timed_step(path, timings, "cells/f0.10_real_s0/train", lambda: ran.append(1))
    write_json(path, {**read_json(path), "f0.10/train_image": 99.0})  # --models-only, meanwhile
    timed_step(path, timings, "cells/f0.10_real_s0/predict", lambda: ran.append(2))
    assert ran == [1, 2]
    saved = read_json(path)
    assert saved["cells/f0.10_real_s0/train"] < 6248.4 and saved["f0.10/train_image"] == 99.0
    assert set(saved) == {"cells/f0.10_real_s0/train", "cells/f0.10_real_s0/predict", "f0.10/train_image"}


def test_a_retrained_filter_cell_keeps_its_committed_metrics(tmp_path, monkeypatch):
    # the filter segmenter of a committed cell is retrained (no model in --results); its new
    # scores once replaced the committed ones in the run folder, and a report built from it
    # showed 0.5304 where 0.5289 was committed
    import functools

    import nudiff.data.prepare
    import nudiff.metrics
    import nudiff.segment.predict
    import nudiff.segment.train
    from nudiff.experiment import Cell, _committed, _run_cell, cell_fingerprint, timed_step
    from nudiff.utils import read_json, write_json

    plan, cell = _plan(), Cell(0.1, "real", 0)
    results, out = tmp_path / "results", tmp_path / "run"
    committed = {"mean": {"dice": 0.8, "aji": 0.5289, "pq": 0.4816}, "per_image": {}}
    write_json(results / "cells" / f"{cell.name}.json",
               {"cell": cell.name, "fingerprint": cell_fingerprint(plan, cell), **committed})
    trained = []
    monkeypatch.setattr(nudiff.data.prepare, "load_subset", lambda *a: ["patch"] * 4)
    monkeypatch.setattr(nudiff.segment.train, "train_segmenter", lambda cfg, folder, *a, **k: (
        trained.append(folder), (folder / "model").mkdir(parents=True)))
    monkeypatch.setattr(nudiff.segment.predict, "predict_folder", lambda *a: None)
    monkeypatch.setattr(nudiff.metrics, "evaluate_folders", lambda *a: {
        "mean": {"dice": 0.8, "aji": 0.5304, "pq": 0.4830}, "per_image": {}})
    timed = functools.partial(timed_step, out / "timings.json", {})
    cell_dir = out / "cells" / cell.name

    assert _committed(results, plan, cell, cell_dir)  # as run_experiment does for the filter cell
    _run_cell(plan, out, tmp_path / "data", cell, None, None, None, timed, need_model=True)
    assert trained == [cell_dir]
    assert read_json(cell_dir / "metrics.json")["mean"]["aji"] == 0.5289
    assert read_json(cell_dir / "metrics_retrained.json")["mean"]["aji"] == 0.5304
    _run_cell(plan, out, tmp_path / "data", cell, None, None, None, timed, need_model=True)
    assert trained == [cell_dir]  # model and metrics here: done


def test_reference_cell_is_fixed_whatever_seeds_a_run_asks_for():
    from nudiff.experiment import Cell, cell_fingerprint, reference_cell

    cfg = ExperimentConfig(fractions=[0.1, 1.0], seeds=[4], seeds_by_fraction={0.1: [2, 1]})
    assert reference_cell(cfg, 0.1).name == "f0.10_real_s0"
    assert reference_cell(cfg, 1.0).name == "f1.00_real_s0"
    cfg.filter_seed = 3
    assert reference_cell(cfg, 0.1).name == "f0.10_real_s3"
    # the filter seed decides the synthetic set: it is part of a synthetic cell's fingerprint
    plan = _plan()
    syn, real = Cell(0.1, "real+syn", 0), Cell(0.1, "real", 0)
    before = cell_fingerprint(plan, syn), cell_fingerprint(plan, real)
    plan.experiment.filter_seed = 3
    assert cell_fingerprint(plan, syn) != before[0]
    assert cell_fingerprint(plan, real) == before[1]


def test_committed_kumar_cells_still_match_their_config():
    """A code change that moved the fingerprint of an unchanged configuration (a new option
    with its default, say) would make the grid refuse every committed cell."""
    from pathlib import Path

    from nudiff.experiment import Cell, cell_fingerprint
    from nudiff.utils import read_json

    results = Path(__file__).resolve().parents[1] / "benchmarks/results"
    cells = [*sorted((results / "kumar-grid/cells").glob("*.json")),
             *sorted((results / "learning_curve/steps3000/cells").glob("*.json"))]  # same plan at 3,000 steps
    assert cells
    plan = _plan()
    for path in cells:
        saved = read_json(path)
        cell = Cell(saved["fraction"], saved["arm"], saved["seed"])
        assert saved["fingerprint"] == cell_fingerprint(plan, cell), path.name


def test_real_label_cells_leave_the_unused_structure_section_out():
    """Cells whose labels come from the subset do not depend on the structure section; those
    committed while it was still hashed (legacy fingerprint) are still taken."""
    from pathlib import Path

    from nudiff.experiment import Cell, cell_fingerprint, cell_fingerprints
    from nudiff.utils import read_json

    cell = Cell(0.1, "real+syn", 0)
    for structures in ("subset", "copypaste"):
        plan, other = (_plan(overrides=[f"synthesis.structures={structures}"]) for _ in range(2))
        other.structure.train.steps += 1
        assert cell_fingerprint(plan, cell) == cell_fingerprint(other, cell)
        assert cell_fingerprint(plan, cell, legacy=True) != cell_fingerprint(other, cell, legacy=True)
    sampled = _plan()
    sampled_other = _plan()
    sampled_other.structure.train.steps += 1
    assert cell_fingerprint(sampled, cell) != cell_fingerprint(sampled_other, cell)
    assert cell_fingerprints(sampled, cell) == (cell_fingerprint(sampled, cell),)
    results = Path(__file__).resolve().parents[1] / "benchmarks/results"
    for folder, overrides in (("kumar-grid-subset", ["synthesis.structures=subset"]),
                              ("kumar-grid-paste", ["synthesis.structures=copypaste"])):
        plan = _plan(overrides=overrides)
        cells = sorted((results / folder / "cells").glob("f0.10_real+syn_s*.json"))
        assert cells
        for path in cells:
            saved = read_json(path)
            assert saved["fingerprint"] in cell_fingerprints(plan, Cell(0.1, saved["arm"], saved["seed"])), path


def test_a_synthetic_set_made_with_another_configuration_is_refused(tmp_path):
    from dataclasses import asdict, replace

    from nudiff.experiment import _synthetic_for
    from nudiff.utils import NudiffError, write_json

    plan = _plan()
    syn = tmp_path / "diffusion" / "f0.10" / "synthetic"
    seg = tmp_path / "cells" / "f0.10_real_s0"
    made = replace(plan.synthesis, n=plan.experiment.n_synthetic,
                   filter=replace(plan.synthesis.filter, segmenter="elsewhere/f0.10_real_s0"))
    config = asdict(made)
    del config["structures"]  # a manifest from before the key existed: counts as its default
    write_json(syn / "manifest.json", {"config": config, "n_accepted": 256})
    # same recipe (the segmenter folder may have moved): the set is used as it is
    assert _synthetic_for(plan, tmp_path, tmp_path / "data", 0.1, None, seg) == syn
    plan.synthesis.guidance_scale = 3.0
    with pytest.raises(NudiffError, match=r"another synthesis configuration .*guidance_scale"):
        _synthetic_for(plan, tmp_path, tmp_path / "data", 0.1, None, seg)


def test_training_speed_options_stay_out_of_the_fingerprint_and_the_time_budget_does_not():
    from nudiff.experiment import Cell, cell_fingerprint

    plan, cell = _plan(), Cell(0.1, "real+syn", 0)
    base = cell_fingerprint(plan, cell)
    plan.image.train.num_workers = 4  # the same windows, faster
    plan.structure.train.compile = "default"
    assert cell_fingerprint(plan, cell) == base
    plan.image.train.max_minutes = 5.0  # another model
    assert cell_fingerprint(plan, cell) != base


def test_pairs_made_elsewhere_need_no_filter_segmenter(tmp_path):
    """A fraction whose synthetic set is complete (made on a GPU, say) counts as done; run_experiment
    asks this before it (re)trains the filter's reference cell."""
    from dataclasses import asdict, replace

    from nudiff.experiment import synthetic_done
    from nudiff.utils import write_json

    plan = _plan("kumar-gpu.yaml")
    syn = tmp_path / "diffusion" / "f0.10" / "synthetic"
    assert not synthetic_done(plan, tmp_path, 0.1)
    made = replace(plan.synthesis, n=plan.experiment.n_synthetic,
                   filter=replace(plan.synthesis.filter, segmenter="runs/kumar-gpu-device/seg"))
    write_json(syn / "manifest.json", {"config": asdict(made), "n_accepted": 255})
    assert not synthetic_done(plan, tmp_path, 0.1)  # one short
    write_json(syn / "manifest.json", {"config": asdict(made), "n_accepted": 256})
    assert synthetic_done(plan, tmp_path, 0.1)


def test_demo_runs_the_real_label_recipe_in_three_cells():
    """The main job runs the pair recipe that paid on Kumar 10 % (real labels with real nuclei
    pasted in, the image model alone) and no more cells than its 60-minute budget holds."""
    from nudiff.experiment import model_kinds

    plan = _plan("demo.yaml")
    names = [c.name for c in cells_of(plan.experiment)]
    assert names == ["f0.10_real_s0", "f0.10_real+syn_s0", "f1.00_real_s0"]
    assert plan.synthesis.structures == "copypaste" and model_kinds(plan) == ("image",)
    assert plan.synthesis.filter.segmenter == "real"


def test_status_says_when_this_machine_would_train_bf16_in_fp32(monkeypatch):
    from nudiff import utils
    from nudiff.experiment import precision_note

    plan = _plan(overrides=["synthesis.structures=copypaste"])  # kumar-grid: all bf16
    monkeypatch.setattr(utils, "native_bf16", lambda device: True)
    assert precision_note(plan) == ""
    monkeypatch.setattr(utils, "native_bf16", lambda device: False)
    note = precision_note(plan)
    assert "bf16 segmenter, image model would train in fp32" in note  # no structure model here
    assert "segmenter, image model, structure model would" in precision_note(_plan())  # sampled labels
    plan.segment.train.precision = plan.image.train.precision = "no"
    assert precision_note(plan) == ""


def test_grid_status_says_where_each_cell_stands(tmp_path, capsys):
    from nudiff.cli import main
    from nudiff.experiment import Cell, cell_fingerprint, grid_status
    from nudiff.utils import write_json

    plan, out, results = _plan(), tmp_path / "run", tmp_path / "results"
    write_json(results / "cells" / "f0.10_real_s0.json",
               {"fingerprint": cell_fingerprint(plan, Cell(0.1, "real", 0))})
    write_json(results / "cells" / "f0.10_real_s1.json", {"fingerprint": "another"})
    write_json(out / "cells" / "f0.10_real_s2" / "metrics.json", {})
    (out / "cells" / "f1.00_real_s0" / "checkpoints").mkdir(parents=True)
    (out / "diffusion" / "f0.20" / "structure" / "model").mkdir(parents=True)
    (out / "diffusion" / "f0.20" / "image" / "checkpoints").mkdir(parents=True)
    rows = {r["cell"]: r for r in grid_status(plan, out, results)}
    assert len(rows) == 20
    assert [rows[f"f0.10_real_s{s}"]["state"] for s in (0, 1, 2)] == ["committed", "committed elsewhere", "finished"]
    assert rows["f1.00_real_s0"]["state"] == "started" and rows["f1.00_real_s1"]["state"] == "to run"
    assert rows["f0.20_real+syn_s0"]["pairs"] == "models: image (started)"
    assert rows["f0.50_real+syn_s0"]["pairs"] == "models: structure, image" and "pairs" not in rows["f0.50_real_s0"]
    for source in ("subset", "copypaste"):  # real labels: the image model alone
        real_labels = _plan(overrides=[f"synthesis.structures={source}"])
        rows = {r["cell"]: r for r in grid_status(real_labels, out, results)}
        assert rows["f0.50_real+syn_s0"]["pairs"] == "models: image"
    from pathlib import Path

    config = Path(__file__).resolve().parents[1] / "configs" / "kumar-grid.yaml"
    assert main(["experiment", "--config", str(config), "--out", str(out), "--results", str(results),
                 "--status"]) == 0
    assert "1 committed, 1 committed elsewhere, 1 finished, 1 started, 16 to run (of 20 cells)" in capsys.readouterr().out
    assert not (out / "config").exists()  # nothing written
