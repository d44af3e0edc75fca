"""What a cell trains on: the fraction's labeled subset and the extra patches its arm adds.

Per fraction, shared by its seeds: the diffusion models (trained on the fraction's own subset),
the synthetic pairs they make, and the copy-paste patches. Each is made once, guarded by its
own outputs (a model folder, a manifest with the configuration that made it) and by a lock of
the run folder, so a stopped run resumes and two processes never make one thing twice.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from nudiff.config import differences, from_dict, to_dict
from nudiff.data.copypaste import CopyPasteConfig, copy_paste_set
from nudiff.data.dataset import load_folder
from nudiff.data.io import write_image, write_instance_map
from nudiff.data.prepare import load_subset
from nudiff.diffusion.train import train as train_diffusion
from nudiff.experiment.grid import Cell, Plan
from nudiff.experiment.store import missing_models, synthetic_done
from nudiff.layout import REAL_CELL, RunLayout, fraction_tag, log
from nudiff.models import MODELS_DIR, find_shipped
from nudiff.pictures import mosaic, overlay
from nudiff.synthesis import synthesize
from nudiff.utils import DataError, NudiffError, atomic_folder, read_json, write_json

Timed = Callable[[str, Callable[[], object]], None]


def training_data(plan: Plan, run: RunLayout, cell: Cell, real: list) -> tuple[list, list | None]:
    """The cell's (real-role, synthetic-role) patches: its arm composes the labeled subset
    ``real`` with the fraction's copy-paste patches, then its synthetic pairs, as it needs them
    (the pairs must be there: :func:`make_pairs`)."""
    arm = cell.needs
    extra = None
    if arm.copypaste:
        extra = copypaste_set(plan, run, real, cell.fraction)
    if arm.pairs:
        extra = (extra or []) + load_folder(run.synthetic(cell.fraction), progress=False)
    return arm.compose(real, extra)


def train_models(
    plan: Plan, run: RunLayout, data_dir: Path, fraction: float, timed: Timed
) -> list:
    """Train (or resume) the fraction's diffusion models on its labeled subset, unless they
    exist; returns the subset's samples."""
    samples = load_subset(data_dir, fraction, plan.experiment.subset_seed)
    todo = missing_models(plan, run, fraction)
    images, insts = _arrays(samples) if todo else (None, None)
    for kind in todo:
        with run.lock(f"{fraction_tag(fraction)}_{kind}"):
            if run.model(fraction, kind).exists():  # another process finished it meanwhile
                continue
            ready = (
                find_shipped(
                    kind, getattr(plan, kind), data_dir, fraction, plan.experiment.subset_seed
                )
                if plan.experiment.shipped_models
                else None
            )
            if ready is not None:
                log(
                    f"the {kind} model of the {fraction:.0%} subset: shipped {ready} (same config "
                    "and subset; experiment.shipped_models=false trains it)"
                )
                copy_folder(ready, run.model(fraction, kind))
                write_json(run.shipped_record(fraction, kind), {"from": _from_clone(ready)})
                continue
            folder = run.model_run(fraction, kind)
            log(f"training the {kind} model on the {fraction:.0%} subset ({len(samples)} patches)")
            timed(
                f"{fraction_tag(fraction)}/train_{kind}",
                functools.partial(
                    train_diffusion,
                    getattr(plan, kind),
                    folder,
                    images if kind == "image" else None,
                    insts,
                    resume=(folder / "checkpoints").exists(),
                ),
            )
    return samples


def _from_clone(path: Path) -> str:
    """``path`` relative to the clone (``models/...``) when it is inside it."""
    root = MODELS_DIR.parent
    return (
        str(path.resolve().relative_to(root)) if path.resolve().is_relative_to(root) else str(path)
    )


def copy_folder(src: Path, dst: Path) -> None:
    """``src``'s files into ``dst``, replaced atomically."""
    with atomic_folder(dst) as tmp:
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)


def _arrays(samples) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([s.image for s in samples]), np.stack([s.instance_map for s in samples])


