"""What both training loops share (diffusion models and segmenter): the base of their train
configs, the learning-rate schedule and the run log.

The loops themselves stay explicit (``nudiff.diffusion.train.train``,
``nudiff.segment.train.train_segmenter``); their checkpoints and the RNG states in them are
written by :mod:`nudiff.checkpoint`, their exported models by :mod:`nudiff.model_folder`.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nudiff.utils import NudiffError

PRECISIONS = ("no", "bf16", "fp16")
LOG_FILE = "train_log.csv"
LEGACY_LOG_FILES = ("log.csv",)  # the segmenter's log before it was train_log.csv
# columns renamed since: old name -> new name (read from logs of earlier runs on resume)
LEGACY_LOG_COLUMNS = {"it_per_s": "steps_per_s"}


@dataclass
class TrainConfig:
    """Fields of both training loops (each loop's ``TrainConfig`` extends this one and may
    change a default).

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
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 50

    def __post_init__(self) -> None:
        check(self.precision in PRECISIONS, f"train.precision must be one of {PRECISIONS}")
        check(self.steps >= 1 and self.batch_size >= 1, "train.steps and train.batch_size must be >= 1")
        check(self.warmup_steps >= 0, "train.warmup_steps must be >= 0")
        check(min(self.checkpoint_every, self.keep_checkpoints, self.log_every) >= 1,
              "train.checkpoint_every, keep_checkpoints and log_every must be >= 1")


def check(ok: bool, message: str) -> None:
    """Raise a one-line :class:`NudiffError` with ``message`` unless ``ok`` (config checks)."""
    if not ok:
        raise NudiffError(message)


def warmup_cosine(steps: int, warmup_steps: int, min_lr_ratio: float = 0.0, constant: bool = False,
                  progress: Callable[[], float] | None = None) -> Callable[[int], float]:
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

    def __init__(self, out_dir: str | os.PathLike, extra_fields: Sequence[str] = (), start_step: int = 0,
                 enabled: bool = True):
        self.path = Path(out_dir) / LOG_FILE
        self.fields = (*self.BASE_FIELDS, *extra_fields)
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        rows = [r for r in _earlier_rows(Path(out_dir)) if int(r["step"]) <= start_step] if start_step else []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        # imported here: tensorboard takes seconds to import and only training needs it
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(Path(out_dir) / "tb"), purge_step=start_step + 1 if start_step else None)

    def write(self, step: int, values: dict[str, float]) -> None:
        """Append a row (columns not in ``values`` stay empty) and the values to TensorBoard."""
        if not self.enabled:
            return
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow({"step": step, **values})
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
                return [{LEGACY_LOG_COLUMNS.get(k, k): v for k, v in row.items()} for row in csv.DictReader(f)]
    return []


def read_log(out_dir: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a run's log as strings by column (``log.csv`` of earlier segmenter runs,
    ``it_per_s`` read as ``steps_per_s``)."""
    return _earlier_rows(Path(out_dir))
