"""The fingerprint and the results folder: committed cells taken, refused, listed."""

from pathlib import Path

import pytest

from nudiff.config import to_dict
from nudiff.experiment.fingerprint import FINGERPRINT_VERSION, cell_fingerprint, stamp
from nudiff.experiment.grid import Cell, load_plan
from nudiff.experiment.store import (
    cell_done,
    commit_cell,
    committed_cells,
    committed_plan,
    committed_rows,
    grid_status,
    import_committed,
    is_committed,
    precision_note,
    reuse_cells,
)
from nudiff.layout import RunLayout
from nudiff.utils import NudiffError, read_json, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _plan(name: str = "kumar-grid.yaml", overrides: list[str] | None = None):
    """A shipped config of ``configs/``, loaded (with ``--set``-style ``overrides``)."""
    return load_plan(ROOT / "configs" / name, overrides)


def test_cell_fingerprint_follows_what_decides_the_numbers():
    plan, cell = _plan(), Cell(0.1, "real", 0)
    base = cell_fingerprint(plan, cell)
    assert cell_fingerprint(plan, Cell(0.1, "real", 1)) != base
    plan.image.train.steps += 1  # diffusion settings do not decide a real-only cell
    assert cell_fingerprint(plan, cell) == base
    assert cell_fingerprint(plan, Cell(0.1, "real+syn", 0)) != cell_fingerprint(
        _plan(), Cell(0.1, "real+syn", 0)
    )
    plan.segment.train.steps += 1
    assert cell_fingerprint(plan, cell) != base


def test_the_combined_arm_is_decided_by_both_extra_sets():
    cell = Cell(0.1, "real+copypaste+syn", 0)
    base = cell_fingerprint(_plan(), cell)
    plan = _plan()
    plan.experiment.copypaste.nuclei += 1
    assert cell_fingerprint(plan, cell) != base
    assert cell_fingerprint(plan, Cell(0.1, "real+syn", 0)) == cell_fingerprint(
        _plan(), Cell(0.1, "real+syn", 0)
    )
    plan = _plan()
    plan.image.train.steps += 1
    assert cell_fingerprint(plan, cell) != base
    assert cell_fingerprint(plan, Cell(0.1, "real+copypaste", 0)) == cell_fingerprint(
        _plan(), Cell(0.1, "real+copypaste", 0)
    )


def test_the_filter_seed_decides_synthetic_cells_only():
    plan = _plan()
    syn, real = Cell(0.1, "real+syn", 0), Cell(0.1, "real", 0)
    before = cell_fingerprint(plan, syn), cell_fingerprint(plan, real)
    plan.experiment.filter_seed = 3
    assert cell_fingerprint(plan, syn) != before[0]
    assert cell_fingerprint(plan, real) == before[1]


def test_speed_and_bookkeeping_options_stay_out_of_the_fingerprint_and_the_time_budget_does_not():
    plan, cell = _plan(), Cell(0.1, "real+syn", 0)
    base = cell_fingerprint(plan, cell)
    plan.image.train.num_workers = 4  # the same windows, faster
    plan.structure.train.compile = "default"
    plan.image.train.sample_every += 1  # previews: not the weights
    assert cell_fingerprint(plan, cell) == base
    plan.image.train.max_minutes = 5.0  # another model
    assert cell_fingerprint(plan, cell) != base


def test_real_label_cells_leave_the_unused_structure_section_out():
    """Cells whose labels come from the subset do not depend on the structure section."""
    cell = Cell(0.1, "real+syn", 0)
    for structures in ("subset", "copypaste"):
        plan, other = (_plan(overrides=[f"synthesis.structures={structures}"]) for _ in range(2))
        other.structure.train.steps += 1
        assert cell_fingerprint(plan, cell) == cell_fingerprint(other, cell)
    sampled = _plan()
    sampled_other = _plan()
    sampled_other.structure.train.steps += 1
    assert cell_fingerprint(sampled, cell) != cell_fingerprint(sampled_other, cell)


