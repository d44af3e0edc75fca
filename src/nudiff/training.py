"""What both training loops share (diffusion models and segmenter): the base of their train
configs, the learning-rate schedule, the run log, and the skeleton they run.

The skeleton, read top to bottom::

    resume_from = newest_checkpoint(out_dir, resume)          # None: from scratch
    accelerator = begin(tc)                                   # the accelerator, then the seeds
    model = ...                                               # the loop's network
    optimizer, lr_schedule = adamw(model, tc, lr_factor)
    run = start_run(out_dir, cfg, accelerator, {"model": model}, optimizer, lr_schedule,
                    resume_from)                              # resume, prepare, config, log
    run_steps(run, loop, end, evaluate_every, desc)           # step, log, evaluate, checkpoint,
                                                              # then loop.export (model folder)

A loop (:class:`Loop`) supplies only what is its own: one optimizer step, its log columns,
its validation, the state it keeps in a checkpoint and its export. The loops are
``nudiff.diffusion.train.train`` and ``nudiff.segment.train.train_segmenter``; their
checkpoints and the RNG states in them are written by :mod:`nudiff.checkpoint`, their exported
models by :mod:`nudiff.model_folder`.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from nudiff.config import BOOKKEEPING
from nudiff.utils import NudiffError, make_accelerator, progress_bar, seed_everything

if TYPE_CHECKING:  # torch is imported where a run starts: the config modules import this one
    import numpy as np
    import torch

PRECISIONS = ("no", "bf16", "fp16")
LOG_FILE = "train_log.csv"
# read until nudiff.config.REMOVED_IN: the segmenter's log before it was train_log.csv
LEGACY_LOG_FILES = ("log.csv",)
# columns renamed since: old name -> new name (read from logs of earlier runs on resume)
LEGACY_LOG_COLUMNS = {"it_per_s": "steps_per_s"}


@dataclass
class TrainConfig:
    """Fields of both training loops (``DiffusionTrainConfig`` and ``SegmentTrainConfig`` extend
    this one and may change a default).

    steps: optimizer steps in total (the schedule spans them).
    batch_size: samples per step and process.
    lr / warmup_steps / weight_decay: AdamW with linear warm-up, then cosine decay
        (:func:`warmup_cosine`).
    grad_clip: max global gradient norm (0 disables).
    precision: ``"bf16"`` / ``"fp16"`` autocast (through accelerate) or ``"no"`` (fp32); bf16
        on a device without native bf16 runs fp32 (:func:`nudiff.utils.resolve_precision`).
    seed: seeds the weights and every random draw of the loop.
    checkpoint_every / keep_checkpoints: save every N steps, keep the newest K.
    log_every: a row of ``train_log.csv`` (and TensorBoard) every N steps.
    """

    steps: int = 3000
    batch_size: int = 16
    lr: float = 2e-4
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    precision: str = "bf16"
    seed: int = 0
    checkpoint_every: int = field(default=500, metadata=BOOKKEEPING)
    keep_checkpoints: int = field(default=3, metadata=BOOKKEEPING)
    log_every: int = field(default=50, metadata=BOOKKEEPING)

    def __post_init__(self) -> None:
        check(self.precision in PRECISIONS, f"train.precision must be one of {PRECISIONS}")
        check(
            self.steps >= 1 and self.batch_size >= 1,
            "train.steps and train.batch_size must be >= 1",
        )
        check(self.warmup_steps >= 0, "train.warmup_steps must be >= 0")
        check(
            min(self.checkpoint_every, self.keep_checkpoints, self.log_every) >= 1,
            "train.checkpoint_every, keep_checkpoints and log_every must be >= 1",
        )


def check(ok: bool, message: str) -> None:
    """Raise a one-line :class:`NudiffError` with ``message`` unless ``ok`` (config checks)."""
    if not ok:
        raise NudiffError(message)


def warmup_cosine(
    steps: int,
    warmup_steps: int,
    min_lr_ratio: float = 0.0,
    constant: bool = False,
    progress: Callable[[], float] | None = None,
) -> Callable[[int], float]:
    """The LR factor after ``step`` optimizer steps: linear warm-up over ``warmup_steps``, then
    cosine from 1 to ``min_lr_ratio`` at ``steps`` (``constant``: 1 after the warm-up).

    ``progress``: another measure of how far training is, in [0, 1] (the share of a time budget
    spent); the cosine then follows the larger of it and the steps' progress.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if constant:
            return 1.0
        done = (step - warmup_steps) / max(1, steps - warmup_steps)
        if progress is not None:
            done = max(done, progress())
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    return factor


