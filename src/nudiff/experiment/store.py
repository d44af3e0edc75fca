"""The results folder (``--results``): committed cells, and where each cell of a grid stands.

Every finished cell's per-image metrics are committed to ``RESULTS/cells/<cell>.json`` with the
fingerprint of the configuration that computed them. A later run (another session, another
machine, a scheduler's ``--cell`` job) takes a cell from there instead of recomputing it, and
refuses one computed with another configuration. Committing that folder is how a grid longer
than a session is run. Beside the cells, ``RESULTS/config.yaml`` keeps the resolved
configuration they ran (:func:`record_config`), so a reader knows which recipe made the numbers.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from nudiff import utils
from nudiff.config import save_config
from nudiff.experiment.fingerprint import cell_fingerprint, matches, stamp
from nudiff.experiment.grid import ARMS, Cell, Plan, cells_of, load_plan, model_kinds
from nudiff.layout import ResultsLayout, RunLayout, fraction_tag, log
from nudiff.synthesis import REAL_STRUCTURES, check_same_config
from nudiff.utils import NudiffError, read_json, write_json

STATES = ("committed", "committed elsewhere", "finished", "started", "to run", "to run elsewhere")

# The precision rule. A CPU without native bf16 trains a bf16 configuration in fp32
# (utils.resolve_precision); its numbers differ from a bf16 cell's about as a thread count's do.
# So that no contrast mixes the two, every committed cell of one seed (all arms, all fractions)
# ran in one precision: the first cell committed for a seed sets it, a machine of the other kind
# adds cells of the other seeds only, and the report pairs cells within a seed only.
# Records from before they held ``segment_precision`` ran the configured precision.


def this_precision(plan: Plan) -> str:
    """The precision this machine trains the plan's segmenters in (no warning printed)."""
    return utils.resolve_precision(plan.segment.train.precision, warn=False)


def precision_name(precision: str) -> str:
    """How a precision reads in messages: ``"no"`` (no mixed precision) is fp32."""
    return "fp32" if precision == "no" else precision


def seed_precisions(results_dir: Path | None, plan: Plan) -> dict[int, str]:
    """The precision each seed's committed cells ran in; an error naming the folder when a
    seed's cells ran in two (a folder that broke the rule)."""
    out: dict[int, str] = {}
    if results_dir is None:
        return out
    for r in committed_records(results_dir):
        if "seed" not in r:  # not a cell record of commit_cell's
            continue
        ran = r.get("segment_precision") or plan.segment.train.precision
        if out.setdefault(int(r["seed"]), ran) != ran:
            raise NudiffError(
                f"{results_dir}: seed {r['seed']}'s committed cells ran in two precisions "
                f"({out[int(r['seed'])]} and {ran}, {r['cell']}); a seed's cells must share one"
            )
    return out


def precision_refusal(
    results_dir: Path | None, plan: Plan, cell: Cell, seeds: dict[int, str] | None = None
) -> str | None:
    """Why this machine may not add ``cell`` to ``results_dir`` (``None``: it may): its seed's
    committed cells ran in another precision. ``seeds``: :func:`seed_precisions`, if at hand."""
    seeds = seed_precisions(results_dir, plan) if seeds is None else seeds
    ran, here = seeds.get(cell.seed), this_precision(plan)
    if ran is None or ran == here:
        return None
    ran, here = precision_name(ran), precision_name(here)
    return (
        f"seed {cell.seed}'s committed cells ran in {ran} and this machine trains in "
        f"{here}: left to a machine that trains in {ran} "
        "(docs/reproducing.md, the precision rule)"
    )


def is_committed(results_dir: Path, plan: Plan, cell: Cell) -> bool:
    """Whether ``cell`` is committed in ``results_dir`` with this configuration's fingerprint.

    A committed cell of another configuration is an error (a run would otherwise report one
    configuration's numbers while the results folder holds another's), whether or not a run
    folder has finished the cell too."""
    path = ResultsLayout(Path(results_dir)).cell(cell)
    if not path.exists():
        return False
    saved = read_json(path)
    if not matches(saved, plan, cell):
        raise NudiffError(
            f"{path}: computed with another configuration (fingerprint "
            f"{saved.get('fingerprint')} != {cell_fingerprint(plan, cell)}); "
            "move it away or use another --results folder"
        )
    return True