def test_a_cell_stamped_under_an_older_rule_asks_for_the_restamp_script(tmp_path):
    plan, cell = _plan(), Cell(0.1, "real", 0)
    write_json(
        tmp_path / "cells" / f"{cell.name}.json", {"fingerprint": cell_fingerprint(plan, cell)}
    )
    with pytest.raises(NudiffError, match="fingerprint version 1.*restamp_fingerprints"):
        is_committed(tmp_path, plan, cell)


def test_committed_cells_are_taken_or_refused(tmp_path):
    plan, cell = _plan(), Cell(0.1, "real", 0)
    run, results = RunLayout(tmp_path / "run"), tmp_path / "results"
    metrics = {"per_image": {"a": {"aji": 0.5}}, "mean": {"aji": 0.5}, "n_images": 1}
    write_json(run.metrics(cell), metrics)
    commit_cell(results, plan, cell, run, {f"cells/{cell.name}/train": 60.0})
    saved = read_json(results / "cells" / f"{cell.name}.json")
    assert saved["per_image"] == metrics["per_image"] and saved["minutes"] == {"train": 1.0}
    assert saved["segment_steps"] == plan.segment.train.steps
    assert [c.name for c in committed_cells(results)] == [cell.name]
    assert committed_rows(results) == [
        {"fraction": 0.1, "arm": "real", "seed": 0, "image": "a", "aji": 0.5}
    ]
    assert committed_rows(results, fraction=1.0) == []

    fresh = RunLayout(
        tmp_path / "fresh"
    )  # another machine: the cell is taken from the committed folder
    assert is_committed(results, plan, cell) and cell_done(results, plan, cell, fresh)
    assert not fresh.metrics(cell).exists()  # the query writes nothing
    import_committed(results, cell, fresh)
    assert read_json(fresh.metrics(cell))["per_image"] == metrics["per_image"]
    assert not is_committed(results, plan, Cell(1.0, "real", 0))

    plan.segment.train.steps = 10
    with pytest.raises(NudiffError, match="another configuration"):
        is_committed(results, plan, cell)
    with pytest.raises(NudiffError, match="another configuration"):  # finished here as well
        cell_done(results, plan, cell, run)


def test_a_finished_but_uncommitted_cell_is_not_counted_as_committed(tmp_path):
    plan, cell = _plan(), Cell(0.1, "real", 0)
    run = RunLayout(tmp_path / "run")
    write_json(run.metrics(cell), {"per_image": {}, "mean": {}, "n_images": 0})
    assert cell_done(None, plan, cell, run)
    assert not cell_done(tmp_path / "results", plan, cell, run)  # the loop will commit it


def test_a_commit_keeps_the_configuration_the_folder_ran(tmp_path, capsys):
    """RESULTS/config.yaml: the resolved plan of the first committed cell, never replaced; a
    later cell that file does not describe is warned about."""
    plan = _plan(overrides=["segment.train.real_ratio=0.5"])
    run, results = RunLayout(tmp_path / "run"), tmp_path / "results"
    cells = [Cell(0.1, "real", s) for s in range(4)]
    for cell in cells:
        write_json(run.metrics(cell), {"per_image": {}, "mean": {}, "n_images": 0})
    commit_cell(results, plan, cells[0], run, {})
    config = results / "config.yaml"
    assert to_dict(committed_plan(results)) == to_dict(plan)  # the whole plan, --set applied
    written = config.read_text()

    other_grid = _plan(overrides=["segment.train.real_ratio=0.5", "experiment.arms=[real]"])
    other_grid.image.train.steps += 1  # decides no real cell's numbers
    commit_cell(results, other_grid, cells[1], run, {})
    assert config.read_text() == written and "warning" not in capsys.readouterr().out

    commit_cell(results, _plan(), cells[2], run, {})  # another real_ratio: other numbers
    out = capsys.readouterr().out
    assert config.read_text() == written
    assert (
        out.count("\n") == 1 and f"warning: {config} is not the configuration f0.10_real_s2" in out
    )
    assert str(run.root / "config") in out

    config.write_text(written.replace("real_ratio:", "old_name:"))  # an option renamed since
    commit_cell(results, plan, cells[3], run, {})
    assert "(unreadable: " in capsys.readouterr().out


