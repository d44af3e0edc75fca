"""`nudiff experiment` (and `nudiff run`, the main job): run a grid, its status, its report."""

from __future__ import annotations

import argparse
from pathlib import Path

import nudiff.experiment
from nudiff.experiment.grid import cells_of, find_cells, load_plan
from nudiff.experiment.store import (
    committed_plan,
    grid_status,
    precision_note,
    seeds_note,
    status_markdown,
)
from nudiff.utils import NudiffError, set_threads

THREADS_HELP = "torch CPU threads (default: all cores); use 1 when other jobs share the cores"

EXAMPLES = """\
examples:
  nudiff experiment --config configs/demo.yaml --out runs/demo
  nudiff experiment --config configs/cpu-grid.yaml --out runs/grid --test my_test_folder
  nudiff experiment --config configs/kumar-grid.yaml --out runs/kumar \
--results benchmarks/results/kumar-grid   (resumable across sessions)
  nudiff experiment --config configs/kumar-grid.yaml --out runs/k-r90 \
--set segment.train.real_ratio=0.9 --set experiment.arms=[real+syn]
  nudiff experiment --config configs/kumar-grid.yaml --out runs/kumar \
--results benchmarks/results/kumar-grid --status
  nudiff experiment report --out runs/kumar --results benchmarks/results/kumar-grid   \
(its config.yaml)
another recipe paired with the same real cells (taken, not trained again):
  nudiff experiment --config configs/verdict-kumar.yaml --out runs/v2 --results \
benchmarks/results/v2 --reuse benchmarks/results/verdict-kumar --set synthesis.filter.keep_top=null
on a cluster (docs/cluster.md): --models-only once, then one job per line of --list-cells:
  nudiff experiment --config configs/kumar-grid.yaml --list-cells
  nudiff experiment --config configs/kumar-grid.yaml --out /shared/run --results /shared/results \
--cell f0.10_real_s0
"""


def register(sub) -> None:
    p = sub.add_parser(
        "experiment",
        help="the augmentation grid: fractions x {real, real+syn, ...} x seeds, with a report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=nudiff.experiment.__doc__,
        epilog=EXAMPLES,
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["report"],
        default=None,
        metavar="report",
        help="report: rebuild the report of --out from its cells and those committed in "
        "--results, and copy it (table, chart, mosaics, CSV, timings) into --results",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="the experiment config (required; with report: default RESULTS/config.yaml, "
        "the configuration the committed cells ran)",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="the run folder (required but with --list-cells)"
    )
    p.add_argument(
        "--test",
        type=Path,
        default=None,
        help="test folder with images/ and labels/ (default: the validation images)",
    )
    p.add_argument(
        "--data", type=Path, nargs="+", default=None, help="override experiment.data folders"
    )
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        help="keep every finished cell's per-image metrics in RESULTS/cells/ (commit "
        "them) and take cells already there instead of recomputing them",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set segment.train.real_ratio=0.9 (repeatable)",
    )
    p.add_argument(
        "--reuse",
        action="append",
        default=None,
        type=Path,
        metavar="RESULTS",
        help="another results folder: its cells committed under this configuration (same "
        "fingerprint, e.g. the real cells several recipes share) are copied into --results "
        "first instead of being trained again (repeatable)",
    )
    _add_grid_only_options(p)
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.set_defaults(func=_cmd_experiment)
    _register_run(sub)


def _add_grid_only_options(p) -> None:
    """The options that run, or print, only part of the grid."""
    p.add_argument(
        "--models-only",
        action="store_true",
        help="only train (or resume) the diffusion models the unfinished cells need, then "
        "stop; run it with --threads 1 beside a run of the cells that need no pairs "
        "(e.g. --set experiment.arms=[real]), then run the whole grid",
    )
    p.add_argument(
        "--status",
        action="store_true",
        help="only print where each cell stands (committed in --results, finished or "
        "started in --out, to run) and what its pairs still need; runs and writes nothing",
    )
    p.add_argument(
        "--list-cells",
        action="store_true",
        help="only print the grid's cell names, one per line (a scheduler's job list)",
    )
    p.add_argument(
        "--cell",
        action="append",
        default=None,
        metavar="NAME",
        help="run only this cell of the grid (repeatable), e.g. one job of a SLURM array "
        "sharing --out and --results; it trains no diffusion model: a cell whose pairs "
        "need one is refused until --models-only has finished it; no report is written",
    )


def _register_run(sub) -> None:
    r = sub.add_parser(
        "run",
        help="the main job: prepare data, run the experiment in CONFIG, write the report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The main job of `make run`: same as `nudiff experiment` (data preparation "
        "is its first step).",
        epilog="example:\n  nudiff run --config configs/demo.yaml --data "
        "../shared/datasets/monuseg/train "
        "../shared/datasets/monuseg/train-recovered --out runs/demo",
    )
    r.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    r.add_argument("--out", type=Path, default=Path("runs/demo"))
    r.add_argument("--test", type=Path, default=None)
    r.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=None,
        help="paired folders, or one folder holding train/ and train-recovered/",
    )
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set 'experiment.seeds=[0, 1, 2]' (repeatable)",
    )
    r.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    r.set_defaults(func=_cmd_experiment)


def _cmd_experiment(args) -> None:
    set_threads(args.threads)
    report = getattr(args, "action", None) == "report"
    if args.config is None and not (report and args.results is not None):
        raise NudiffError("nudiff experiment: --config is required")
    plan = (
        committed_plan(args.results, args.set)
        if args.config is None
        else load_plan(args.config, getattr(args, "set", None))
    )
    if getattr(args, "list_cells", False):
        print("\n".join(c.name for c in cells_of(plan.experiment)))
        return
    if args.out is None:
        raise NudiffError("nudiff experiment: --out is required (the run folder)")
    if report:
        if args.results is None:
            raise NudiffError(
                "nudiff experiment report: --results is required (where the report goes)"
            )
        from nudiff.experiment.report import publish_report

        for path in publish_report(plan, args.out, args.results):
            print(path.read_text())
        return
    if getattr(args, "status", False):
        print(
            status_markdown(grid_status(plan, args.out, args.results))
            + precision_note(plan)
            + seeds_note(args.results, plan),
            end="",
        )
        return
    cells = find_cells(plan.experiment, args.cell) if getattr(args, "cell", None) else None
    if cells is not None and args.models_only:
        raise NudiffError("--cell and --models-only: run the models first, then the cells")
    data = args.data
    if (
        data
        and len(data) == 1
        and (data[0] / "train").is_dir()
        and not (data[0] / "images").is_dir()
    ):
        data = sorted(p for p in data[0].iterdir() if (p / "images").is_dir())
        data.sort(key=lambda p: p.name != "train")  # exact labels first: validation comes from it
    from nudiff.experiment.loop import run_experiment

    run_experiment(
        plan,
        args.out,
        args.test,
        data,
        getattr(args, "results", None),
        models_only=getattr(args, "models_only", False),
        cells=cells,
        reuse=getattr(args, "reuse", None),
    )
