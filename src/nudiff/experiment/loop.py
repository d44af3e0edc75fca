"""The loop: fraction by fraction, its synthetic pairs, then its cells; per cell, train a
segmenter, predict the test images, score them.

Every step is guarded by its own outputs (a prepared ``data/`` folder, a model folder, a
manifest, a cell's ``metrics.json``, a committed cell in ``--results``), so a killed run resumes
where it stopped, and by a lock of the run folder, so several processes can share it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from nudiff.config import save_config
from nudiff.data.dataset import load_folder
from nudiff.data.prepare import load_subset, load_val, prepare, subset_filename
from nudiff.experiment.grid import (
    REAL_CELL,
    SECTIONS,
    Cell,
    Plan,
    cells_of,
    check_windows,
    reference_cell,
)
from nudiff.experiment.report import collect_results, write_experiment_report
from nudiff.experiment.store import (
    cell_done,
    commit_cell,
    import_committed,
    is_committed,
    missing_models,
    precision_refusal,
    reuse_cells,
    seed_precisions,
    synthetic_done,
)
from nudiff.experiment.training_data import Timed, make_pairs, train_models, training_data
from nudiff.layout import ResultsLayout, RunLayout, fraction_tag, log
from nudiff.metrics import evaluate_folders
from nudiff.segment.predict import predict_folder
from nudiff.segment.train import train_segmenter
from nudiff.utils import NudiffError, read_json, seed_everything, write_json


def timed_step(path: Path, timings: dict, key: str, fn: Callable[[], object]) -> None:
    """Run one step of a run and record its wall time under ``key`` in ``timings`` and the
    JSON file ``path`` (merged with the file: another process, ``--models-only``, may share the
    run folder). The record never decides whether a step runs: every step is guarded by its
    own outputs (a model folder, a cell's ``metrics.json``), so a step whose outputs are gone
    while its time is still on file (a filter segmenter whose metrics came from ``--results``)
    is run again, and its time replaced."""
    t = time.time()
    fn()
    timings[key] = round(time.time() - t, 1)
    if path.exists():
        timings.update({k: v for k, v in read_json(path).items() if k not in timings})
    write_json(path, timings)


@dataclass(frozen=True)
class RunContext:
    """What every cell of one run shares.

    data_dir: the prepared data folder. test_images, test_labels: what the cells predict and
    are scored on. val: model selection patches when a separate test folder is given (else
    the labeled subset's own are used). timed: ``timed(key, fn)`` runs and times a step.
    """

    plan: Plan
    run: RunLayout
    data_dir: Path
    test_images: Path
    test_labels: Path
    val: list | None
    timed: Timed


def run_experiment(
    plan: Plan,
    out: Path,
    test_dir: Path | None = None,
    data_dirs: list[Path] | None = None,
    results_dir: Path | None = None,
    models_only: bool = False,
    cells: list[Cell] | None = None,
    reuse: list[Path] | None = None,
) -> Path | None:
    """Run (or resume) every cell; returns the path of results.csv.

    results_dir: take committed cells from there and commit finished ones (see
    :mod:`nudiff.experiment.store`). models_only: train (or resume) the diffusion models of
    every fraction whose unfinished cells need pairs, then stop (returns None) -- a second
    process can meanwhile run the cells that need none. cells: run only these cells of the
    grid (``--cell``; returns None, the report is built apart); a cell whose pairs need
    diffusion models that ``--models-only`` has not finished is refused. reuse: results
    folders whose cells of this configuration are committed to ``results_dir`` first
    (:func:`~nudiff.experiment.store.reuse_cells`)."""
    cfg = plan.experiment
    check_windows(plan, "the experiment's config")  # before anything is written
    if reuse and results_dir is None:
        raise NudiffError("--reuse needs --results (the folder the cells are committed to)")
    run = RunLayout(Path(out))
    run.root.mkdir(parents=True, exist_ok=True)
    for name in SECTIONS:
        save_config(getattr(plan, name), run.config(name))
    timings = read_json(run.timings) if run.timings.exists() else {}
    timed = functools.partial(timed_step, run.timings, timings)
    ctx = _context(plan, run, [Path(d) for d in (data_dirs or cfg.data)], test_dir, timed)
    grid = cells_of(cfg) if cells is None else cells
    if reuse:
        reuse_cells(Path(results_dir), plan, grid, [Path(r) for r in reuse], run)

    def unfinished(some: list[Cell]) -> list[Cell]:
        """The cells to run here: not committed, and of a seed this machine may add to
        (the precision rule, :mod:`nudiff.experiment.store`)."""
        done = [c for c in some if cell_done(results_dir, plan, c, run)]
        if results_dir is not None:  # the report counts the committed cells too
            for c in done:
                import_committed(results_dir, c, run)
        seeds, todo = seed_precisions(results_dir, plan), []
        for c in (c for c in some if c not in done):
            if (why := precision_refusal(results_dir, plan, c, seeds)) is None:
                todo.append(c)
            elif cells is not None:  # asked for by name
                raise NudiffError(f"cell {c.name}: {why}")
            else:
                log(f"cell {c.name} skipped: {why}")
        return todo

    if models_only:
        for fraction in sorted({c.fraction for c in unfinished(grid) if c.needs.pairs}):
            train_models(plan, run, ctx.data_dir, fraction, timed)
        log("diffusion models done (--models-only)")
        return None
    if cells is not None:
        _refuse_without_models(plan, run, unfinished(grid))
    log(f"{len(grid)} cells: " + ", ".join(c.name for c in grid))
    # Fraction by fraction (its diffusion models, then its cells), so that a run stopped
    # part-way leaves whole fractions behind.
    for fraction in sorted({c.fraction for c in grid}):
        todo = unfinished([c for c in grid if c.fraction == fraction])
        if any(c.needs.pairs for c in todo):
            _pairs_for(ctx, fraction, results_dir, timings)
        for cell in todo:
            run_cell(ctx, cell)
            _commit(ctx, cell, results_dir, timings)
    if cells is not None:
        log("done; `nudiff experiment report` builds the report from the committed cells")
        return None
    rows = collect_results(run.root, grid)
    write_experiment_report(run.root, rows, cfg)
    log(f"done: {run.results_csv} and {run.report / 'index.html'}")
    return run.results_csv


def _context(
    plan: Plan, run: RunLayout, folders: list[Path], test_dir: Path | None, timed: Timed
) -> RunContext:
    """Prepare the data (once; the subsets of fractions it lacks are drawn) and say what the
    cells are tested and selected on."""
    cfg = plan.experiment
    data_cfg = replace(plan.data, fractions=sorted(set(cfg.fractions)), seed=cfg.subset_seed)
    with run.lock("data"):
        if not (run.data / "manifest.json").exists():
            log(f"preparing data from {', '.join(map(str, folders))}")
            timed("data_prepare", lambda: prepare(folders, run.data, data_cfg))
        missing = [
            f
            for f in data_cfg.fractions
            if not (run.data / "subsets" / subset_filename(f, cfg.subset_seed)).is_file()
        ]
        if missing:  # a data folder prepared for other fractions: draw these (the others are kept)
            log(f"drawing the subsets of fractions {missing} in {run.data}")
            prepare(folders, run.data, data_cfg, progress=False)
    # read once now, so that an unreadable test folder fails before any training
    load_folder(test_dir, progress=False) if test_dir else load_val(run.data)
    # Model selection happens on the validation images only when they are not the test
    # images (--test given); otherwise on the labeled subset's patches (see run_cell).
    return RunContext(
        plan,
        run,
        run.data,
        test_images=Path(test_dir) / "images" if test_dir else run.data / "val" / "images",
        test_labels=Path(test_dir) if test_dir else run.data / "val",
        val=(load_val(run.data) or None) if test_dir and (run.data / "val").is_dir() else None,
        timed=timed,
    )  # none held out: the subset's


def _refuse_without_models(plan: Plan, run: RunLayout, cells: list[Cell]) -> None:
    """``--cell`` trains no diffusion model (a scheduler's jobs would each train it): a cell
    whose fraction still needs one is an error."""
    for cell in cells:
        if not cell.needs.pairs or synthetic_done(plan, run, cell.fraction):
            continue
        if missing := missing_models(plan, run, cell.fraction):
            raise NudiffError(
                f"cell {cell.name} needs the {fraction_tag(cell.fraction)} diffusion models "
                f"({', '.join(missing)}), not finished in {run.root}: run `nudiff experiment "
                "--models-only` with this --config and --out first"
            )


def _pairs_for(ctx: RunContext, fraction: float, results_dir: Path | None, timings: dict) -> None:
    """The fraction's synthetic pairs, unless they are all there (made elsewhere too: a GPU).
    With ``synthesis.filter.segmenter: real``, the filter's reference cell is trained first;
    its committed metrics, if any, stay its numbers (a retraining scores apart). A filter that
    only scores (no ``keep_top``, ``min_fidelity`` or ``max_unlabeled_rate``) does not retrain a
    committed reference cell whose model is not in the run folder (``--reuse``, a new --out):
    the pairs are made unscored, which changes no pair."""
    plan, run = ctx.plan, ctx.run
    with run.lock(f"{fraction_tag(fraction)}_pairs"):
        if synthetic_done(plan, run, fraction):
            return
        segmenter = None
        if plan.synthesis.filter.segmenter == REAL_CELL:
            ref = reference_cell(plan.experiment, fraction)
            committed = results_dir is not None and is_committed(results_dir, plan, ref)
            if committed:
                import_committed(results_dir, ref, run)  # its numbers stay the committed ones
            if (
                committed
                and not plan.synthesis.filter.selects_by_segmenter
                and not (run.cell(ref) / "model").is_dir()
            ):
                log(
                    f"the pairs are not scored: the filter keeps every pair, and {ref.name} is "
                    f"committed without its model here (copy its cells/{ref.name}/ into "
                    f"{run.root} to score them)"
                )
            else:
                log(f"the pair filter scores label fidelity with {ref.name}'s segmenter")
                run_cell(ctx, ref, need_model=True)
                _commit(ctx, ref, results_dir, timings)
                segmenter = run.cell(ref)
        make_pairs(plan, run, ctx.data_dir, fraction, ctx.timed, segmenter)


def _commit(ctx: RunContext, cell: Cell, results_dir: Path | None, timings: dict) -> None:
    # not over a record already there: another process sharing --results committed it
    if results_dir is not None and not ResultsLayout(Path(results_dir)).cell(cell).exists():
        commit_cell(results_dir, ctx.plan, cell, ctx.run, timings)


def run_cell(ctx: RunContext, cell: Cell, need_model: bool = False) -> None:
    """Train, predict and score one cell; a finished cell is skipped (with ``need_model``, only
    when its model is here too: metrics taken from --results carry no model, so it is retrained,
    identically for its seed at the same thread count). A retrained cell keeps the metrics it
    has and writes its new scores to ``metrics_retrained.json``: a report built from the run
    folder shows the committed numbers."""
    plan, cell_dir, metrics_path = ctx.plan, ctx.run.cell(cell), ctx.run.metrics(cell)
    with ctx.run.lock(cell.name):
        if metrics_path.exists() and (not need_model or (cell_dir / "model").is_dir()):
            return
        retraining = metrics_path.exists()
        real = load_subset(ctx.data_dir, cell.fraction, plan.experiment.subset_seed)
        # Model selection and post-processing thresholds need labeled images the score is not
        # computed on: the validation images when a separate --test is given, else (test = the
        # validation images) a fixed sample of the labeled subset's own patches.
        selection = (
            ctx.val
            if ctx.val is not None
            else real[:: max(1, len(real) // plan.experiment.selection_patches)]
        )
        real, synthetic = training_data(plan, ctx.run, cell, real)
        seg_cfg = replace(plan.segment, train=replace(plan.segment.train, seed=cell.seed))
        seed_everything(cell.seed)
        log(f"cell {cell.name}: {len(real)} real-role + {len(synthetic or [])} synthetic patches")
        ctx.timed(
            f"cells/{cell.name}/train",
            lambda: train_segmenter(
                seg_cfg,
                cell_dir,
                real,
                synthetic,
                selection,
                resume=(cell_dir / "checkpoints").exists(),
            ),
        )
        ctx.timed(
            f"cells/{cell.name}/predict",
            lambda: predict_folder(cell_dir, ctx.test_images, cell_dir / "pred"),
        )
        report = evaluate_folders(cell_dir / "pred", ctx.test_labels)
        write_json(cell_dir / ("metrics_retrained.json" if retraining else "metrics.json"), report)
    m = report["mean"]
    log(
        f"cell {cell.name}{' (retrained)' if retraining else ''}: "
        f"Dice {m['dice']:.4f} AJI {m['aji']:.4f} PQ {m['pq']:.4f}"
    )