def import_committed(results_dir: Path, cell: Cell, run: RunLayout) -> None:
    """Copy a committed cell's metrics into the run folder, so that its report counts the cell;
    a cell the run has finished itself keeps its own."""
    if run.metrics(cell).exists():
        return
    path = ResultsLayout(Path(results_dir)).cell(cell)
    write_json(run.metrics(cell), read_json(path))
    log(f"cell {cell.name}: taken from {path}")


def cell_done(results_dir: Path | None, plan: Plan, cell: Cell, run: RunLayout) -> bool:
    """Whether a run skips ``cell``: without ``results_dir``, finished in the run folder; with
    it, committed there (:func:`is_committed`). A cell finished in the run but not yet committed
    (a run stopped between the two writes) is not done, so the loop (which skips its training)
    commits it."""
    return (
        run.metrics(cell).exists()
        if results_dir is None
        else is_committed(results_dir, plan, cell)
    )


def commit_cell(results_dir: Path, plan: Plan, cell: Cell, run: RunLayout, timings: dict) -> None:
    """Write the run's finished cell to ``results_dir`` with its fingerprint, steps, minutes
    and the precision its segmenter ran in, and the plan to ``config.yaml``
    (:func:`record_config`)."""
    if why := precision_refusal(results_dir, plan, cell):
        raise NudiffError(f"cell {cell.name} not committed to {results_dir}: {why}")
    report = read_json(run.metrics(cell))
    minutes = {
        k.rsplit("/", 1)[-1]: round(v / 60, 2)
        for k, v in timings.items()
        if k.startswith(f"cells/{cell.name}/")
    }
    write_json(
        ResultsLayout(Path(results_dir)).cell(cell),
        {
            "cell": cell.name,
            "fraction": cell.fraction,
            "arm": cell.arm,
            "seed": cell.seed,
            "segment_steps": plan.segment.train.steps,
            "minutes": minutes,
            # what ran: a CPU without native bf16 trains a bf16 configuration in fp32
            "segment_precision": this_precision(plan),
            "machine": utils.machine(),
            "threads": _threads(),
            **stamp(plan, cell),
            **report,
        },
    )
    record_config(results_dir, plan, cell, run)


def reuse_cells(
    results_dir: Path, plan: Plan, cells: list[Cell], sources: list[Path], run: RunLayout
) -> list[Cell]:
    """Commit to ``results_dir`` the cells of ``cells`` that a results folder of ``sources``
    holds under this configuration's fingerprint (``--reuse``: the ``real`` cells every recipe
    of a verdict is paired with, say), their records copied as they are, and record
    ``config.yaml`` (:func:`record_config`). A cell already in ``results_dir`` is left; one a
    source holds under another configuration, or in another precision than its seed's cells
    here (the precision rule), is not taken (one log line). Returns the cells taken."""
    taken, seeds = [], seed_precisions(results_dir, plan)  # kept up to date as cells come in
    for cell in cells:
        dest = ResultsLayout(Path(results_dir)).cell(cell)
        if dest.exists():
            continue
        for source in sources:
            path = ResultsLayout(Path(source)).cell(cell)
            if not path.is_file():
                continue
            saved = read_json(path)
            ran = saved.get("segment_precision") or plan.segment.train.precision
            here = seeds.get(cell.seed, ran)
            if not matches(saved, plan, cell):
                log(f"cell {cell.name}: not reused from {path}: another configuration's")
                continue
            if here != ran:
                log(
                    f"cell {cell.name}: not reused from {path}: it ran in "
                    f"{precision_name(ran)}, this folder's seed {cell.seed} in "
                    f"{precision_name(here)}"
                )
                continue
            write_json(dest, saved)
            seeds[cell.seed] = ran
            record_config(results_dir, plan, cell, run)
            log(f"cell {cell.name}: reused from {path} (same fingerprint)")
            taken.append(cell)
            break
    return taken


def _threads() -> int:
    import torch  # the store is read by --status, which needs no torch; a commit follows training

    return torch.get_num_threads()


