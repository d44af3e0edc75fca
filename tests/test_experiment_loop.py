"""The loop (timings, cells, --cell), the run folder's locks and the CLI's grid commands."""

import functools
import os
from pathlib import Path

import pytest

import nudiff.experiment.loop as loop
from nudiff.cli import main
from nudiff.config import to_dict
from nudiff.experiment.fingerprint import stamp
from nudiff.experiment.grid import Cell, cells_of, load_plan
from nudiff.experiment.loop import RunContext, run_cell, run_experiment, timed_step
from nudiff.experiment.store import import_committed, is_committed
from nudiff.layout import RunLayout
from nudiff.metrics import METRICS
from nudiff.utils import NudiffError, read_json, write_json

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _plan(name: str = "kumar-grid.yaml", overrides: list[str] | None = None):
    return load_plan(CONFIGS / name, overrides)


def test_a_step_timed_before_runs_again_and_times_from_another_process_are_kept(tmp_path):
    # a filter segmenter whose metrics came from --results has its train time on file but no
    # model: the time must not stop it from being trained again (it once did, silently)
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
    assert set(saved) == {
        "cells/f0.10_real_s0/train",
        "cells/f0.10_real_s0/predict",
        "f0.10/train_image",
    }


def _context(plan, out: Path) -> RunContext:
    run = RunLayout(out)
    return RunContext(
        plan,
        run,
        out / "data",
        test_images=out / "test" / "images",
        test_labels=out / "test",
        val=None,
        timed=functools.partial(timed_step, run.timings, {}),
    )


def test_a_retrained_filter_cell_keeps_its_committed_metrics(tmp_path, monkeypatch):
    # the filter segmenter of a committed cell is retrained (no model in --results); its new
    # scores once replaced the committed ones in the run folder, and a report built from it
    # showed 0.5304 where 0.5289 was committed
    plan, cell = _plan(), Cell(0.1, "real", 0)
    results, out = tmp_path / "results", tmp_path / "run"
    committed = {"mean": {"dice": 0.8, "aji": 0.5289, "pq": 0.4816}, "per_image": {}}
    write_json(
        results / "cells" / f"{cell.name}.json",
        {"cell": cell.name, **stamp(plan, cell), **committed},
    )
    trained, seeds = [], []
    monkeypatch.setattr(loop, "load_subset", lambda *a: ["patch"] * 4)
    monkeypatch.setattr(
        loop,
        "train_segmenter",
        lambda cfg, folder, *a, **k: (
            trained.append(folder),
            seeds.append(cfg.train.seed),
            (folder / "model").mkdir(parents=True),
        ),
    )
    monkeypatch.setattr(loop, "predict_folder", lambda *a: None)
    monkeypatch.setattr(
        loop,
        "evaluate_folders",
        lambda *a: {"mean": {"dice": 0.8, "aji": 0.5304, "pq": 0.4830}, "per_image": {}},
    )
    ctx = _context(plan, out)
    cell_dir = ctx.run.cell(cell)

    assert is_committed(results, plan, cell)  # as run_experiment does for the filter cell
    import_committed(results, cell, ctx.run)
    run_cell(ctx, cell, need_model=True)
    assert trained == [cell_dir]
    assert read_json(cell_dir / "metrics.json")["mean"]["aji"] == 0.5289
    assert read_json(cell_dir / "metrics_retrained.json")["mean"]["aji"] == 0.5304
    run_cell(ctx, cell, need_model=True)
    assert trained == [cell_dir]  # model and metrics here: done
    run_cell(ctx, Cell(0.1, "real", 7))
    assert (
        seeds == [0, 7] and plan.segment.train.seed != 7
    )  # the cell's seed, on a copy of the plan


