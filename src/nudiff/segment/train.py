"""Train the segmenter: ``train_segmenter(cfg, out_dir, real, synthetic, val)``.

Read top to bottom: data stays in memory; each batch item is drawn from the real samples
with probability ``train.real_ratio`` (else from the synthetic ones), cropped and augmented
(:mod:`nudiff.segment.augment`, targets after geometry); the loss is MONAI's
``HoVerNetLoss``; AdamW with warm-up + cosine, gradient clipping, bf16 autocast through
``accelerate`` (the same code runs on GPUs). Every ``val_every`` steps the whole validation
images are segmented with the tiled predictor and scored; the checkpoint with the best mean
PQ is exported as ``out_dir/model/`` (model selection on validation only; without
validation images, the final weights). The skeleton (resume, log, checkpoints) is
:func:`nudiff.training.run_steps`; this module holds the step, the validation and the data
(:class:`SegmenterSteps`). Layout of ``out_dir``::

    model/            model.safetensors + config.yaml (a nudiff.model_folder: the config, and
                      its info: step, validation metrics, the post-processing search)
    checkpoints/      step_0000500/ ... (newest ``keep_checkpoints``), for --resume
    train_log.csv     step, loss, lr, steps/s, loss parts, val_* metrics
    tb/               TensorBoard events
    config.yaml       the full configuration of the run
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nudiff.metrics import METRICS, instance_metrics, mean_metrics
from nudiff.model_folder import read_model_folder, save_model_folder
from nudiff.segment.augment import augmented_crop, color_augment
from nudiff.segment.config import SegmentConfig
from nudiff.segment.loss import HoVerNetLossParts, structure_targets
from nudiff.segment.model import build_segmenter, image_to_tensor
from nudiff.segment.predict import (
    load_segmenter,
    model_dir,
    predict_with_config,
    structure_with_config,
)
from nudiff.structure import decode
from nudiff.training import (
    LogMeter,
    Run,
    adamw,
    begin,
    newest_checkpoint,
    run_steps,
    start_run,
    warmup_cosine,
)
from nudiff.utils import NudiffError

LOSS_PARTS = ("np_dice", "np_ce", "hv_mse", "hv_msge")
LOG_FIELDS = (*LOSS_PARTS, *(f"val_{m}" for m in METRICS))  # after step, loss, lr, steps_per_s


# --- sampling ----------------------------------------------------------------------------


def sample_areas(samples: Sequence) -> np.ndarray:
    """Pixel area of each sample (what a batch draw is weighted by)."""
    return np.array([s.instance_map.size for s in samples], dtype=np.float64)


def choose_items(
    rng: np.random.Generator,
    n: int,
    real_areas: np.ndarray,
    syn_areas: np.ndarray | None,
    real_ratio: float | None,
) -> list[tuple[str, int]]:
    """``n`` draws of ``("real" | "synthetic", index)``.

    With ``real_ratio`` each draw is real with that probability, else synthetic; with
    ``None`` (or no synthetic samples) both pools form one union. Within a pool, samples
    are drawn in proportion to their pixel area (a 1000-px image holds more crops than a
    256-px patch).
    """
    if syn_areas is None or len(syn_areas) == 0:
        syn_areas, real_ratio = np.zeros(0), 1.0
    if real_ratio is None:
        real_ratio = real_areas.sum() / (real_areas.sum() + syn_areas.sum())
    out = []
    for _ in range(n):
        real = rng.random() < real_ratio
        areas = real_areas if real else syn_areas
        out.append(
            ("real" if real else "synthetic", int(rng.choice(len(areas), p=areas / areas.sum())))
        )
    return out


def make_batch(
    pools: dict[str, Sequence],
    items: list[tuple[str, int]],
    cfg: SegmentConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Augmented crops of the chosen samples: images uint8 (B, S, S, 3), structures float32
    (B, 3, S, S)."""
    crops = [
        augmented_crop(
            pools[pool][i].image,
            pools[pool][i].instance_map,
            cfg.train.crop_size,
            rng,
            cfg.augment,
            cfg.train.target_context,
        )
        for pool, i in items
    ]
    return np.stack([c[0] for c in crops]), np.stack([c[1] for c in crops])


# --- validation ----------------------------------------------------------------------------


def validate(model: torch.nn.Module, cfg: SegmentConfig, val: Sequence) -> dict[str, float]:
    """Mean of the per-image metrics (Dice, AJI, AJI+, DQ, SQ, PQ) on whole validation images."""
    per_image = {}
    for i, s in enumerate(val):
        pred, _ = predict_with_config(model, cfg, s.image)
        per_image[getattr(s, "name", str(i))] = instance_metrics(s.instance_map, pred)
    return mean_metrics(per_image)


POST_GRID = {
    "median_size": (1, 3),
    "center_threshold": (0.2, 0.3, 0.4, 0.5),
    "edge_threshold": (0.05, 0.1, 0.15, 0.3),
}
POST_SOBEL = (11, 21)  # HoVer-Net's watershed (DecodeParams.method="hovernet") candidates