def make_pairs(
    plan: Plan,
    run: RunLayout,
    data_dir: Path,
    fraction: float,
    timed: Timed,
    segmenter: Path | None = None,
) -> Path:
    """The fraction's synthetic pairs (made unless they are there): its diffusion models
    trained if need be, then ``n_synthetic`` pairs synthesized, filtered by ``segmenter``
    when the config says ``real`` (``None`` there: the pairs are not scored, which only a
    filter that drops no pair by its scores allows)."""
    syn = run.synthetic(fraction)
    syn_cfg = replace(plan.synthesis, n=plan.experiment.n_synthetic)
    if syn_cfg.filter.segmenter == REAL_CELL:  # this run's cell (the fingerprint keeps "real")
        if segmenter is None and syn_cfg.filter.selects_by_segmenter:
            raise NudiffError("the pair filter ranks by a segmenter: give the reference cell's")
        path = None if segmenter is None else str(segmenter)
        syn_cfg = replace(syn_cfg, filter=replace(syn_cfg.filter, segmenter=path))
    if synthetic_done(plan, run, fraction):
        return syn
    samples = train_models(plan, run, data_dir, fraction, timed)
    # The real images synthesis may look at (mosaic, stain reference, filter percentiles) are
    # the labeled subset's: never the held-out images, which may be the test images.
    subset_dir = write_subset_folder(samples, run.subset(fraction))
    log(f"synthesizing {syn_cfg.n} pairs for {fraction:.0%}")
    timed(
        f"{fraction_tag(fraction)}/synthesize",
        lambda: synthesize(
            run.model_run(fraction, "structure"),
            run.model_run(fraction, "image"),
            syn,
            syn_cfg,
            real_dir=subset_dir,
        ),
    )
    return syn


def _made_with(saved: dict | None, cfg: CopyPasteConfig, n: int, where: Path) -> bool:
    """Whether a copy-paste set's manifest ``config`` is ``n`` patches of ``cfg`` (field by
    field, :func:`nudiff.config.differences`; keys added since count as their defaults)."""
    saved = dict(saved or {})
    try:
        made = from_dict(CopyPasteConfig, {k: v for k, v in saved.items() if k != "n"}, str(where))
    except DataError:  # a key this version no longer has: made otherwise
        return False
    return saved.get("n") == n and not differences(made, cfg)


def write_subset_folder(samples: list, folder: Path) -> Path:
    """The labeled subset as a paired folder (what synthesis may compare with)."""
    for s in samples:
        if not (folder / "labels" / f"{s.name}.png").exists():
            write_image(folder / "images" / f"{s.name}.png", s.image)
            write_instance_map(folder / "labels" / f"{s.name}.png", s.instance_map)
    return folder


def copypaste_set(plan: Plan, run: RunLayout, real: list, fraction: float) -> list:
    """The fraction's copy-paste patches (one set per fraction, shared by its seeds), written
    once to the run's ``copypaste/f{fraction}/`` as a paired folder with manifest and mosaic."""
    cfg, n = plan.experiment.copypaste, plan.experiment.n_synthetic
    folder = run.copypaste(fraction)
    manifest = folder / "manifest.json"
    with run.lock(f"{fraction_tag(fraction)}_copypaste"):
        if manifest.exists() and _made_with(read_json(manifest).get("config"), cfg, n, manifest):
            return load_folder(folder, progress=False)
        t = time.time()
        samples, counts = copy_paste_set(real, n, cfg)
        for s in samples:
            write_image(folder / "images" / f"{s.name}.png", s.image)
            write_instance_map(folder / "labels" / f"{s.name}.png", s.instance_map)
        tiles = [t for s in samples[:8] for t in (s.image, overlay(s.image, s.instance_map))]
        write_image(folder / "mosaic.png", mosaic(tiles, ncols=8))
        write_json(
            manifest,
            {
                "config": to_dict(cfg) | {"n": n},
                "pasted": counts,
                "mean_pasted": float(np.mean(counts)),
                "seconds": round(time.time() - t, 1),
            },
        )
    log(
        f"copy-paste: {n} patches for {fraction:.0%}, {np.mean(counts):.1f} nuclei pasted on "
        "average"
    )
    return samples
