"""The augmentation experiment: labeled fraction x training data x seed -> metrics.

For every labeled fraction that needs synthetic pairs, an image model (and, when the labels
are sampled, a structure model) is trained on that fraction's own subset (shared by all
seeds), and ``n_synthetic`` pairs are synthesized. Then every cell trains a segmenter with **the same
number of optimizer steps**, predicts the test images and is scored per image.

Arms (what the segmenter trains on):

- ``real``:      the labeled subset only;
- ``real+syn``:  the subset plus the synthetic pairs (``segment.train.real_ratio`` of each
                 batch drawn from the real patches);
- ``real+copypaste``: the subset plus ``n_synthetic`` copy-paste patches (real nuclei of the
                 subset pasted at free positions of other subset patches, exact labels; see
                 ``nudiff.data.copypaste``), mixed like ``real+syn``: the simple baseline
                 diffusion pairs must beat;
- ``real+copypaste+syn``: the subset plus both extra sets (``2 × n_synthetic`` patches, still
                 ``real_ratio`` real per batch). What made sampled-structure pairs pay on
                 Kumar 10 % (+0.012 AJI over ``real``, 3 seeds); with real-label pairs
                 (``synthesis.structures: copypaste``, the configs' recipe) plain ``real+syn``
                 does as well (+0.017), so the shipped configs run that;
- ``real-dup``:  the subset repeated to as many patches as real + synthetic (the reviewer's
                 control; with fixed steps and sampling with replacement it differs from
                 ``real`` only by chance, which makes it a noise floor);
- ``syn-only``:  the synthetic pairs alone, tested on real images.

Layout of ``OUT``: ``data/`` (prepared data), ``diffusion/f0.10/{structure,image,synthetic}``,
``copypaste/f0.10/`` (augmented patches + manifest + mosaic),
``cells/f0.10_real+syn_s0/{model,pred,metrics.json}``, ``results.csv``, ``report/``.
A finished cell (its ``metrics.json`` exists) is skipped, so a killed run resumes; unfinished
trainings resume from their last checkpoint. With ``results_dir`` (CLI ``--results``), every
finished cell's per-image metrics are also written to ``results_dir/cells/<cell>.json`` with a
fingerprint of the configuration that computed them; a later run (another session, a fresh
machine) takes a cell from there instead of recomputing it, and refuses one computed with a
different configuration. Committing that folder is how a grid longer than a session is run.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import io
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from nudiff.config import apply_overrides, from_dict, load_yaml, save_config
from nudiff.data.copypaste import CopyPasteConfig
from nudiff.metrics import METRICS
from nudiff.utils import (
    NudiffError,
    read_json,
    resolve_precision,
    seed_everything,
    set_threads,
    write_json,
    write_text,
)

THREADS_HELP = "torch CPU threads (default: all cores); use 1 when other jobs share the cores"

ARMS = ("real", "real+syn", "real+copypaste", "real+copypaste+syn", "real-dup", "syn-only")
SYNTHETIC_ARMS = ("real+syn", "real+copypaste+syn", "syn-only", "real-dup")
COPYPASTE_ARMS = ("real+copypaste", "real+copypaste+syn")
# synthesis.filter.segmenter: "real" = the fraction's own real cell (see reference_cell)
REAL_CELL = "real"


@dataclass
class ExperimentConfig:
    """The grid (YAML section ``experiment``).

    data: paired folders (the first provides the validation images).
    fractions: labeled fractions of nuclei.
    arms: training-data arms, see the module docstring.
    seeds: segmenter seeds for every cell; ``seeds_by_fraction`` overrides per fraction
        (e.g. {0.1: [0, 1, 2]} to spend the extra seeds where the effect is largest).
    synthetic_fractions: fractions that get diffusion models; arms that need synthetic pairs
        run only there (``None``: all fractions).
    n_synthetic: synthetic pairs per fraction.
    arm_fractions: restricts an arm to some fractions (e.g. {syn-only: [0.1]}).
    arm_seeds: overrides the seeds of an arm (e.g. {syn-only: [0]}), after seeds_by_fraction.
    subset_seed: which subset draw (data.seed) the cells use.
    filter_seed: with ``synthesis.filter.segmenter: real``, the seed of the fraction's ``real``
        cell whose segmenter scores the pairs. Fixed, so a fraction's synthetic set does not
        depend on which seeds a run asks for (that cell is trained first if need be).
    copypaste: settings of the ``real+copypaste`` arm (``nudiff.data.copypaste``).
    paper: which column of NuDiff's Table 1 the report shows beside ours: monuseg | kumar.
    selection_patches: without a separate --test folder, segmenter model selection and
        post-processing tuning use about this many of the labeled subset's own patches
        (the validation images are then the test images and are never used for selection).
    """

    data: list[str] = field(default_factory=lambda: [
        "../shared/datasets/monuseg/train", "../shared/datasets/monuseg/train-recovered"])
    fractions: list[float] = field(default_factory=lambda: [0.1, 1.0])
    arms: list[str] = field(default_factory=lambda: ["real", "real+syn"])
    seeds: list[int] = field(default_factory=lambda: [0])
    seeds_by_fraction: dict[float, list[int]] = field(default_factory=dict)
    synthetic_fractions: list[float] | None = None
    arm_fractions: dict[str, list[float]] = field(default_factory=dict)
    arm_seeds: dict[str, list[int]] = field(default_factory=dict)
    n_synthetic: int = 256
    subset_seed: int = 0
    filter_seed: int = 0
    selection_patches: int = 16
    copypaste: CopyPasteConfig = field(default_factory=CopyPasteConfig)
    paper: str = "monuseg"

    def __post_init__(self) -> None:
        bad = [a for a in [*self.arms, *self.arm_fractions, *self.arm_seeds] if a not in ARMS]
        if bad:
            raise NudiffError(f"experiment.arms: unknown {bad}; choose from {ARMS}")
        if self.paper not in ("monuseg", "kumar"):
            raise NudiffError(f"experiment.paper: {self.paper!r}; choose monuseg or kumar")


@dataclass
class Cell:
    fraction: float
    arm: str
    seed: int

    @property
    def name(self) -> str:
        return f"f{self.fraction:.2f}_{self.arm}_s{self.seed}"


def cells_of(cfg: ExperimentConfig) -> list[Cell]:
    syn_fracs = cfg.fractions if cfg.synthetic_fractions is None else cfg.synthetic_fractions
    cells = []
    for f in cfg.fractions:
        seeds = cfg.seeds_by_fraction.get(f, cfg.seeds)
        for arm in cfg.arms:
            if arm in SYNTHETIC_ARMS and f not in syn_fracs:
                continue
            if arm in cfg.arm_fractions and f not in cfg.arm_fractions[arm]:
                continue
            cells += [Cell(f, arm, s) for s in cfg.arm_seeds.get(arm, seeds)]
    return cells


@dataclass
class Plan:
    """Everything one experiment config file holds."""

    experiment: ExperimentConfig
    data: object
    structure: object
    image: object
    synthesis: object
    segment: object


def load_plan(path: Path, overrides: list[str] | None = None) -> Plan:
    from nudiff.data.prepare import PrepareConfig
    from nudiff.diffusion.config import DiffusionConfig
    from nudiff.segment.config import SegmentConfig
    from nudiff.synthesis import SynthesisConfig

    raw = apply_overrides(load_yaml(path), overrides or [])
    known = {"experiment", "data", "structure", "image", "synthesis", "segment"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise NudiffError(f"{path}: unknown section(s) {unknown}; known: {sorted(known)}")
    sections = {
        "experiment": ExperimentConfig, "data": PrepareConfig, "structure": DiffusionConfig,
        "image": DiffusionConfig, "synthesis": SynthesisConfig, "segment": SegmentConfig,
    }
    plan = Plan(**{k: from_dict(cls, raw.get(k), f"{path}[{k}]") for k, cls in sections.items()})
    plan.structure.model.kind = "structure"
    plan.image.model.kind = "image"
    return plan


def _arrays(samples) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([s.image for s in samples]), np.stack([s.instance_map for s in samples])


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# options added after cells were committed: left out of a cell's fingerprint at these defaults
# (dotted keys reach into subsections)
LATER_OPTIONS = {
    "synthesis": {"structures": "sampled", "pasted_nuclei": 3},
    "structure": {"prediction_type": "epsilon", "zero_terminal_snr": False, "train.max_minutes": None},
    "image": {"prediction_type": "epsilon", "zero_terminal_snr": False, "train.max_minutes": None},
}
# options that change how fast, not what (beyond float rounding): never in a fingerprint
SPEED_OPTIONS = ("train.num_workers", "train.compile", "model.flash_attention")


def _pop_dotted(section: dict, key: str, when=lambda value: True) -> None:
    *path, last = key.split(".")
    for part in path:
        section = section.get(part, {})
    if last in section and when(section[last]):
        section.pop(last)


def cell_fingerprint(plan: Plan, cell: Cell, legacy: bool = False) -> str:
    """Hash of everything that decides a cell's numbers: the data and segmenter sections, the
    subset draw and, for arms that use them, the diffusion and synthesis sections (the
    ``structure`` section only when a structure model draws the labels).

    An option added later must be left out of the hash while it has its default value
    (``LATER_OPTIONS``, and ``filter_seed``), or every committed cell is refused
    (tests/test_experiment.py checks the committed Kumar cells against their config).
    ``legacy``: the hash as it was before real-label cells left the unused ``structure``
    section out (:func:`cell_fingerprints` accepts both)."""
    from nudiff.config import to_dict
    from nudiff.synthesis import REAL_STRUCTURES

    parts = {"data": to_dict(plan.data), "segment": to_dict(plan.segment), "cell": cell.name,
             "subset_seed": plan.experiment.subset_seed}
    for key in ("fractions", "seed"):
        parts["data"].pop(key, None)  # set per run from the grid; the cell name holds them
    parts["segment"]["train"].pop("seed", None)
    if cell.arm in SYNTHETIC_ARMS:
        parts |= {k: to_dict(getattr(plan, k)) for k in ("structure", "image", "synthesis")}
        for section, defaults in LATER_OPTIONS.items():  # at their defaults: fingerprints from before hold
            for key, default in defaults.items():
                _pop_dotted(parts[section], key, lambda value, d=default: value == d)
        for section in ("structure", "image"):
            for key in SPEED_OPTIONS:
                _pop_dotted(parts[section], key)
        if plan.synthesis.structures in REAL_STRUCTURES and not legacy:
            parts.pop("structure")  # no structure model: its section decides nothing
        parts["n_synthetic"] = plan.experiment.n_synthetic
        if plan.experiment.filter_seed:  # 0 left out: fingerprints from before the option hold
            parts["filter_seed"] = plan.experiment.filter_seed
    if cell.arm in COPYPASTE_ARMS:
        parts["n_synthetic"] = plan.experiment.n_synthetic
        parts["copypaste"] = to_dict(plan.experiment.copypaste)
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cell_fingerprints(plan: Plan, cell: Cell) -> tuple[str, ...]:
    """The fingerprints a committed cell of ``plan`` may carry: the current one first, then
    the legacy one of real-label cells committed before their hash left ``structure`` out."""
    current, legacy = cell_fingerprint(plan, cell), cell_fingerprint(plan, cell, legacy=True)
    return (current,) if legacy == current else (current, legacy)


def _committed(results_dir: Path | None, plan: Plan, cell: Cell, cell_dir: Path) -> bool:
    """Take a cell's metrics from ``results_dir`` when they are there (same fingerprint).

    A cell finished in this run but not yet in ``results_dir`` (a run stopped between the two
    writes) counts as not done, so the loop (which skips its training) commits it. A committed
    cell of another configuration is refused, whether or not this run has finished the cell
    too (the report would show one configuration's numbers, the results folder another's)."""
    if results_dir is None:
        return (cell_dir / "metrics.json").exists()
    path = results_dir / "cells" / f"{cell.name}.json"
    if not path.exists():
        return False
    saved = read_json(path)
    if saved.get("fingerprint") not in cell_fingerprints(plan, cell):
        raise NudiffError(f"{path}: computed with another configuration (fingerprint "
                          f"{saved.get('fingerprint')} != {cell_fingerprint(plan, cell)}); "
                          "move it away or use another --results folder")
    if (cell_dir / "metrics.json").exists():
        return True
    write_json(cell_dir / "metrics.json", saved)
    _log(f"cell {cell.name}: taken from {path}")
    return True


def timed_step(path: Path, timings: dict, key: str, fn) -> None:
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


def run_experiment(plan: Plan, out: Path, test_dir: Path | None = None,
                   data_dirs: list[Path] | None = None, results_dir: Path | None = None,
                   models_only: bool = False) -> Path | None:
    """Run (or resume) every cell; returns the path of results.csv. See the module docstring
    for ``results_dir``. ``models_only``: train (or resume) the diffusion models of every
    fraction whose unfinished cells need pairs, then stop (returns None) -- a second process can
    meanwhile run the cells that need none."""
    from nudiff.data.dataset import load_folder
    from nudiff.data.prepare import load_val, prepare, subset_filename

    cfg = plan.experiment
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("experiment", "data", "structure", "image", "synthesis", "segment"):
        save_config(getattr(plan, name), out / "config" / f"{name}.yaml")
    folders = [Path(d) for d in (data_dirs or cfg.data)]
    data_dir = out / "data"
    plan.data.fractions = sorted(set(cfg.fractions))
    plan.data.seed = cfg.subset_seed
    timings = read_json(out / "timings.json") if (out / "timings.json").exists() else {}
    timed = functools.partial(timed_step, out / "timings.json", timings)

    if not (data_dir / "manifest.json").exists():
        _log(f"preparing data from {', '.join(map(str, folders))}")
        timed("data_prepare", lambda: prepare(folders, data_dir, plan.data))
    missing = [f for f in plan.data.fractions
               if not (data_dir / "subsets" / subset_filename(f, cfg.subset_seed)).is_file()]
    if missing:  # a data folder prepared for other fractions: draw these (the others are kept)
        _log(f"drawing the subsets of fractions {missing} in {data_dir}")
        prepare(folders, data_dir, plan.data, progress=False)
    # Model selection happens on the validation images only when they are not the test
    # images (--test given); otherwise on the labeled subset's patches (see _run_cell).
    test = load_folder(test_dir, progress=False) if test_dir else load_val(data_dir)
    val = load_val(data_dir) if test_dir else None
    test_images_dir = Path(test_dir) / "images" if test_dir else data_dir / "val" / "images"
    test_labels_dir = Path(test_dir) if test_dir else data_dir / "val"

    cells = cells_of(cfg)
    def unfinished(some: list[Cell]) -> list[Cell]:
        return [c for c in some if not _committed(results_dir, plan, c, out / "cells" / c.name)]

    if models_only:
        for fraction in sorted({c.fraction for c in unfinished(cells) if c.arm in SYNTHETIC_ARMS}):
            _train_models_for(plan, out, data_dir, fraction, timed)
        _log("diffusion models done (--models-only)")
        return None
    _log(f"{len(cells)} cells: " + ", ".join(c.name for c in cells))
    # Fraction by fraction (its diffusion models, then its cells), so that a run stopped
    # part-way leaves whole fractions behind.
    for fraction in sorted({c.fraction for c in cells}):
        todo = unfinished([c for c in cells if c.fraction == fraction])
        # a fraction whose pairs are all there (made elsewhere too: a GPU) needs no filter segmenter
        if any(c.arm in SYNTHETIC_ARMS for c in todo) and not synthetic_done(plan, out, fraction):
            segmenter = None
            if plan.synthesis.filter.segmenter == REAL_CELL:
                ref = reference_cell(cfg, fraction)
                _log(f"the pair filter scores label fidelity with {ref.name}'s segmenter")
                # its committed metrics, if any, stay its numbers (a retraining scores apart)
                _committed(results_dir, plan, ref, out / "cells" / ref.name)
                _run_cell(plan, out, data_dir, ref, val, test_images_dir, test_labels_dir, timed,
                          need_model=True)
                if results_dir is not None and not (results_dir / "cells" / f"{ref.name}.json").exists():
                    _commit_cell(results_dir, plan, ref, out, timings)
                segmenter = out / "cells" / ref.name
            _synthetic_for(plan, out, data_dir, fraction, timed, segmenter)
        for cell in todo:
            _run_cell(plan, out, data_dir, cell, val, test_images_dir, test_labels_dir, timed)
            if results_dir is not None:
                _commit_cell(results_dir, plan, cell, out, timings)
    del test
    results = collect_results(out, cells)
    from nudiff.report import write_experiment_report

    write_experiment_report(out, results, cfg)
    _log(f"done: {out / 'results.csv'} and {out / 'report' / 'index.html'}")
    return out / "results.csv"


def _commit_cell(results_dir: Path, plan: Plan, cell: Cell, out: Path, timings: dict) -> None:
    report = read_json(out / "cells" / cell.name / "metrics.json")
    minutes = {k.rsplit("/", 1)[-1]: round(v / 60, 2) for k, v in timings.items()
               if k.startswith(f"cells/{cell.name}/")}
    write_json(results_dir / "cells" / f"{cell.name}.json", {
        "cell": cell.name, "fraction": cell.fraction, "arm": cell.arm, "seed": cell.seed,
        "segment_steps": plan.segment.train.steps, "minutes": minutes,
        # what ran: a CPU without native bf16 trains a bf16 configuration in fp32
        "segment_precision": resolve_precision(plan.segment.train.precision),
        "fingerprint": cell_fingerprint(plan, cell), **report})


def grid_status(plan: Plan, out: Path, results_dir: Path | None = None) -> list[dict]:
    """Where each cell of the grid stands, without running or writing anything: one dict per
    cell with ``cell``, ``state`` (``committed``: in ``results_dir`` with this configuration's
    fingerprint; ``committed elsewhere``: there with another one, which a run refuses;
    ``finished``: done in ``out`` but not in ``results_dir``; ``started``: a segmenter
    checkpoint in ``out``; ``to run``) and, for arms that need pairs, ``pairs`` (what the
    fraction's synthetic set still needs: ``done`` / ``synthesis`` / ``models`` / ``another
    synthesis configuration``)."""
    out = Path(out)
    rows = []
    for cell in cells_of(plan.experiment):
        cell_dir = out / "cells" / cell.name
        saved = Path(results_dir) / "cells" / f"{cell.name}.json" if results_dir else None
        if saved is not None and saved.is_file():
            same = read_json(saved).get("fingerprint") in cell_fingerprints(plan, cell)
            state = "committed" if same else "committed elsewhere"
        elif (cell_dir / "metrics.json").exists():
            state = "finished"
        elif (cell_dir / "checkpoints").exists():
            state = "started"
        else:
            state = "to run"
        row = {"cell": cell.name, "state": state}
        if cell.arm in SYNTHETIC_ARMS:
            row["pairs"] = _pairs_state(plan, out, cell.fraction)
        rows.append(row)
    return rows


def model_kinds(plan: Plan) -> tuple[str, ...]:
    """The diffusion models a fraction's pairs need: the image model alone when the labels are
    the subset's own (``synthesis.structures: subset`` or ``copypaste``)."""
    from nudiff.synthesis import REAL_STRUCTURES

    return ("image",) if plan.synthesis.structures in REAL_STRUCTURES else ("structure", "image")