def test_reuse_takes_the_cells_of_this_configuration_and_precision_only(
    tmp_path, monkeypatch, capsys
):
    """--reuse: another results folder's cells with this configuration's fingerprint are
    committed here (config.yaml recorded); another configuration's, or another precision than
    the seed's cells here, are not."""
    from nudiff import utils

    plan, run = _plan(), RunLayout(tmp_path / "run")
    source, results = tmp_path / "source", tmp_path / "results"
    s0, s1, s2 = (Cell(0.1, "real", s) for s in range(3))
    full1 = Cell(1.0, "real", 1)
    for c in (s0, s1, s2, full1):
        write_json(run.metrics(c), {"per_image": {"a": {"aji": 0.5}}, "mean": {}, "n_images": 1})
    monkeypatch.setattr(utils, "native_bf16", lambda device: True)
    for c in (s0, s1, full1):
        commit_cell(source, plan, c, run, {})
    other = _plan(overrides=["segment.train.steps=7"])  # decides every cell's numbers
    commit_cell(source, other, s2, run, {})
    monkeypatch.setattr(utils, "native_bf16", lambda device: False)  # seed 1 here ran in fp32
    commit_cell(results, plan, s1, run, {})
    fp32 = read_json(results / "cells" / f"{s1.name}.json")
    capsys.readouterr()

    taken = reuse_cells(results, plan, [s0, s1, s2, full1], [source], run)
    assert taken == [s0] and is_committed(results, plan, s0)
    assert read_json(results / "cells" / f"{s0.name}.json") == read_json(
        source / "cells" / f"{s0.name}.json"
    )
    assert read_json(results / "cells" / f"{s1.name}.json") == fp32  # already here: left
    assert not (results / "cells" / f"{s2.name}.json").exists()
    assert not (results / "cells" / f"{full1.name}.json").exists()
    out = capsys.readouterr().out
    assert f"cell {s2.name}: not reused from" in out and "another configuration's" in out
    assert (
        f"cell {full1.name}: not reused" in out
        and "it ran in bf16, this folder's seed 1 in fp32" in out
    )

    fresh = tmp_path / "fresh"  # an empty folder gets the cells and their config.yaml
    assert reuse_cells(fresh, plan, [s0, full1], [tmp_path / "none", source], run) == [s0, full1]
    assert to_dict(committed_plan(fresh)) == to_dict(plan)


def test_a_folder_of_committed_cells_without_its_config_fails(tmp_path):
    write_json(
        tmp_path / "cells" / "f0.10_real_s0.json", {"fingerprint": "abc", "fingerprint_version": 2}
    )
    with pytest.raises(NudiffError, match="config.yaml: not found"):
        committed_plan(tmp_path)


# Every results folder of committed cells (each keeps the config its cells ran, config.yaml)
COMMITTED_GRIDS = sorted(str(p.parent.relative_to(RESULTS)) for p in RESULTS.glob("**/cells"))
# Folders holding a cell committed with a fingerprint from before an option was added (none now):
# a run of that folder refuses it. Refresh its fingerprint and drop it from this list.
STALE: dict[str, set[str]] = {}


def test_committed_grids_are_found():
    assert {"kumar-grid", "monuseg-grid", "pair_use/half"} <= set(COMMITTED_GRIDS)