def post_candidates() -> list[dict[str, Any]]:
    """The post-processing settings :func:`tune_post_processing` tries: nudiff's decoder
    over ``POST_GRID``, then HoVer-Net's with each Sobel kernel of ``POST_SOBEL``."""
    grid = [
        {"method": "nudiff", **dict(zip(POST_GRID, values))}
        for values in itertools.product(*POST_GRID.values())
    ]
    return grid + [{"method": "hovernet", "sobel_size": k} for k in POST_SOBEL]


def tune_post_processing(run_dir: str | os.PathLike, val: Sequence) -> dict[str, Any]:
    """Search the post-processing of the exported model on ``val`` (mean PQ) over
    :func:`post_candidates`.

    The network runs once per image; only :func:`nudiff.structure.decode` is repeated. The
    best thresholds, if they beat the configured ones, are written into the model folder's
    config (``post`` section); its ``info`` records the search (``post_tuning``).
    """
    folder = read_model_folder(model_dir(run_dir), SegmentConfig, ("segmenter",))
    model, cfg = load_segmenter(run_dir)
    structures = [structure_with_config(model, cfg, s.image) for s in val]

    def score(params) -> dict[str, float]:
        return mean_metrics(
            {
                str(k): instance_metrics(s.instance_map, decode(st, params))
                for k, (s, st) in enumerate(zip(val, structures))
            }
        )

    best_post, best = None, score(cfg.post)
    baseline = best
    for candidate in post_candidates():
        m = score(dataclasses.replace(cfg.post, **candidate))
        if m["pq"] > best["pq"]:
            best_post, best = candidate, m
    if best_post is not None:
        cfg.post = dataclasses.replace(cfg.post, **best_post)
    tuning = {
        "grid": POST_GRID,
        "hovernet_sobel": POST_SOBEL,
        "chosen": best_post,
        "val_before": baseline,
        "val_after": best,
    }
    info = folder.info | {"post_tuning": tuning}
    save_model_folder(folder.path, folder.weights, cfg, "segmenter", info)
    return tuning


# --- optimisation ----------------------------------------------------------------------------


def lr_factor(cfg: SegmentConfig):
    """Multiplier of ``train.lr`` after ``step`` optimizer steps (a function of ``step``):
    linear warm-up, then cosine to ``min_lr_ratio`` (or constant)."""
    t = cfg.train
    return warmup_cosine(
        t.steps, t.warmup_steps, t.min_lr_ratio, constant=t.schedule == "constant"
    )


def weighted_loss_parts(
    loss_fn, prediction: dict, target: dict, synthetic: list[bool], weight: float
) -> dict[str, torch.Tensor]:
    """Loss parts of a batch whose items ``synthetic[i]`` count ``weight`` times a real item.

    ``weight == 1`` or a one-pool batch: the plain batch loss. Otherwise the parts are computed
    on the real and synthetic items apart and averaged with weights ``n_real`` and
    ``weight * n_synthetic``.
    """
    flags = torch.tensor(synthetic)
    n_syn = int(flags.sum())
    if weight == 1.0 or n_syn in (0, len(synthetic)):
        return loss_fn.parts(prediction, target)
    total = (len(synthetic) - n_syn) + weight * n_syn
    out: dict[str, torch.Tensor] = {}
    for mask, w in ((~flags, (len(synthetic) - n_syn) / total), (flags, weight * n_syn / total)):
        idx = mask.nonzero().squeeze(1)
        part = loss_fn.parts(
            {k: v[idx] for k, v in prediction.items()}, {k: v[idx] for k, v in target.items()}
        )
        for k, v in part.items():
            out[k] = out.get(k, 0.0) + w * v
    return out