def _pairs_state(plan: Plan, out: Path, fraction: float) -> str:
    root = out / "diffusion" / f"f{fraction:.2f}"
    try:
        if synthetic_done(plan, out, fraction):
            return "done"
    except NudiffError:
        return "another synthesis configuration"
    kinds = model_kinds(plan)
    missing = [k for k in kinds if not (root / k / "model").exists()]
    if not missing:
        return "synthesis"
    started = [k for k in missing if (root / k / "checkpoints").exists()]
    return "models: " + ", ".join(k + (" (started)" if k in started else "") for k in missing)


STATES = ("committed", "committed elsewhere", "finished", "started", "to run")


def status_markdown(rows: list[dict]) -> str:
    counts = {state: n for state in STATES if (n := sum(r["state"] == state for r in rows))}
    lines = ["| cell | state | pairs |", "|---|---|---|"]
    lines += [f"| {r['cell']} | {r['state']} | {r.get('pairs', '')} |" for r in rows]
    lines += ["", ", ".join(f"{n} {state}" for state, n in counts.items()) + f" (of {len(rows)} cells)"]
    return "\n".join(lines) + "\n"


def precision_note(plan: Plan) -> str:
    """A line for ``--status`` when this machine would not run the configured bf16 (a CPU that
    only emulates it trains in fp32: other numbers than committed bf16 cells), else ''."""
    from nudiff import utils
    from nudiff.synthesis import REAL_STRUCTURES

    trained = [("segmenter", plan.segment.train.precision)]
    if any(arm in SYNTHETIC_ARMS for arm in plan.experiment.arms):
        trained.append(("image model", plan.image.train.precision))
        if plan.synthesis.structures not in REAL_STRUCTURES:
            trained.append(("structure model", plan.structure.train.precision))
    asked = [name for name, precision in trained if precision == "bf16"]
    if not asked or utils.native_bf16(utils.default_device()):
        return ""
    return (f"Here, the bf16 {', '.join(asked)} would train in fp32: this "
            f"{utils.default_device()} has no native bf16 (AVX512-BF16/AMX). Committed cells "
            "record the precision their segmenter ran in (segment_precision).\n")