def record_config(results_dir: Path, plan: Plan, cell: Cell, run: RunLayout) -> None:
    """Keep the resolved configuration (the whole plan, ``--set`` overrides applied) that
    ``cell`` was committed under as ``results_dir/config.yaml``, written atomically.

    The rule: written only when the folder has none, so it is the configuration of the folder's
    first committed cell, and never silently replaced. A later cell whose numbers that file
    does not describe (its fingerprint under it differs: another segmenter setting, say) leaves
    it as it is and prints one warning line naming it and this run's configuration
    (``OUT/config/``). A run that differs only in what decides no cell's numbers (which
    fractions, arms or seeds it runs; speed options) prints nothing: the cells' own
    fingerprints guard the numbers, ``config.yaml`` tells a reader which recipe made them."""
    path = ResultsLayout(Path(results_dir)).config
    if not path.exists():
        save_config(plan, path)
        return
    try:
        same = cell_fingerprint(plan, cell) == cell_fingerprint(load_plan(path), cell)
    except NudiffError as e:  # e.g. an option renamed since it was written
        same, why = False, f" (unreadable: {e})"
    else:
        why = ""
    if not same:
        log(
            f"warning: {path}{why} is not the configuration {cell.name} was committed under "
            f"({run.root / 'config'}); kept it: a results folder should hold one configuration's "
            "cells"
        )


def committed_plan(results_dir: Path, overrides: list[str] | None = None) -> Plan:
    """The plan a results folder's cells ran: its ``config.yaml`` (with ``--set``-style
    ``overrides``); an error when the folder has none."""
    path = ResultsLayout(Path(results_dir)).config
    if not path.is_file():
        raise NudiffError(
            f"{path}: not found (the configuration {results_dir}'s cells ran); give --config"
        )
    return load_plan(path, overrides)


def committed_records(results_dir: Path, fraction: float | None = None) -> list[dict]:
    """The committed cells of a results folder (their JSON records), by name; ``fraction``:
    only that fraction's."""
    pattern = "*.json" if fraction is None else f"{fraction_tag(fraction)}_*.json"
    return [read_json(p) for p in sorted(ResultsLayout(Path(results_dir)).cells.glob(pattern))]


def committed_cells(results_dir: Path) -> list[Cell]:
    """The cells committed in a results folder, by name."""
    return [Cell(r["fraction"], r["arm"], r["seed"]) for r in committed_records(results_dir)]


def committed_rows(results_dir: Path, fraction: float | None = None) -> list[dict]:
    """One row per (committed cell, test image): fraction, arm, seed, image and the metrics,
    as :func:`nudiff.experiment.stats.paired_gains` takes them."""
    return [row for r in committed_records(results_dir, fraction) for row in record_rows(r)]


def record_rows(record: dict) -> list[dict]:
    """The per-image rows of one committed cell's record."""
    return [
        {
            "fraction": record["fraction"],
            "arm": record["arm"],
            "seed": record["seed"],
            "image": image,
        }
        | m
        for image, m in record["per_image"].items()
    ]


def cell_state(
    plan: Plan,
    cell: Cell,
    run: RunLayout,
    results_dir: Path | None = None,
    seeds: dict[int, str] | None = None,
) -> str:
    """One of :data:`STATES`: ``committed`` (in ``results_dir`` with this configuration's
    fingerprint), ``committed elsewhere`` (there with another one, which a run refuses),
    ``finished`` (done in the run folder but not in ``results_dir``), ``started`` (a segmenter
    checkpoint in the run folder), ``to run``, or ``to run elsewhere`` (its seed's committed
    cells ran in another precision than this machine's: :func:`precision_refusal`)."""
    saved = ResultsLayout(Path(results_dir)).cell(cell) if results_dir else None
    if saved is not None and saved.is_file():
        same = matches(read_json(saved), plan, cell)
        return "committed" if same else "committed elsewhere"
    if run.metrics(cell).exists():
        return "finished"
    if (run.cell(cell) / "checkpoints").exists():
        return "started"
    return "to run elsewhere" if precision_refusal(results_dir, plan, cell, seeds) else "to run"


