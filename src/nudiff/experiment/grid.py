"""The grid: its configuration, its cells and the arms they train on.

The arm table (:data:`ARMS`) is the one place that says what an arm needs (the fraction's
synthetic pairs, its copy-paste patches) and how it composes a segmenter's training data from
the labeled subset and those extra patches; the loop, the fingerprint, ``--status`` and the
report read it instead of testing arm names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nudiff.config import apply_overrides, from_dict, load_yaml
from nudiff.data.copypaste import CopyPasteConfig
from nudiff.data.prepare import PrepareConfig
from nudiff.diffusion.config import DiffusionConfig
from nudiff.experiment.layout import fraction_tag
from nudiff.segment.config import SegmentConfig
from nudiff.synthesis import REAL_STRUCTURES, SynthesisConfig
from nudiff.utils import NudiffError

Compose = Callable[[list, list | None], tuple[list, list | None]]


def _add(real: list, extra: list | None) -> tuple[list, list | None]:
    return real, extra


def _duplicate(real: list, extra: list | None) -> tuple[list, list | None]:
    # the subset repeated to as many patches as real + extra, and nothing else
    copies = -(-(len(real) + len(extra)) // len(real))
    return (real * copies)[: len(real) + len(extra)], None


def _extra_only(real: list, extra: list | None) -> tuple[list, list | None]:
    return extra, None


@dataclass(frozen=True)
class Arm:
    """What the segmenter of one arm trains on.

    pairs: needs the fraction's synthetic pairs (its diffusion models, synthesis and, with
        ``synthesis.filter.segmenter: real``, the filter's reference cell).
    copypaste: needs the fraction's copy-paste patches.
    compose: ``(real, extra) -> (real-role patches, synthetic-role patches or None)``, where
        ``extra`` is the copy-paste patches then the synthetic pairs the arm needs (``None``
        when it needs neither); the synthetic role is drawn by ``segment.train.real_ratio``.
    versus_copypaste: the report also pairs it against ``real+copypaste`` (does diffusion beat
        copy-paste, with the same real subset and steps?).
    """

    name: str
    pairs: bool = False
    copypaste: bool = False
    compose: Compose = _add
    versus_copypaste: bool = False


ARMS: dict[str, Arm] = {a.name: a for a in (
    Arm("real"),
    Arm("real+syn", pairs=True, versus_copypaste=True),
    Arm("real+copypaste", copypaste=True),
    Arm("real+copypaste+syn", pairs=True, copypaste=True, versus_copypaste=True),
    Arm("real-dup", pairs=True, compose=_duplicate),
    Arm("syn-only", pairs=True, compose=_extra_only),
)}
# the baselines the report pairs other arms against, and the cell whose segmenter filters pairs
REAL_ARM, COPYPASTE_ARM = "real", "real+copypaste"
# synthesis.filter.segmenter: "real" = the fraction's own real cell (see reference_cell)
REAL_CELL = REAL_ARM


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
    shipped_models: bool = True

    def __post_init__(self) -> None:
        bad = [a for a in [*self.arms, *self.arm_fractions, *self.arm_seeds] if a not in ARMS]
        if bad:
            raise NudiffError(f"experiment.arms: unknown {bad}; choose from {tuple(ARMS)}")
        if self.paper not in ("monuseg", "kumar", "none"):
            raise NudiffError(f"experiment.paper: {self.paper!r}; choose monuseg, kumar or none")


@dataclass
class Cell:
    fraction: float
    arm: str
    seed: int

    @property
    def name(self) -> str:
        return f"{fraction_tag(self.fraction)}_{self.arm}_s{self.seed}"

    @property
    def needs(self) -> Arm:
        """The arm's entry of :data:`ARMS`."""
        return ARMS[self.arm]


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
        raise NudiffError(f"--cell {' '.join(unknown)}: not a cell of this grid "
                          "(--list-cells prints its cells)")
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
    "experiment": ExperimentConfig, "data": PrepareConfig, "structure": DiffusionConfig,
    "image": DiffusionConfig, "synthesis": SynthesisConfig, "segment": SegmentConfig,
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