def reference_cell(cfg: ExperimentConfig, fraction: float) -> Cell:
    """The ``real`` cell whose segmenter filters a fraction's pairs (``synthesis.filter.segmenter:
    real``): seed ``filter_seed``, whatever seeds the run asks for. It sees the labeled subset
    only, never the test images."""
    return Cell(fraction, "real", cfg.filter_seed)


def synthetic_done(plan: Plan, out: Path, fraction: float) -> bool:
    """Whether the fraction's synthetic folder holds its ``n_synthetic`` pairs, made with this
    plan's synthesis section (another one is an error naming the keys that differ)."""
    from nudiff.synthesis import check_same_config

    syn = out / "diffusion" / f"f{fraction:.2f}" / "synthetic"
    syn_cfg = replace(plan.synthesis, n=plan.experiment.n_synthetic)
    manifest = check_same_config(syn / "manifest.json", syn_cfg, any_segmenter=True)
    return manifest is not None and manifest["n_accepted"] >= syn_cfg.n


def _synthetic_for(plan: Plan, out: Path, data_dir: Path, fraction: float, timed,
                   segmenter: Path | None = None) -> Path:
    from nudiff.synthesis import synthesize

    root = out / "diffusion" / f"f{fraction:.2f}"
    syn = root / "synthetic"
    syn_cfg = replace(plan.synthesis, n=plan.experiment.n_synthetic)
    if segmenter is not None:  # "real" -> this run's folder (the fingerprint keeps "real")
        syn_cfg = replace(syn_cfg, filter=replace(syn_cfg.filter, segmenter=str(segmenter)))
    if synthetic_done(plan, out, fraction):
        return syn
    samples = _train_models_for(plan, out, data_dir, fraction, timed)
    # The real images synthesis may look at (mosaic, stain reference, filter percentiles) are
    # the labeled subset's: never the held-out images, which may be the test images.
    subset_dir = write_subset_folder(samples, root / "subset")
    _log(f"synthesizing {syn_cfg.n} pairs for {fraction:.0%}")
    timed(f"f{fraction:.2f}/synthesize", lambda: synthesize(
        root / "structure", root / "image", syn, syn_cfg, real_dir=subset_dir))
    return syn