def test_a_cell_job_refuses_a_cell_whose_models_are_not_finished(tmp_path, monkeypatch):
    plan = _plan("demo.yaml", ["synthesis.structures=copypaste"])  # the image model alone
    out = tmp_path / "run"
    monkeypatch.setattr(loop, "_context", lambda plan, run, *a: _context(plan, run.root))
    ran = []
    monkeypatch.setattr(
        loop, "run_cell", lambda ctx, cell, need_model=False: ran.append(cell.name)
    )
    syn = Cell(0.1, "real+syn", 0)
    with pytest.raises(
        NudiffError,
        match=r"f0.10_real\+syn_s0 needs the f0.10 diffusion models \(image\).*--models-only",
    ):
        run_experiment(plan, out, cells=[syn])
    assert ran == []
    assert run_experiment(plan, out, cells=[Cell(0.1, "real", 0)]) is None  # needs no pairs: runs
    assert (
        ran == ["f0.10_real_s0"] and not RunLayout(out).report.exists()
    )  # no report: built apart
    RunLayout(out).model(0.1, "image").mkdir(parents=True)  # --models-only has finished it
    monkeypatch.setattr(loop, "make_pairs", lambda *a: ran.append("pairs"))
    run_experiment(plan, out, cells=[syn])
    assert ran[1:] == [
        "f0.10_real_s0",
        "pairs",
        syn.name,
    ]  # the filter's reference cell, the pairs, the cell