@pytest.mark.parametrize("folder", COMMITTED_GRIDS)
def test_committed_cells_are_committed_under_the_config_they_ran(folder, tmp_path):
    """Each folder of committed cells keeps the configuration they ran (config.yaml; a folder
    without one fails). A code change that moved the fingerprint of an unchanged configuration
    (a new option with its default, say) would make a run refuse every committed cell: the
    store's status must find each committed cell committed under its folder's config."""
    results = RESULTS / folder
    plan = committed_plan(results)
    cells = committed_cells(results)
    assert cells
    states = {r["cell"]: r["state"] for r in grid_status(plan, tmp_path, results, cells=cells)}
    stale = STALE.get(folder, set())
    assert {name for name, state in states.items() if state != "committed"} == stale
    assert all(states[name] == "committed elsewhere" for name in stale)
    # the grid of the command that ran finds its committed cells committed too
    in_grid = {
        r["cell"]: r["state"] for r in grid_status(plan, tmp_path, results) if r["cell"] in states
    }
    assert all(state == "committed" for name, state in in_grid.items() if name not in stale)


def test_status_says_when_this_machine_would_train_bf16_in_fp32(monkeypatch):
    from nudiff import utils

    plan = _plan(overrides=["synthesis.structures=copypaste"])  # kumar-grid: all bf16
    monkeypatch.setattr(utils, "native_bf16", lambda device: True)
    assert precision_note(plan) == ""
    monkeypatch.setattr(utils, "native_bf16", lambda device: False)
    note = precision_note(plan)
    assert "bf16 segmenter, image model would train in fp32" in note  # no structure model here
    assert "segmenter, image model, structure model would" in precision_note(
        _plan()
    )  # sampled labels
    plan.segment.train.precision = plan.image.train.precision = "no"
    assert precision_note(plan) == ""


def test_grid_status_says_where_each_cell_stands(tmp_path, capsys):
    from nudiff.cli import main

    plan, out, results = _plan(), tmp_path / "run", tmp_path / "results"
    write_json(results / "cells" / "f0.10_real_s0.json", stamp(plan, Cell(0.1, "real", 0)))
    write_json(
        results / "cells" / "f0.10_real_s1.json",
        {"fingerprint": "another", "fingerprint_version": FINGERPRINT_VERSION},
    )
    write_json(out / "cells" / "f0.10_real_s2" / "metrics.json", {})
    (out / "cells" / "f1.00_real_s0" / "checkpoints").mkdir(parents=True)
    (out / "diffusion" / "f0.20" / "structure" / "model").mkdir(parents=True)
    (out / "diffusion" / "f0.20" / "image" / "checkpoints").mkdir(parents=True)
    rows = {r["cell"]: r for r in grid_status(plan, out, results)}
    assert len(rows) == 20
    assert [rows[f"f0.10_real_s{s}"]["state"] for s in (0, 1, 2)] == [
        "committed",
        "committed elsewhere",
        "finished",
    ]
    assert (
        rows["f1.00_real_s0"]["state"] == "started" and rows["f1.00_real_s1"]["state"] == "to run"
    )
    assert rows["f0.20_real+syn_s0"]["pairs"] == "models: image (started)"
    assert (
        rows["f0.50_real+syn_s0"]["pairs"] == "models: structure, image"
        and "pairs" not in rows["f0.50_real_s0"]
    )
    for source in ("subset", "copypaste"):  # real labels: the image model alone
        real_labels = _plan(overrides=[f"synthesis.structures={source}"])
        rows = {r["cell"]: r for r in grid_status(real_labels, out, results)}
        assert rows["f0.50_real+syn_s0"]["pairs"] == "models: image"

    config = ROOT / "configs" / "kumar-grid.yaml"
    assert (
        main(
            [
                "experiment",
                "--config",
                str(config),
                "--out",
                str(out),
                "--results",
                str(results),
                "--status",
            ]
        )
        == 0
    )
    assert (
        "1 committed, 1 committed elsewhere, 1 finished, 1 started, 16 to run (of 20 cells)"
        in capsys.readouterr().out
    )
    assert not (out / "config").exists()  # nothing written