def _train_models_for(plan: Plan, out: Path, data_dir: Path, fraction: float, timed) -> list:
    """Train (or resume) the fraction's diffusion models on its labeled subset, unless they
    exist; returns the subset's samples."""
    from nudiff.data.prepare import load_subset
    from nudiff.diffusion.train import train as train_diffusion

    root = out / "diffusion" / f"f{fraction:.2f}"
    samples = load_subset(data_dir, fraction, plan.experiment.subset_seed)
    kinds = model_kinds(plan)
    todo = [kind for kind in kinds if not (root / kind / "model").exists()]
    images, insts = _arrays(samples) if todo else (None, None)
    for kind in todo:
        run = root / kind
        _log(f"training the {kind} model on the {fraction:.0%} subset ({len(samples)} patches)")
        timed(f"f{fraction:.2f}/train_{kind}", functools.partial(
            train_diffusion, getattr(plan, kind), run, images if kind == "image" else None,
            insts, resume=(run / "checkpoints").exists()))
    return samples


def write_subset_folder(samples: list, folder: Path) -> Path:
    """The labeled subset as a paired folder (what synthesis may compare with)."""
    from nudiff.data.io import write_image, write_instance_map

    for s in samples:
        if not (folder / "labels" / f"{s.name}.png").exists():
            write_image(folder / "images" / f"{s.name}.png", s.image)
            write_instance_map(folder / "labels" / f"{s.name}.png", s.instance_map)
    return folder