class RunLog:
    """The run's ``train_log.csv`` (columns ``step, loss, lr, steps_per_s`` then the loop's
    own) and TensorBoard events in ``tb/`` (``train/<name>``; ``val/<name>`` for ``val_*``).

    On resume (``start_step > 0``) the rows after ``start_step`` (from a killed run) are
    dropped; a log of an earlier version (``log.csv``, ``it_per_s``) is carried over.
    ``enabled=False`` (other processes than the main one): writes nothing.
    """

    BASE_FIELDS = ("step", "loss", "lr", "steps_per_s")

    def __init__(
        self,
        out_dir: str | os.PathLike,
        extra_fields: Sequence[str] = (),
        start_step: int = 0,
        enabled: bool = True,
    ):
        self.path = Path(out_dir) / LOG_FILE
        self.fields = (*self.BASE_FIELDS, *extra_fields)
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        rows = _earlier_rows(Path(out_dir)) if start_step else []
        rows = [r for r in rows if int(r["step"]) <= start_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        # imported here: tensorboard takes seconds to import and only training needs it
        from torch.utils.tensorboard import SummaryWriter

        purge_step = start_step + 1 if start_step else None
        self.tb = SummaryWriter(str(Path(out_dir) / "tb"), purge_step=purge_step)

    def write(self, step: int, values: dict[str, float]) -> None:
        """Append a row (columns not in ``values`` stay empty) and the values to TensorBoard."""
        if not self.enabled:
            return
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(
                {"step": step, **values}
            )
        for k, v in values.items():
            group = "val" if k.startswith("val_") else "train"
            self.tb.add_scalar(f"{group}/{k.removeprefix('val_')}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _earlier_rows(out_dir: Path) -> list[dict[str, str]]:
    for name in (LOG_FILE, *LEGACY_LOG_FILES):
        if (out_dir / name).is_file():
            with (out_dir / name).open(newline="") as f:
                rows = csv.DictReader(f)
                return [{LEGACY_LOG_COLUMNS.get(k, k): v for k, v in row.items()} for row in rows]
    return []


def read_log(out_dir: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a run's log as strings by column (``log.csv`` of earlier segmenter runs,
    ``it_per_s`` read as ``steps_per_s``)."""
    return _earlier_rows(Path(out_dir))


# --- the skeleton both loops run ---------------------------------------------------------


def newest_checkpoint(out_dir: str | os.PathLike, resume: bool) -> Path | None:
    """The checkpoint a run continues from: the newest complete one in ``out_dir`` if
    ``resume`` (``None``: there is none, train from scratch). Deletes the temporary folders a
    kill during a save left.

    Raises:
        NudiffError: ``out_dir`` holds checkpoints but ``resume`` is false.
    """
    from nudiff import checkpoint as ckpt

    ckpt.remove_partial(out_dir)
    existing = ckpt.list_checkpoints(out_dir)
    if existing and not resume:
        raise NudiffError(
            f"{out_dir} already holds checkpoints; pass --resume or choose another --out"
        )
    return existing[-1][1] if existing else None


def begin(tc: TrainConfig):
    """The run's ``accelerate.Accelerator`` (``tc.precision``), then python, numpy and torch
    seeded with ``tc.seed``: call it before building the model."""
    accelerator = make_accelerator(tc.precision)
    seed_everything(tc.seed)
    return accelerator


def adamw(model: torch.nn.Module, tc: TrainConfig, lr_factor: Callable[[int], float]):
    """AdamW over ``model``'s parameters (``tc.lr``, ``tc.weight_decay``) and its LR schedule:
    ``tc.lr * lr_factor(step)`` (:func:`warmup_cosine`)."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)


@dataclass
class Run:
    """One training run as :func:`start_run` sets it up and :func:`run_steps` drives it.

    model / optimizer: prepared by accelerate (what a step calls). weights: the un-prepared
    modules saved in each checkpoint (file stem -> module: ``model``, the diffusion loop's
    ``ema``). generator: the loop's own numpy generator, saved with the checkpoint (or None).
    start: the step resumed from (0: from scratch). state: the loop's own entries of that
    checkpoint's ``state.json`` (empty from scratch).
    """

    out_dir: Path
    tc: TrainConfig
    accelerator: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_schedule: Any
    weights: dict[str, torch.nn.Module]
    generator: np.random.Generator | None
    start: int
    state: dict[str, Any]
    log: RunLog

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def update(self, loss: torch.Tensor) -> float:
        """Backward, clip to ``tc.grad_clip``, optimizer and LR-schedule step; returns the LR
        this update used."""
        self.accelerator.backward(loss)
        if self.tc.grad_clip > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.tc.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.lr_schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        return lr


def start_run(
    out_dir: str | os.PathLike,
    config: Any,
    accelerator: Any,
    weights: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer,
    lr_schedule: Any,
    resume_from: Path | None,
    generator: np.random.Generator | None = None,
    log_fields: Sequence[str] = (),
) -> Run:
    """Load ``resume_from`` (:func:`newest_checkpoint`) into the un-prepared ``weights``,
    optimizer, LR schedule, global RNGs and ``generator``; prepare ``weights["model"]`` and the
    optimizer; write ``config`` (the stage's config; its ``train`` is the run's
    :class:`TrainConfig`) to ``out_dir/config.yaml``; open the run log at the resumed step (the
    loop's ``log_fields`` after the base columns)."""
    from nudiff import checkpoint as ckpt
    from nudiff.config import save_config

    out_dir = Path(out_dir)
    state: dict[str, Any] = {}
    if resume_from is not None:
        state = ckpt.load_training_state(resume_from, weights, optimizer, lr_schedule, generator)
    start = int(state.pop("step", 0))
    scaler_state = state.pop("grad_scaler", None)
    model, optimizer = accelerator.prepare(weights["model"], optimizer)
    restore_grad_scaler(accelerator, scaler_state)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / "config.yaml")
    log = RunLog(out_dir, log_fields, start_step=start, enabled=accelerator.is_main_process)
    return Run(
        out_dir,
        config.train,
        accelerator,
        model,
        optimizer,
        lr_schedule,
        weights,
        generator,
        start,
        state,
        log,
    )


@dataclass
class LogMeter:
    """The values of the steps since the last log row: running sums (floats or tensors, kept
    as tensors so that a step needs no device sync) and their count."""

    sums: dict[str, Any] = field(default_factory=dict)
    count: int = 0

    def add(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: float(v) / self.count for k, v in self.sums.items()}

    def reset(self) -> None:
        self.sums, self.count = {}, 0


class Loop(Protocol):
    """What a training loop supplies to :func:`run_steps`."""

    def step(self, step: int) -> dict[str, Any]:
        """Train step ``step`` (:meth:`Run.update`); return the values whose means over the
        steps since the last row make the log row (:meth:`log_row`)."""

    def out_of_time(self) -> bool:
        """Whether training ends after this step (a time budget), the same in every process."""

    def log_row(self, means: dict[str, float]) -> dict[str, float]:
        """The log row (``loss``, ``lr`` and the loop's own columns) from the step values'
        means."""

    def evaluate(self, step: int) -> dict[str, float] | None:
        """Main process only: the loop's validation at ``step`` (the segmenter's scores and
        model selection, the diffusion loop's sample grid); metrics to log as ``val_*``."""

    def checkpoint_state(self, step: int) -> dict[str, Any]:
        """The loop's own JSON-able entries of checkpoint ``step``'s ``state.json``."""

    def export(self, step: int) -> None:
        """Main process only, after the last step: write the run's model folder."""


def run_steps(
    run: Run,
    loop: Loop,
    end: int,
    evaluate_every: int | None,
    desc: str,
    meter: LogMeter | None = None,
    progress: bool = True,
) -> int:
    """Train steps ``run.start + 1 .. end`` (fewer if ``loop.out_of_time()``), then
    ``loop.export``; returns the last step. After a step: a log row every ``tc.log_every``
    steps, ``loop.evaluate`` every ``evaluate_every`` (0: at the end only; ``None``: never),
    a checkpoint every ``tc.checkpoint_every`` (the newest ``tc.keep_checkpoints`` kept), each
    at the last step too. ``meter``: the log sums a resumed run carried over (else none).
    """
    tc, meter = run.tc, meter or LogMeter()
    bar = progress_bar(
        total=end, initial=run.start, desc=desc, unit="step", disable=not (progress and run.main)
    )
    step, tick = run.start, time.perf_counter()
    try:
        while step < end:
            step += 1
            meter.add(loop.step(step))
            if loop.out_of_time():  # the budget is spent: this step is the last
                end = bar.total = step
            bar.update(1)
            if step % tc.log_every == 0 or step == end:
                tick = write_log_row(run, loop, meter, step, tick, bar)
            if evaluate_every is not None and (
                step == end or (evaluate_every and step % evaluate_every == 0)
            ):
                evaluate(run, loop, step, bar)
            if step % tc.checkpoint_every == 0 or step == end:
                save_checkpoint(run, step, loop.checkpoint_state(step) if run.main else {})
                tick = time.perf_counter()  # checkpoint time is not training speed
        bar.close()  # before the export's own output (closed again on an error)
        if run.main:
            loop.export(step)
        run.accelerator.wait_for_everyone()
    finally:
        bar.close()
        run.log.close()
    return step


def write_log_row(run: Run, loop: Loop, meter: LogMeter, step: int, tick: float, bar) -> float:
    """Log the loop's row of the steps since ``tick`` (``steps_per_s`` added); returns now."""
    now = time.perf_counter()
    row = loop.log_row(meter.means()) | {"steps_per_s": meter.count / max(now - tick, 1e-9)}
    run.log.write(step, row)
    bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
    meter.reset()
    return now


def evaluate(run: Run, loop: Loop, step: int, bar) -> None:
    """``loop.evaluate`` in the main process; its metrics logged as ``val_*`` and printed."""
    run.accelerator.wait_for_everyone()
    metrics = loop.evaluate(step) if run.main else None
    if metrics:
        run.log.write(step, {f"val_{k}": v for k, v in metrics.items()})
        bar.write(f"step {step}: val " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


def restore_grad_scaler(accelerator: Any, saved: dict[str, Any] | None) -> None:
    """Put a checkpoint's fp16 loss scale back into the accelerator's grad scaler (none in
    bf16/fp32, and none saved by a run in those): a resumed fp16 run goes on from the scale it
    had reached instead of the initial 65,536, which costs it skipped steps."""
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None and saved:
        scaler.load_state_dict(saved)


def save_checkpoint(run: Run, step: int, state: dict[str, Any]) -> None:
    """Checkpoint ``step`` (:func:`nudiff.checkpoint.save_training_state`: the run's weights,
    optimizer, LR schedule, RNGs, the fp16 grad scaler when there is one and the loop's
    ``state``) from the main process, then keep the newest ``tc.keep_checkpoints``."""
    from nudiff import checkpoint as ckpt

    scaler = getattr(run.accelerator, "scaler", None)
    if scaler is not None:
        state = state | {"grad_scaler": scaler.state_dict()}
    run.accelerator.wait_for_everyone()
    if run.main:
        ckpt.save_training_state(
            run.out_dir, step, run.weights, run.optimizer, run.lr_schedule, state, run.generator
        )
        ckpt.prune(run.out_dir, run.tc.keep_checkpoints)