def grid_status(
    plan: Plan, out: Path, results_dir: Path | None = None, cells: list[Cell] | None = None
) -> list[dict]:
    """Where each cell of the grid (or ``cells``) stands, without running or writing anything:
    one dict per cell with ``cell``, ``state`` (:func:`cell_state`) and, for arms that need
    pairs, ``pairs`` (what the fraction's synthetic set still needs:
    :func:`pairs_state`)."""
    run = RunLayout(Path(out))
    seeds, rows = seed_precisions(results_dir, plan), []
    for cell in cells_of(plan.experiment) if cells is None else cells:
        row = {"cell": cell.name, "state": cell_state(plan, cell, run, results_dir, seeds)}
        if cell.needs.pairs:
            row["pairs"] = pairs_state(plan, run, cell.fraction)
        rows.append(row)
    return rows


def status_markdown(rows: list[dict]) -> str:
    counts = {state: n for state in STATES if (n := sum(r["state"] == state for r in rows))}
    lines = ["| cell | state | pairs |", "|---|---|---|"]
    lines += [f"| {r['cell']} | {r['state']} | {r.get('pairs', '')} |" for r in rows]
    lines += [
        "",
        ", ".join(f"{n} {state}" for state, n in counts.items()) + f" (of {len(rows)} cells)",
    ]
    return "\n".join(lines) + "\n"


def seeds_note(results_dir: Path | None, plan: Plan) -> str:
    """A line for ``--status``: the precision each committed seed ran in and this machine's."""
    seeds = seed_precisions(results_dir, plan)
    if not seeds:
        return ""
    ran = ", ".join(f"s{seed} {precision_name(p)}" for seed, p in sorted(seeds.items()))
    here = precision_name(this_precision(plan))
    return (
        f"Committed seeds ran in: {ran}; this machine trains in {here}, so it adds cells of "
        f"the seeds in {here} and of new seeds only.\n"
    )


def precision_note(plan: Plan) -> str:
    """A line for ``--status`` when this machine would not run the configured bf16 (a CPU that
    only emulates it trains in fp32: other numbers than committed bf16 cells), else ''."""
    trained = [("segmenter", plan.segment.train.precision)]
    if any(ARMS[arm].pairs for arm in plan.experiment.arms):
        trained.append(("image model", plan.image.train.precision))
        if plan.synthesis.structures not in REAL_STRUCTURES:
            trained.append(("structure model", plan.structure.train.precision))
    asked = [name for name, precision in trained if precision == "bf16"]
    if not asked or utils.native_bf16(utils.default_device()):
        return ""
    return (
        f"Here, the bf16 {', '.join(asked)} would train in fp32: this "
        f"{utils.default_device()} has no native bf16 (AVX512-BF16/AMX). Committed cells "
        "record the precision their segmenter ran in (segment_precision).\n"
    )


def missing_models(plan: Plan, run: RunLayout, fraction: float) -> list[str]:
    """The fraction's diffusion models not finished yet (no ``model/`` folder)."""
    return [kind for kind in model_kinds(plan) if not run.model(fraction, kind).exists()]


def synthetic_done(plan: Plan, run: RunLayout, fraction: float) -> bool:
    """Whether the fraction's synthetic folder holds its ``n_synthetic`` pairs, made with this
    plan's synthesis section (another one is an error naming the keys that differ)."""
    syn_cfg = replace(plan.synthesis, n=plan.experiment.n_synthetic)
    manifest = check_same_config(
        run.synthetic(fraction) / "manifest.json",
        syn_cfg,
        any_segmenter=True,
        models=(plan.structure.sample, plan.image.sample),
    )  # as they are trained
    return manifest is not None and manifest["n_accepted"] >= syn_cfg.n


def pairs_state(plan: Plan, run: RunLayout, fraction: float) -> str:
    """What the fraction's pairs still need: ``done`` / ``synthesis`` / ``models: ...`` /
    ``another synthesis configuration``."""
    try:
        if synthetic_done(plan, run, fraction):
            return "done"
    except NudiffError:
        return "another synthesis configuration"
    missing = missing_models(plan, run, fraction)
    if not missing:
        return "synthesis"
    started = [k for k in missing if (run.model_run(fraction, k) / "checkpoints").exists()]
    return "models: " + ", ".join(k + (" (started)" if k in started else "") for k in missing)