def _copypaste_for(plan: Plan, out: Path, real: list, fraction: float) -> list:
    """The fraction's copy-paste patches (one set per fraction, shared by its seeds), written
    once to ``out/copypaste/f{fraction}/`` as a paired folder with manifest and mosaic."""
    from nudiff.config import to_dict
    from nudiff.data.copypaste import copy_paste_set
    from nudiff.data.dataset import load_folder
    from nudiff.data.io import write_image, write_instance_map
    from nudiff.report import mosaic, overlay

    cfg, n = plan.experiment.copypaste, plan.experiment.n_synthetic
    folder = out / "copypaste" / f"f{fraction:.2f}"
    manifest = folder / "manifest.json"
    if manifest.exists() and read_json(manifest).get("config") == to_dict(cfg) | {"n": n}:
        return load_folder(folder, progress=False)
    t = time.time()
    samples, counts = copy_paste_set(real, n, cfg)
    for s in samples:
        write_image(folder / "images" / f"{s.name}.png", s.image)
        write_instance_map(folder / "labels" / f"{s.name}.png", s.instance_map)
    tiles = [t for s in samples[:8] for t in (s.image, overlay(s.image, s.instance_map))]
    write_image(folder / "mosaic.png", mosaic(tiles, ncols=8))
    write_json(manifest, {"config": to_dict(cfg) | {"n": n}, "pasted": counts,
                          "mean_pasted": float(np.mean(counts)), "seconds": round(time.time() - t, 1)})
    _log(f"copy-paste: {n} patches for {fraction:.0%}, {np.mean(counts):.1f} nuclei pasted on average")
    return samples


