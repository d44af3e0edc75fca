"""The augment pipeline: the plan for a user's folder, the run, and what it hands back.

Layout of ``OUT`` (:class:`AugmentLayout`)::

    segmenter/            the segmenter trained on real + synthetic pairs (a model folder that
                          `nudiff segment predict`, `--slide` and the GeoJSON export take)
    segmenter-real-only/  the same budget on the real labels alone (the comparison)
    pairs/                the kept synthetic pairs, in --format (png | hovernet | npy)
    report/               index.html + table.md: real-only against real + pairs on the
                          held-out images first (Dice / AJI / PQ, paired gain and interval),
                          then mosaics and prediction overlays
    run/                  the experiment's run folder (data, image model, pairs, both cells):
                          a killed run resumes from it

Everything is guarded by its own outputs, so running the same command again resumes.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from nudiff.augment import DEFAULT_CONFIG, DEFAULT_FROM
from nudiff.augment.checks import check_labeled_folder
from nudiff.data.dataset import find_pairs
from nudiff.data.formats import convert_pairs
from nudiff.diffusion.sample import read_model_config
from nudiff.experiment import Cell, Plan, RunLayout, load_plan, run_experiment
from nudiff.utils import DataError, atomic_folder

#: the budgets of `nudiff augment` (image model, pairs, segmenters), beside the package in a clone
ALL = 1.0  # the user's labels are all they have: one fraction, 100 %
REAL, AUGMENTED = Cell(ALL, "real", 0), Cell(ALL, "real+syn", 0)
#: the image model's training when it fine-tunes a shipped one (benchmarks/results/fine-tune/:
#: 250 steps, 4 min, gave pairs as real as 1,000 steps from scratch); --set image.train.steps=N
#: or image.train.warmup_steps=N wins
FINE_TUNE = {"steps": 250, "warmup_steps": 50}


@dataclass(frozen=True)
class AugmentLayout:
    """Where ``nudiff augment --out OUT`` puts things (see the module docstring)."""

    root: Path

    @property
    def run(self) -> RunLayout:
        return RunLayout(self.root / "run")

    @property
    def segmenter(self) -> Path:
        return self.root / "segmenter"

    @property
    def segmenter_real_only(self) -> Path:
        return self.root / "segmenter-real-only"

    @property
    def pairs(self) -> Path:
        return self.root / "pairs"

    @property
    def report(self) -> Path:
        return self.root / "report"


def default_hold_out(n_images: int) -> int:
    """Images held out for evaluation when no --test is given: a quarter, at least one."""
    return max(1, round(n_images / 4))


def shipped_image_model(folder: str | os.PathLike) -> Path:
    """The image model of ``--from``: a model folder of kind image, or a folder holding one as
    ``image/`` (``models/kumar-f0.10``)."""
    folder = Path(folder)
    candidate = folder / "image" if (folder / "image").is_dir() else folder
    read_model_config(candidate, kind="image")  # one line naming it when it is not one
    return candidate


def augment_plan(
    config: str | os.PathLike,
    data: str | os.PathLike,
    hold_out: int,
    from_model: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
) -> Plan:
    """The experiment of ``config`` (budgets) on the user's folder ``data``: 100 % of its
    labels, arms real and real+syn, one seed; ``hold_out`` whole images held out as the test
    images (0: a separate --test folder). ``from_model``: fine-tune that image model (its
    network, windows and schedule replace the config's, trained :data:`FINE_TUNE` steps unless
    ``overrides`` set them)."""
    budget = [f"image.train.{k}={v}" for k, v in FINE_TUNE.items()] if from_model else []
    plan = load_plan(Path(config), budget + list(overrides or []))  # the user's --set comes last
    e = plan.experiment
    e.data, e.fractions, e.arms, e.seeds = [str(data)], [ALL], ["real", "real+syn"], [0]
    e.synthetic_fractions, e.seeds_by_fraction, e.arm_fractions, e.arm_seeds = [ALL], {}, {}, {}
    e.paper = "none"  # the user's own images: NuDiff's Table 1 is no reference
    e.shipped_models = False  # fine-tuning is explicit (--from); a user's subset matches no card
    plan.data = dataclasses.replace(plan.data, split=None, val_images=hold_out, fractions=[ALL])
    if from_model is not None:
        image = shipped_image_model(from_model)
        shipped = read_model_config(image, kind="image")
        train = dataclasses.replace(plan.image.train, init_from=str(image.resolve()))
        plan.image = dataclasses.replace(shipped, train=train, sample=plan.image.sample)
    return plan


def augment(
    data: str | os.PathLike,
    out: str | os.PathLike,
    test: str | os.PathLike | None = None,
    hold_out: int | None = None,
    from_model: str | os.PathLike | None = DEFAULT_FROM,
    config: str | os.PathLike = DEFAULT_CONFIG,
    overrides: list[str] | None = None,
    pair_format: str = "png",
) -> AugmentLayout:
    """Run (or resume) the whole chain on the user's folder ``data``; returns the layout.

    test: a labeled folder to score on instead of holding images out of ``data``.
    hold_out: images of ``data`` held out for scoring (default: a quarter, at least one;
        0 with ``test``). Held-out images are never used for any choice: model selection and
        post-processing use the training images' own patches.
    from_model: a shipped model whose image model is fine-tuned instead of training one from
        scratch (default ``models/kumar-f0.10`` when the clone has it, else from scratch; None:
        from scratch). The default follows ``benchmarks/results/fine-tune/``: on organs the
        shipped model never saw, 250 fine-tuning steps gave pairs as real as 1,000 steps from
        scratch, and a segmenter no worse, in a fifth of the minutes.
    """
    if from_model is not None and Path(from_model) == DEFAULT_FROM and not DEFAULT_FROM.is_dir():
        from_model = None  # installed without the shipped models: train one
    n_images = len(find_pairs(data))  # a missing label is reported here, before any image is read
    hold_out = (
        (0 if test is not None else default_hold_out(n_images)) if hold_out is None else hold_out
    )
    if test is None and hold_out < 1:
        raise DataError(
            data, "nothing to score on: hold out at least one image, or give --test DIR"
        )
    check_labeled_folder(data, hold_out)  # every problem of the folder, before anything is written
    if test is not None:
        check_labeled_folder(test, 0, min_nuclei=1, purpose="to score on")
    plan = augment_plan(config, data, hold_out, from_model, overrides)
    layout = AugmentLayout(Path(out))
    run_experiment(
        plan, layout.run.root, test_dir=Path(test) if test else None, data_dirs=[Path(data)]
    )
    _export(layout, pair_format)
    return layout


def _export(layout: AugmentLayout, pair_format: str) -> None:
    """The two segmenters, the pairs and the report, out of the run folder."""
    run = layout.run
    for cell, dest in ((AUGMENTED, layout.segmenter), (REAL, layout.segmenter_real_only)):
        copy_tree(run.cell(cell) / "model", dest)
    if not layout.pairs.exists():  # written once: a resumed run finds it
        convert_pairs(run.synthetic(ALL), layout.pairs, pair_format, progress=False)
    copy_tree(run.report, layout.report)


def copy_tree(src: Path, dest: Path) -> None:
    """``src`` copied to ``dest``, replaced atomically."""
    with atomic_folder(dest) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