def test_the_run_folder_lock_is_exclusive_and_goes_with_its_holder(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    run = RunLayout(tmp_path)
    path = tmp_path / "locks" / "f0.10_image.lock"
    with run.lock("f0.10_image"):
        fd = os.open(path, os.O_RDWR)
        with pytest.raises(BlockingIOError):  # another process (another open file) must wait
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released
    os.close(fd)


def test_list_cells_prints_the_grid_one_per_line(capsys):
    config = str(CONFIGS / "kumar-grid.yaml")
    assert main(["experiment", "--config", config, "--list-cells"]) == 0
    assert capsys.readouterr().out.split() == [c.name for c in cells_of(_plan().experiment)]
    assert (
        main(
            [
                "experiment",
                "--config",
                config,
                "--list-cells",
                "--set",
                "experiment.fractions=[1.0]",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.split() == ["f1.00_real_s0", "f1.00_real_s1", "f1.00_real_s2"]
    assert (
        main(["experiment", "--config", config, "--cell", "f0.10_real_s9", "--out", "x"]) == 2
    )  # not a cell
    assert "--list-cells" in capsys.readouterr().err


def test_the_report_command_publishes_committed_cells(tmp_path, capsys):
    """`nudiff experiment report` (once benchmarks/experiment_results.py): a report built from
    committed cells alone, copied into the results folder."""
    config = CONFIGS / "cpu-grid.yaml"
    overrides = [
        "experiment.fractions=[0.1]",
        "experiment.arms=[real, real+syn]",
        "experiment.seeds_by_fraction={}",
    ]
    plan = _plan("cpu-grid.yaml", overrides)
    results = tmp_path / "results"
    for cell, aji in ((Cell(0.1, "real", 0), 0.5), (Cell(0.1, "real+syn", 0), 0.6)):
        per_image = {i: {m: aji + d for m in METRICS} for i, d in (("a", 0.0), ("b", 0.02))}
        write_json(
            results / "cells" / f"{cell.name}.json",
            {
                "cell": cell.name,
                "fraction": 0.1,
                "arm": cell.arm,
                "seed": 0,
                **stamp(plan, cell),
                "per_image": per_image,
                "mean": {},
            },
        )
    args = [
        "experiment",
        "report",
        "--config",
        str(config),
        "--out",
        str(tmp_path / "run"),
        "--results",
        str(results),
        *(a for o in overrides for a in ("--set", o)),
    ]
    assert main(args) == 0
    assert "| 10% | real+syn | 1 | 0.6100" in capsys.readouterr().out
    assert {p.name for p in results.iterdir()} == {
        "cells",
        "table.md",
        "summary.json",
        "chart.png",
        "results.csv",
    }
    assert main([*args, "--set", "segment.train.steps=7"]) == 2  # cells of another configuration
    assert "computed with another configuration" in capsys.readouterr().err


def test_a_grid_runs_as_models_then_one_cell_then_the_rest_then_the_report(
    tmp_path, monkeypatch, capsys
):
    """The loop's order with every training stubbed: --models-only trains the diffusion models
    only; a --cell job trains the filter's reference cell, makes the pairs, runs its cell and
    writes no report; the full run takes what is done and runs the rest; each arm trains on
    what the arm table says; the results folder keeps the config they ran; `report` (its
    config by default) publishes it all."""
    import copy
    from dataclasses import asdict

    import numpy as np
    import yaml
    from test_end_to_end import TINY, _dataset  # the tiny grid of the slow end-to-end tests

    import nudiff.experiment.training_data as td
    from nudiff.data.io import write_image, write_instance_map

    calls = []

    def train_segmenter(cfg, folder, real, synthetic, selection, resume=False):
        calls.append((folder.name, len(real), len(synthetic or [])))
        (folder / "model").mkdir(parents=True, exist_ok=True)

    def synthesize(structure, image, out, cfg, real_dir=None):
        calls.append(("pairs filtered by", Path(cfg.filter.segmenter).name))
        inst = np.zeros((64, 64), np.int32)
        inst[10:20, 10:20] = 1
        for k in range(cfg.n):
            write_image(Path(out) / "images" / f"s{k}.png", np.full((64, 64, 3), 200, np.uint8))
            write_instance_map(Path(out) / "labels" / f"s{k}.png", inst)
        write_json(Path(out) / "manifest.json", {"config": asdict(cfg), "n_accepted": cfg.n})

    per_image = {"img0": dict.fromkeys(METRICS, 0.5)}
    monkeypatch.setattr(loop, "train_segmenter", train_segmenter)
    monkeypatch.setattr(loop, "predict_folder", lambda model, images, out: None)
    monkeypatch.setattr(
        loop,
        "evaluate_folders",
        lambda pred, labels: {"mean": per_image["img0"], "per_image": per_image},
    )
    monkeypatch.setattr(
        td,
        "train_diffusion",
        lambda cfg, folder, *a, **k: (
            calls.append(cfg.model.kind),
            (Path(folder) / "model").mkdir(parents=True),
        ),
    )
    monkeypatch.setattr(td, "synthesize", synthesize)
    plan = copy.deepcopy(TINY)
    plan["synthesis"]["filter"] |= {"segmenter": "real", "keep_top": 0.5}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(plan))
    out, results = tmp_path / "out", tmp_path / "results"
    args = [
        "experiment",
        "--config",
        str(config),
        "--data",
        str(_dataset(tmp_path / "data")),
        "--out",
        str(out),
        "--results",
        str(results),
    ]

    assert main([*args, "--models-only"]) == 0
    assert calls == ["structure", "image"] and not (out / "cells").exists()
    calls.clear()
    assert main([*args, "--cell", "f0.50_real+syn_s0"]) == 0
    assert calls == [
        ("f0.50_real_s0", 6, 0),
        ("pairs filtered by", "f0.50_real_s0"),
        ("f0.50_real+syn_s0", 6, 4),
    ]
    assert sorted(p.name for p in (results / "cells").iterdir()) == [
        "f0.50_real+syn_s0.json",
        "f0.50_real_s0.json",
    ]
    assert not (out / "report").exists()
    # beside the committed cells, the resolved configuration they ran
    assert to_dict(load_plan(results / "config.yaml")) == to_dict(load_plan(config))
    written = (results / "config.yaml").read_text()
    calls.clear()
    assert main(args) == 0
    assert calls == [
        ("f0.50_real+copypaste+syn_s0", 6, 8),
        ("f0.50_syn-only_s0", 4, 0),
        ("f1.00_real_s0", 12, 0),
    ]
    assert (
        len((out / "results.csv").read_text().splitlines()) == 1 + 5
        and (out / "report" / "index.html").exists()
    )
    assert (results / "config.yaml").read_text() == written
    assert (
        main(["experiment", "report", *args[5:]]) == 0
    )  # --config: the results folder's config.yaml
    assert {"table.md", "timings.md", "results.csv"} <= {p.name for p in results.iterdir()}
    assert main(["experiment", "report", "--out", str(out), "--results", str(tmp_path)]) == 2
    assert "config.yaml: not found" in capsys.readouterr().err


def test_a_machine_of_the_other_precision_adds_the_cells_of_other_seeds(
    tmp_path, monkeypatch, capsys
):
    """The precision rule: a seed's cells share one precision. A bf16 machine commits seed 0;
    a machine without native bf16 (fp32) skips seed 0's remaining cell, refuses it by name,
    adds seed 1, and the report pairs 100 % − 50 % within each seed and says which ran how."""
    import copy

    import yaml
    from test_end_to_end import TINY, _dataset

    from nudiff import utils

    def train_segmenter(cfg, folder, real, synthetic, selection, resume=False):
        trained.append(folder.name)
        (folder / "model").mkdir(parents=True, exist_ok=True)

    # 100 % beats 50 % by 0.10 on seed 0 (bf16) and by 0.02 on seed 1 (fp32); image b by 0.01 more
    aji = {
        ("f0.50", "s0"): 0.50,
        ("f1.00", "s0"): 0.60,
        ("f0.50", "s1"): 0.52,
        ("f1.00", "s1"): 0.54,
    }
    monkeypatch.setattr(loop, "train_segmenter", train_segmenter)
    monkeypatch.setattr(loop, "predict_folder", lambda model, images, out: None)

    def evaluate(pred, labels):
        fraction, _, seed = pred.parent.name.split("_")
        a = aji[(fraction, seed)]
        per_image = {
            "a": dict.fromkeys(METRICS, a),
            "b": dict.fromkeys(METRICS, a + (0.01 if fraction == "f1.00" else 0)),
        }
        return {"mean": per_image["a"], "per_image": per_image}

    monkeypatch.setattr(loop, "evaluate_folders", evaluate)
    plan = copy.deepcopy(TINY)
    plan["experiment"] |= {"arms": ["real"], "seeds": [0, 1]}
    plan["segment"]["train"]["precision"] = "bf16"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(plan))
    out, results = tmp_path / "out", tmp_path / "results"
    args = [
        "experiment",
        "--config",
        str(config),
        "--data",
        str(_dataset(tmp_path / "data")),
        "--out",
        str(out),
        "--results",
        str(results),
    ]
    trained = []

    monkeypatch.setattr(utils, "native_bf16", lambda device: True)
    assert main([*args, "--cell", "f0.50_real_s0"]) == 0
    assert read_json(results / "cells" / "f0.50_real_s0.json")["segment_precision"] == "bf16"

    monkeypatch.setattr(utils, "native_bf16", lambda device: False)  # an AVX2-only CPU
    capsys.readouterr()
    assert main([*args, "--status"]) == 0
    status = capsys.readouterr().out
    assert (
        "| f1.00_real_s0 | to run elsewhere |" in status and "| f1.00_real_s1 | to run |" in status
    )
    assert "Committed seeds ran in: s0 bf16; this machine trains in fp32" in status
    assert main([*args, "--cell", "f1.00_real_s0"]) == 2
    assert (
        "seed 0's committed cells ran in bf16 and this machine trains in fp32"
        in capsys.readouterr().err
    )
    assert main(args) == 0
    assert trained == ["f0.50_real_s0", "f0.50_real_s1", "f1.00_real_s1"]
    assert (
        "cell f1.00_real_s0 skipped: seed 0's committed cells ran in bf16"
        in capsys.readouterr().out
    )
    assert read_json(results / "cells" / "f1.00_real_s1.json")["segment_precision"] == "no"
    # a cell of seed 0 finished in fp32 some other way is never committed beside the bf16 ones
    from nudiff.experiment.store import commit_cell

    cell = Cell(1.0, "real", 0)
    write_json(RunLayout(out).metrics(cell), evaluate(RunLayout(out).cell(cell) / "pred", None))
    with pytest.raises(NudiffError, match="not committed"):
        commit_cell(results, load_plan(config), cell, RunLayout(out), {})
    RunLayout(out).metrics(cell).unlink()

    monkeypatch.setattr(utils, "native_bf16", lambda device: True)  # back on a bf16 machine
    trained.clear()
    assert main(args) == 0
    assert trained == ["f1.00_real_s0"]
    capsys.readouterr()
    assert main(["experiment", "report", *args[5:]]) == 0
    table = (results / "table.md").read_text()
    assert "Segmenter precision by seed: s0 bf16, s1 fp32" in table
    # 100 % − 50 % per seed: s0 +0.105, s1 +0.025 (pairs never cross seeds): mean +0.065
    from nudiff.experiment import committed_rows, paired_interval

    rows = committed_rows(results)
    gap = paired_interval(
        [r for r in rows if r["fraction"] == 1.0],
        [r for r in rows if r["fraction"] == 0.5],
        ("aji",),
        by_seed=True,
    )
    assert gap["seeds"] == [0, 1] and gap["aji"]["per_seed"] == pytest.approx([0.105, 0.025])
    assert gap["aji"]["mean"] == pytest.approx(0.065)


def test_the_run_says_which_diffusion_models_were_shipped_and_which_trained(tmp_path):
    run = RunLayout(tmp_path)
    run.model(0.1, "image").mkdir(parents=True)
    run.model(0.1, "structure").mkdir(parents=True)
    run.model_run(0.2, "image").mkdir(parents=True)  # not finished: not listed
    write_json(run.shipped_record(0.1, "image"), {"from": "models/kumar-f0.10/image"})
    assert run.model_sources() == [
        "f0.10 image model: shipped, models/kumar-f0.10/image",
        "f0.10 structure model: trained in this run",
    ]


def test_reuse_without_a_results_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["experiment", "--config", str(CONFIGS / "demo.yaml"), "--out", str(out)]
    assert main([*args, "--reuse", str(tmp_path)]) == 2
    assert "--reuse needs --results" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(
    "overrides, model_here, scored",
    [
        ([], False, False),  # keeps every pair, reference committed without its model: unscored
        ([], True, True),  # its model is in the run folder: scored, nothing retrained
        (["synthesis.filter.keep_top=0.5"], False, True),  # ranks: the reference is retrained
    ],
)
def test_a_filter_that_only_scores_does_not_retrain_a_committed_reference(
    tmp_path, monkeypatch, overrides, model_here, scored
):
    # `--reuse` into a new --out once retrained the reference cell (~12 min) only to score
    # pairs that were all kept whatever their score
    import nudiff.experiment.training_data as td

    plan = _plan("demo.yaml", overrides)
    ref = Cell(0.1, "real", 0)
    results, out = tmp_path / "results", tmp_path / "run"
    write_json(
        results / "cells" / f"{ref.name}.json",
        {"cell": ref.name, **stamp(plan, ref), "mean": {"aji": 0.5}, "per_image": {}},
    )
    ctx = _context(plan, out)
    if model_here:
        (ctx.run.cell(ref) / "model").mkdir(parents=True)
    trained, made = [], []
    monkeypatch.setattr(loop, "synthetic_done", lambda *a: False)
    monkeypatch.setattr(loop, "run_cell", lambda ctx, cell, need_model=False: trained.append(cell))
    monkeypatch.setattr(loop, "_commit", lambda *a: None)
    monkeypatch.setattr(loop, "make_pairs", lambda *a: made.append(a[-1]))
    loop._pairs_for(ctx, 0.1, results, {})
    assert (made[0] is not None) == scored
    assert trained == ([ref] if scored else [])
    if not scored:  # and the pairs' maker refuses to rank without the reference's model
        ranking = _plan("demo.yaml", ["synthesis.filter.keep_top=0.5"])
        with pytest.raises(NudiffError, match="ranks by a segmenter"):
            td.make_pairs(ranking, ctx.run, out / "data", 0.1, ctx.timed, None)