def _run_cell(plan, out, data_dir, cell: Cell, val, test_images_dir, test_labels_dir, timed,
              need_model: bool = False) -> None:
    """Train, predict and score one cell; a finished cell is skipped (with ``need_model``, only
    when its model is here too: metrics taken from --results carry no model, so it is retrained,
    identically for its seed at the same thread count). A retrained cell keeps the metrics it
    has and writes its new scores to ``metrics_retrained.json``: a report built from the run
    folder shows the committed numbers."""
    from nudiff.data.dataset import load_folder
    from nudiff.data.prepare import load_subset
    from nudiff.metrics import evaluate_folders
    from nudiff.segment.predict import predict_folder
    from nudiff.segment.train import train_segmenter

    cell_dir = out / "cells" / cell.name
    metrics_path = cell_dir / "metrics.json"
    if metrics_path.exists() and (not need_model or (cell_dir / "model").is_dir()):
        return
    retraining = metrics_path.exists()
    real = load_subset(data_dir, cell.fraction, plan.experiment.subset_seed)
    # Model selection and post-processing thresholds need labeled images the score is not
    # computed on: the validation images when a separate --test is given, else (test = the
    # validation images) a fixed sample of the labeled subset's own patches.
    selection = val if val is not None else real[:: max(1, len(real) // plan.experiment.selection_patches)]
    synthetic = None
    if cell.arm in COPYPASTE_ARMS:
        synthetic = _copypaste_for(plan, out, real, cell.fraction)
    if cell.arm in SYNTHETIC_ARMS:
        syn_dir = out / "diffusion" / f"f{cell.fraction:.2f}" / "synthetic"
        synthetic = (synthetic or []) + load_folder(syn_dir, progress=False)
    if cell.arm == "real-dup":
        copies = -(-(len(real) + len(synthetic)) // len(real))
        real, synthetic = (real * copies)[: len(real) + len(synthetic)], None
    elif cell.arm == "syn-only":
        real, synthetic = synthetic, None
    seg_cfg = plan.segment
    seg_cfg.train.seed = cell.seed
    seed_everything(cell.seed)
    _log(f"cell {cell.name}: {len(real)} real-role + {len(synthetic or [])} synthetic patches")
    timed(f"cells/{cell.name}/train", lambda: train_segmenter(
        seg_cfg, cell_dir, real, synthetic, selection, resume=(cell_dir / "checkpoints").exists()))
    timed(f"cells/{cell.name}/predict", lambda: predict_folder(cell_dir, test_images_dir, cell_dir / "pred"))
    report = evaluate_folders(cell_dir / "pred", test_labels_dir)
    write_json(cell_dir / ("metrics_retrained.json" if retraining else "metrics.json"), report)
    m = report["mean"]
    _log(f"cell {cell.name}{' (retrained)' if retraining else ''}: "
         f"Dice {m['dice']:.4f} AJI {m['aji']:.4f} PQ {m['pq']:.4f}")


def collect_results(out: Path, cells: list[Cell]) -> list[dict]:
    """One row per (cell, test image) from the cells' metrics.json; writes results.csv."""
    rows = []
    for cell in cells:
        path = out / "cells" / cell.name / "metrics.json"
        if not path.exists():
            continue
        for image, m in read_json(path)["per_image"].items():
            rows.append({"fraction": cell.fraction, "arm": cell.arm, "seed": cell.seed, "image": image}
                        | {k: m[k] for k in METRICS})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["fraction", "arm", "seed", "image", *METRICS])
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "results.csv", buf.getvalue())
    return rows


def register(sub) -> None:
    p = sub.add_parser(
        "experiment",
        help="the augmentation grid: fractions x {real, real+syn, ...} x seeds, with a report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog="examples:\n  nudiff experiment --config configs/demo.yaml --out runs/demo\n"
        "  nudiff experiment --config configs/cpu-grid.yaml --out runs/grid --test my_test_folder\n"
        "  nudiff experiment --config configs/kumar-grid.yaml --out runs/kumar "
        "--results benchmarks/results/kumar-grid   (resumable across sessions)\n"
        "  nudiff experiment --config configs/kumar-grid.yaml --out runs/k-r90 "
        "--set segment.train.real_ratio=0.9 --set experiment.arms=[real+syn]\n"
        "  nudiff experiment --config configs/kumar-grid.yaml --out runs/kumar "
        "--results benchmarks/results/kumar-grid --status",
    )
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--test", type=Path, default=None,
                   help="test folder with images/ and labels/ (default: the validation images)")
    p.add_argument("--data", type=Path, nargs="+", default=None, help="override experiment.data folders")
    p.add_argument("--results", type=Path, default=None,
                   help="keep every finished cell's per-image metrics in RESULTS/cells/ (commit "
                   "them) and take cells already there instead of recomputing them")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set segment.train.real_ratio=0.9 (repeatable)")
    p.add_argument("--models-only", action="store_true",
                   help="only train (or resume) the diffusion models the unfinished cells need, then "
                   "stop; run it with --threads 1 beside a run of the cells that need no pairs "
                   "(e.g. --set experiment.arms=[real]), then run the whole grid")
    p.add_argument("--status", action="store_true",
                   help="only print where each cell stands (committed in --results, finished or "
                   "started in --out, to run) and what its pairs still need; runs and writes nothing")
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.set_defaults(func=_cmd_experiment)

    r = sub.add_parser(
        "run",
        help="the main job: prepare data, run the experiment in CONFIG, write the report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The main job of `make run`: same as `nudiff experiment` (data preparation "
        "is its first step).",
        epilog="example:\n  nudiff run --config configs/demo.yaml --data ../shared/datasets/monuseg/train "
        "../shared/datasets/monuseg/train-recovered --out runs/demo",
    )
    r.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    r.add_argument("--out", type=Path, default=Path("runs/demo"))
    r.add_argument("--test", type=Path, default=None)
    r.add_argument("--data", type=Path, nargs="+", default=None,
                   help="paired folders, or one folder holding train/ and train-recovered/")
    r.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    r.set_defaults(func=_cmd_experiment)


def _cmd_experiment(args) -> None:
    set_threads(args.threads)
    plan = load_plan(args.config, getattr(args, "set", None))
    if getattr(args, "status", False):
        print(status_markdown(grid_status(plan, args.out, args.results)) + precision_note(plan), end="")
        return
    data = args.data
    if data and len(data) == 1 and (data[0] / "train").is_dir() and not (data[0] / "images").is_dir():
        data = sorted(p for p in data[0].iterdir() if (p / "images").is_dir())
        data.sort(key=lambda p: p.name != "train")  # exact labels first: validation comes from it
    run_experiment(plan, args.out, args.test, data, getattr(args, "results", None),
                   models_only=getattr(args, "models_only", False))