def train_segmenter(
    cfg: SegmentConfig,
    out_dir: str | os.PathLike,
    real: Sequence,
    synthetic: Sequence | None = None,
    val: Sequence | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train a segmenter; return ``out_dir`` (the best/final model is in ``out_dir/model``).

    Args:
        cfg: the ``segment`` configuration.
        real, synthetic: samples with ``.image`` uint8 (H, W, 3) and ``.instance_map`` int
            (H, W) (e.g. ``nudiff.data.dataset.Sample``); any sizes, smaller than the crop
            is mirror-padded.
        val: whole images for validation and model selection (mean PQ); ``None``: none.
        resume: continue from the newest checkpoint in ``out_dir/checkpoints`` exactly
            (same weights, optimizer, schedule, sampling and augmentation stream).
    """
    out, t = Path(out_dir), cfg.train
    if not real:
        raise NudiffError("no real training samples")
    _check_samples(real, "real")
    _check_samples(synthetic or [], "synthetic")
    resume_from = newest_checkpoint(out, resume)

    accelerator = begin(t)
    model = build_segmenter(cfg)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = adamw(model, t, lr_factor(cfg))
    # each process draws its own batches (data parallel); the first one's stream is the reference
    rng = np.random.default_rng([t.seed, accelerator.process_index])
    run = start_run(
        out,
        cfg,
        accelerator,
        {"model": model},
        optimizer,
        scheduler,
        resume_from,
        generator=rng,
        log_fields=LOG_FIELDS,
    )
    loop = SegmenterSteps(cfg, run, real, synthetic or [], val)
    model.train()
    run_steps(run, loop, t.steps, t.val_every if val else None, "segment", loop.meter, progress)
    return out


class SegmenterSteps:
    """The segmenter's part of :func:`nudiff.training.run_steps`: a step on augmented crops
    (real or synthetic by ``train.real_ratio``), validation with model selection by mean PQ,
    the best (or final) weights as its model; the log sums are kept in each checkpoint."""

    def __init__(
        self,
        cfg: SegmentConfig,
        run: Run,
        real: Sequence,
        synthetic: Sequence,
        val: Sequence | None,
    ):
        self.cfg, self.run, self.val = cfg, run, val
        self.pools = {"real": real, "synthetic": synthetic}
        self.real_areas, self.syn_areas = sample_areas(real), sample_areas(synthetic)
        self.loss_fn = HoVerNetLossParts()
        # model selection, and any other entry of the resumed checkpoint, carried on
        self.kept = {k: v for k, v in run.state.items() if k not in ("log_sums", "log_count")}
        self.kept = self.kept or {"best_pq": -1.0, "best_step": None}
        self.meter = LogMeter(dict(run.state.get("log_sums", {})), run.state.get("log_count", 0))
        self.lr = 0.0

    def step(self, step: int) -> dict[str, torch.Tensor]:
        t, rng, device = self.cfg.train, self.run.generator, self.run.accelerator.device
        with_syn = t.synthetic_until is None or step - 1 < t.synthetic_until
        syn_areas = self.syn_areas if with_syn else None
        items = choose_items(rng, t.batch_size, self.real_areas, syn_areas, t.real_ratio)
        images, structures = make_batch(self.pools, items, self.cfg, rng)
        x = color_augment(image_to_tensor(images, device), rng, self.cfg.augment)
        if self.cfg.model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        target = structure_targets(torch.from_numpy(structures).to(device))
        with self.run.accelerator.autocast():
            prediction = self.run.model(x)
        synthetic = [p == "synthetic" for p, _ in items]
        parts = weighted_loss_parts(
            self.loss_fn, prediction, target, synthetic, t.synthetic_weight
        )
        self.lr = self.run.update(sum(parts.values()))
        return {
            k: v.detach() for k, v in parts.items()
        }  # kept as tensors: no device sync per step

    def out_of_time(self) -> bool:
        return False

    def log_row(self, means: dict[str, float]) -> dict[str, float]:
        # the LR of the row's last update, as in the diffusion log
        return means | {"loss": sum(means.values()), "lr": self.lr}

    def evaluate(self, step: int) -> dict[str, float]:
        """Mean metrics on the validation images; the best mean PQ so far is exported."""
        model = self.run.accelerator.unwrap_model(self.run.model)
        metrics = validate(model, self.cfg, self.val)
        if metrics["pq"] > self.kept["best_pq"]:
            self.kept["best_pq"], self.kept["best_step"] = metrics["pq"], step
            _export(self.run.out_dir, model, self.cfg, step, metrics)
        return metrics

    def checkpoint_state(self, step: int) -> dict:
        sums = {k: float(v) for k, v in self.meter.sums.items()}
        return self.kept | {"log_sums": sums, "log_count": self.meter.count}

    def export(self, step: int) -> None:
        """The final weights unless validation selected some; then the post-processing search."""
        model = self.run.accelerator.unwrap_model(self.run.model)
        if not self.val or not (self.run.out_dir / "model").exists():
            _export(self.run.out_dir, model, self.cfg, step, None)
        if self.val and self.cfg.train.tune_post:
            tune_post_processing(self.run.out_dir, self.val)


def _export(
    out: Path, model: torch.nn.Module, cfg: SegmentConfig, step: int, metrics: dict | None
) -> None:
    """``out/model``: a model folder of kind ``segmenter`` (:mod:`nudiff.model_folder`)."""
    info = {"step": step, "selected_by": "val_pq" if metrics else "final", "val": metrics}
    save_model_folder(out / "model", model, cfg, "segmenter", info)


def _check_samples(samples: Sequence, what: str) -> None:
    for i, s in enumerate(samples):
        img, inst = np.asarray(s.image), np.asarray(s.instance_map)
        name = getattr(s, "name", f"#{i}")
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
            raise NudiffError(
                f"{what} sample {name}: image must be uint8 (H, W, 3), got {img.dtype} {img.shape}"
            )
        if inst.shape != img.shape[:2]:
            raise NudiffError(
                f"{what} sample {name}: instance map {inst.shape} != image {img.shape[:2]}"
            )
