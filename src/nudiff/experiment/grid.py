"""The grid: its configuration (the plan, one section per stage) and its cells.

A cell and the arm table (:data:`ARMS`: what an arm needs, how it composes a segmenter's
training data) live in :mod:`nudiff.layout`, which needs no stage's code; they are re-exported
here for the loop, the fingerprint, ``--status`` and the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from nudiff.config import apply_overrides, from_dict, load_yaml
from nudiff.data.copypaste import CopyPasteConfig
from nudiff.data.prepare import PrepareConfig
from nudiff.diffusion.config import DiffusionConfig
from nudiff.layout import ARMS, COPYPASTE_ARM, REAL_ARM, REAL_CELL, Arm, Cell
from nudiff.segment.config import SegmentConfig
from nudiff.synthesis import REAL_STRUCTURES, SynthesisConfig
from nudiff.utils import NudiffError


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
    paper: which column of NuDiff's Table 1 the report shows beside ours: monuseg | kumar |
        none (other data: no column).
    shipped_models: take a fraction's diffusion model from the repository's ``models/`` when one
        was trained with the same config on the same subset (``nudiff.models.find_shipped``),
        instead of training it; ``false`` trains every model from the data.
    selection_patches: without a separate --test folder, segmenter model selection and
        post-processing tuning use about this many of the labeled subset's own patches
        (the validation images are then the test images and are never used for selection).
    """

    data: list[str] = field(
        default_factory=lambda: [
            "../shared/datasets/monuseg/train",
            "../shared/datasets/monuseg/train-recovered",
        ]
    )
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
    shipped_models: bool = True

    def __post_init__(self) -> None:
        bad = [a for a in [*self.arms, *self.arm_fractions, *self.arm_seeds] if a not in ARMS]
        if bad:
            raise NudiffError(f"experiment.arms: unknown {bad}; choose from {tuple(ARMS)}")
        if self.paper not in ("monuseg", "kumar", "none"):
            raise NudiffError(f"experiment.paper: {self.paper!r}; choose monuseg, kumar or none")


def cells_of(cfg: ExperimentConfig) -> list[Cell]:
    """The grid's cells, fraction by fraction, arm by arm, seed by seed."""
    syn_fracs = cfg.fractions if cfg.synthetic_fractions is None else cfg.synthetic_fractions
    cells = []
    for f in cfg.fractions:
        seeds = cfg.seeds_by_fraction.get(f, cfg.seeds)
        for arm in cfg.arms:
            if ARMS[arm].pairs and f not in syn_fracs:
                continue
            if arm in cfg.arm_fractions and f not in cfg.arm_fractions[arm]:
                continue
            cells += [Cell(f, arm, s) for s in cfg.arm_seeds.get(arm, seeds)]
    return cells


def find_cells(cfg: ExperimentConfig, names: list[str]) -> list[Cell]:
    """The grid's cells called ``names`` (``--cell``), in grid order; a name that is not a cell
    of this grid is an error."""
    cells = {c.name: c for c in cells_of(cfg)}
    unknown = [n for n in names if n not in cells]
    if unknown:
        raise NudiffError(
            f"--cell {' '.join(unknown)}: not a cell of this grid (--list-cells prints its cells)"
        )
    return [c for name, c in cells.items() if name in names]


def reference_cell(cfg: ExperimentConfig, fraction: float) -> Cell:
    """The ``real`` cell whose segmenter filters a fraction's pairs (``synthesis.filter.segmenter:
    real``): seed ``filter_seed``, whatever seeds the run asks for. It sees the labeled subset
    only, never the test images."""
    return Cell(fraction, REAL_CELL, cfg.filter_seed)


@dataclass
class Plan:
    """Everything one experiment config file holds."""

    experiment: ExperimentConfig
    data: PrepareConfig
    structure: DiffusionConfig
    image: DiffusionConfig
    synthesis: SynthesisConfig
    segment: SegmentConfig


SECTIONS = {
    "experiment": ExperimentConfig,
    "data": PrepareConfig,
    "structure": DiffusionConfig,
    "image": DiffusionConfig,
    "synthesis": SynthesisConfig,
    "segment": SegmentConfig,
}


def load_plan(path: Path, overrides: list[str] | None = None) -> Plan:
    """A plan from an experiment config file, with ``--set``-style ``overrides``."""
    raw = apply_overrides(load_yaml(path), overrides or [])
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise NudiffError(f"{path}: unknown section(s) {unknown}; known: {sorted(SECTIONS)}")
    plan = Plan(**{k: from_dict(cls, raw.get(k), f"{path}[{k}]") for k, cls in SECTIONS.items()})
    plan.structure.model.kind = "structure"
    plan.image.model.kind = "image"
    return plan


def model_kinds(plan: Plan) -> tuple[str, ...]:
    """The diffusion models a fraction's pairs need: the image model alone when the labels are
    the subset's own (``synthesis.structures: subset`` or ``copypaste``)."""
    return ("image",) if plan.synthesis.structures in REAL_STRUCTURES else ("structure", "image")


def check_windows(plan: Plan, where: str | Path = "config") -> None:
    """A diffusion model the grid's pairs need draws its training windows from the prepared
    patches resized by its ``data.scale``: they must be at least its ``data.patch_size``.

    Raises:
        NudiffError: one line naming ``where`` and the sizes, before anything runs.
    """
    if not any(c.needs.pairs for c in cells_of(plan.experiment)):
        return
    size = plan.data.patch_size
    for kind in model_kinds(plan):
        d = getattr(plan, kind).data
        if round(size * d.scale) < d.patch_size:
            raise NudiffError(
                f"{where}: data.patch_size {size} resized by {kind}.data.scale {d.scale} is "
                f"{round(size * d.scale)} px, smaller than the {kind} model's window "
                f"{kind}.data.patch_size {d.patch_size}: set data.patch_size >= "
                f"{math.ceil(d.patch_size / d.scale)}"
            )


__all__ = [
    "ARMS",
    "COPYPASTE_ARM",
    "REAL_ARM",
    "REAL_CELL",
    "Arm",
    "Cell",
    "ExperimentConfig",
    "Plan",
    "SECTIONS",
    "cells_of",
    "check_windows",
    "find_cells",
    "load_plan",
    "model_kinds",
    "reference_cell",
]
