"""One training loop for both diffusion models (structure and image), read top to bottom.

Per step: draw windows (:class:`PatchSampler`), build the model input (structure model:
[2 sem - 1, h, v]; image model: image / 127.5 - 1 with the condition of the structure, dropped
with probability ``cond_drop_prob``), noise it at a uniform timestep (diffusers' DDPM
forward process), regress the noise (or v, ``prediction_type``; MSE, optionally Min-SNR-gamma
weighted), AdamW step with clipping, cosine LR, EMA update. With ``model.self_condition``, half
the steps first estimate x_0 without gradient and feed it back to the network.

The skeleton (resume, log, checkpoints, export) is :func:`nudiff.training.run_steps`; this
module holds the step (:class:`DiffusionSteps`), its data and its sample grid.
Runs on CPU, one GPU or many (``accelerate launch``) unchanged; mixed precision through
``accelerate``. Several CPU processes (DDP over gloo) need ``ACCELERATE_USE_CPU=true`` with
``torchrun`` (checked: 2 processes, resume included). All randomness of a step comes from
generators seeded by (seed, step, process), so a resumed run continues exactly as an
uninterrupted one.

Writes into ``out_dir``: ``config.yaml`` (at start), ``train_log.csv`` and ``tb/``
(:class:`nudiff.training.RunLog`), ``samples/step_*.png`` grids, ``checkpoints/step_*`` (see
:mod:`nudiff.checkpoint`) and ``model/`` (EMA weights + config.yaml, a
:mod:`nudiff.model_folder`: what the samplers load).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nudiff.config import differences, load_config
from nudiff.data.io import write_image
from nudiff.diffusion.config import DiffusionConfig, DiffusionTrainConfig
from nudiff.diffusion.data import PatchSampler
from nudiff.diffusion.ema import EMA
from nudiff.diffusion.networks import Denoiser, condition_tensor, save_denoiser
from nudiff.diffusion.sample import sample_images, sample_structures
from nudiff.diffusion.schedule import min_snr_weights, predicted_x0, training_scheduler
from nudiff.model_folder import read_model_folder
from nudiff.pictures import mosaic, structure_rgb
from nudiff.training import (
    Run,
    adamw,
    begin,
    newest_checkpoint,
    run_steps,
    start_run,
    warmup_cosine,
)
from nudiff.utils import DataError, NudiffError

GRID_SAMPLES = 8
GRID_STEPS = 20


# what a model to fine-tune must share with the configuration (its training and sampling may
# differ)
INIT_SECTIONS = (
    "model",
    "data",
    "num_train_timesteps",
    "schedule",
    "beta_start",
    "beta_end",
    "prediction_type",
    "zero_terminal_snr",
)


def init_weights(cfg: DiffusionConfig, folder: str | Path) -> dict:
    """The weights of the model folder ``folder`` (a shipped model) to fine-tune from, checked
    against ``cfg``: same kind, network, windows and noise schedule; else a one-line
    :class:`DataError` naming the folder and what differs."""
    m = read_model_folder(Path(folder), DiffusionConfig, (cfg.model.kind,))
    differ = [d for d in differences(m.config, cfg) if d.split(".")[0] in INIT_SECTIONS]
    if differ:
        raise DataError(
            folder,
            f"cannot fine-tune from it: its {', '.join(differ)} differ from "
            "the configuration's (another network or scale)",
        )
    return m.weights


def train(
    cfg: DiffusionConfig,
    out_dir: str | Path,
    images: np.ndarray | None,
    instance_maps: np.ndarray,
    resume: bool = False,
    stop_at_step: int | None = None,
) -> Path:
    """Train the model described by ``cfg`` and return ``out_dir/model``.

    Args:
        cfg: ``cfg.model.kind`` selects the structure or the image model.
        out_dir: run folder (created).
        images: uint8 (N, H, W, 3) RGB patches; required by the image model, ignored otherwise.
        instance_maps: int (N, H, W) instance maps of the same patches, 0 = background.
        resume: continue from the newest complete checkpoint in ``out_dir`` (from scratch if
            there is none). Without it, an ``out_dir`` holding checkpoints is an error.
        stop_at_step: stop (with a checkpoint and ``model/``) after this step although the LR
            schedule spans ``cfg.train.steps``: train in chunks, resume later.
    """
    out_dir, tc = Path(out_dir), cfg.train
    conditional = cfg.model.kind == "image"
    if conditional and images is None:
        raise DataError("images", "the image model needs images paired with the instance maps")
    resume_from = newest_checkpoint(out_dir, resume)
    if resume_from is not None:
        _check_same_model(cfg, out_dir)

    accelerator = begin(tc)
    data = PatchSampler(cfg.data, instance_maps, images if conditional else None)
    model, ema = networks(cfg, fine_tune=resume_from is None)
    clock = WallClock(tc.max_minutes)
    lr_factor = warmup_cosine(tc.steps, tc.warmup_steps, progress=clock.fraction)
    optimizer, lr_schedule = adamw(model, tc, lr_factor)
    run = start_run(
        out_dir,
        cfg,
        accelerator,
        {"model": model, "ema": ema.model},
        optimizer,
        lr_schedule,
        resume_from,
    )
    ema.model.to(accelerator.device)
    if resume_from is not None:  # what the loop keeps besides: EMA update count, minutes spent
        clock.before_s = float(run.state.get("elapsed_s") or 0.0)
        ema.num_updates = run.state["ema_updates"]
    end = min(tc.steps, stop_at_step) if stop_at_step is not None else tc.steps
    if time_is_up(clock, accelerator):  # a resumed run whose time budget was spent: no step
        end = run.start
    loop = DiffusionSteps(cfg, run, data, ema, clock, end)
    try:
        run_steps(run, loop, end, tc.sample_every, f"train {cfg.model.kind}")
    finally:
        accelerator.end_training()
    return out_dir / "model"


def networks(cfg: DiffusionConfig, fine_tune: bool) -> tuple[Denoiser, EMA]:
    """The trained network (from ``train.init_from`` if ``fine_tune`` and set; compiled if
    ``train.compile``) and its EMA copy."""
    model = Denoiser(cfg)
    if fine_tune and cfg.train.init_from:
        model.load_state_dict(init_weights(cfg, cfg.train.init_from))
    ema = EMA(model, cfg.train.ema_decay)
    if cfg.train.compile:  # in place, after the EMA's copy: state-dict keys, checkpoints unchanged
        model.net.compile(mode=cfg.train.compile)
    return model, ema


class DiffusionSteps:
    """The diffusion loop's part of :func:`nudiff.training.run_steps`: a denoising step on the
    windows of the step, a sample grid as its validation, the EMA weights as its model."""

    def __init__(
        self,
        cfg: DiffusionConfig,
        run: Run,
        data: PatchSampler,
        ema: EMA,
        clock: WallClock,
        end: int,
    ):
        self.cfg, self.run, self.data, self.ema, self.clock = cfg, run, data, ema, clock
        self.process = run.accelerator.process_index
        self.windows = step_windows(data, cfg.train, self.process, run.start + 1, end)
        self.noise_schedule = training_scheduler(cfg)
        self.lr = 0.0

    def step(self, step: int) -> dict[str, float]:
        structures, imgs = next(self.windows)
        _, gen = step_generators(self.cfg.train.seed, step, self.process)
        xt, t, target, cond = self.noisy_batch(structures, imgs, gen)
        loss = self.denoising_loss(xt, t, target, cond, gen)
        self.lr = self.run.update(loss)
        self.ema.update(self.run.accelerator.unwrap_model(self.run.model))
        return {"loss": loss.item()}

    def noisy_batch(self, structures: np.ndarray, imgs: np.ndarray | None, gen: torch.Generator):
        """(x_t, t, the regression target, the condition or None) on the accelerator's device:
        x_0 (structure model: [2 sem - 1, h, v]; image model: image / 127.5 - 1, its condition
        dropped with probability ``cond_drop_prob``) noised at a uniform timestep."""
        cfg, tc, device = self.cfg, self.cfg.train, self.run.accelerator.device
        s = torch.as_tensor(structures)
        t = torch.randint(0, cfg.num_train_timesteps, (tc.batch_size,), generator=gen)
        if cfg.model.kind == "image":
            x0 = torch.as_tensor(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
            drop = torch.rand(tc.batch_size, generator=gen) < tc.cond_drop_prob
            cond = condition_tensor(s, drop).to(device)
        else:
            x0 = torch.cat([2 * s[:, :1] - 1, s[:, 1:]], dim=1)
            cond = None
        noise = torch.randn(x0.shape, generator=gen)
        xt = self.noise_schedule.add_noise(x0, noise, t)
        if cfg.prediction_type == "epsilon":
            target = noise
        else:
            target = self.noise_schedule.get_velocity(x0, noise, t)
        return xt.to(device), t.to(device), target.to(device), cond

    def denoising_loss(self, xt, t, target, cond, gen: torch.Generator) -> torch.Tensor:
        """MSE of the prediction (Min-SNR-gamma weighted if set); with self-conditioning, half
        the steps first estimate x_0 without gradient and feed it back."""
        cfg, model, accelerator = self.cfg, self.run.model, self.run.accelerator
        alphas = self.noise_schedule.alphas_cumprod
        x0_prev = None
        if cfg.model.self_condition and bool(torch.rand(1, generator=gen) < 0.5):
            with torch.no_grad(), accelerator.autocast():  # the network's own first estimate
                first = model(xt, t, cond).float()
            x0_prev = predicted_x0(first, xt, t, alphas, cfg.prediction_type).clamp(-1, 1)
        with accelerator.autocast():
            pred = model(xt, t, cond, x0_prev)
        per_sample = F.mse_loss(pred.float(), target, reduction="none").mean(dim=(1, 2, 3))
        if cfg.train.min_snr_gamma is not None:
            gamma = cfg.train.min_snr_gamma
            per_sample = per_sample * min_snr_weights(t, alphas, gamma, cfg.prediction_type)
        return per_sample.mean()

    def out_of_time(self) -> bool:
        return time_is_up(self.clock, self.run.accelerator)

    def log_row(self, means: dict[str, float]) -> dict[str, float]:
        return {"loss": means["loss"], "lr": self.lr}  # the LR of the row's last update

    def evaluate(self, step: int) -> None:
        write_sample_grid(self.run.out_dir, step, self.ema.model, self.data, self.cfg.train.seed)

    def checkpoint_state(self, step: int) -> dict:
        """The EMA's update count and the minutes spent (the grad scaler: the skeleton's)."""
        return {
            "ema_updates": self.ema.num_updates,
            "elapsed_s": round(self.clock.elapsed_s(), 1),
            "data_sampler": {
                "seeding": "SeedSequence([seed, step, process])",
                "next_step": step + 1,
            },
        }

    def export(self, step: int) -> None:
        """The EMA weights + config, replaced atomically: what the samplers load."""
        save_denoiser(self.ema.model, self.run.out_dir / "model", info={"step": step})


class WallClock:
    """Training minutes against ``DiffusionTrainConfig.max_minutes`` (a resumed run adds its
    earlier minutes, kept in the checkpoint). Without a budget, ``fraction()`` is 0 and ``up()``
    False."""

    def __init__(self, max_minutes: float | None):
        self.budget_s = None if max_minutes is None else 60.0 * max_minutes
        self.before_s = 0.0
        self.t0 = time.perf_counter()

    def elapsed_s(self) -> float:
        return self.before_s + time.perf_counter() - self.t0

    def fraction(self) -> float:
        return 0.0 if self.budget_s is None else min(1.0, self.elapsed_s() / self.budget_s)

    def up(self) -> bool:
        return self.budget_s is not None and self.elapsed_s() >= self.budget_s


def time_is_up(clock: WallClock, accelerator) -> bool:
    """Whether the time budget is spent, the same answer in every process (any process's clock)."""
    if clock.budget_s is None:
        return False
    up = clock.up()
    if accelerator.num_processes > 1:
        flag = torch.tensor([float(up)], device=accelerator.device)
        up = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
    return up


class StepWindows(torch.utils.data.Dataset):
    """Item ``i``: the windows of step ``first + i`` (drawn with that step's generator)."""

    def __init__(
        self, data: PatchSampler, tc: DiffusionTrainConfig, process: int, first: int, last: int
    ):
        self.data, self.tc, self.process, self.first, self.last = data, tc, process, first, last

    def __len__(self) -> int:
        return max(0, self.last - self.first + 1)

    def __getitem__(self, i: int):
        rng, _ = step_generators(self.tc.seed, self.first + i, self.process)
        structures, images = self.data.draw(self.tc.batch_size, rng)
        return structures, (np.zeros(0, np.uint8) if images is None else images)


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)


def step_windows(
    data: PatchSampler, tc: DiffusionTrainConfig, process: int, first: int, last: int
):
    """The (structures, images or None) of steps ``first..last`` in order: drawn here, or by
    ``tc.num_workers`` worker processes ahead of the training step."""
    steps = StepWindows(data, tc, process, first, last)
    if tc.num_workers == 0:
        items = (steps[i] for i in range(len(steps)))
    else:
        items = torch.utils.data.DataLoader(
            steps,
            batch_size=None,
            shuffle=False,
            num_workers=tc.num_workers,
            prefetch_factor=4,
            worker_init_fn=_one_thread,
        )
    for structures, images in items:
        yield structures, (images if len(images) else None)


def step_generators(
    seed: int, step: int, process: int
) -> tuple[np.random.Generator, torch.Generator]:
    """The step's data generator (windows, flips) and torch generator (t, noise, drops)."""
    ss = np.random.SeedSequence([seed, step, process])
    data_seed, torch_seed = ss.spawn(2)
    gen = torch.Generator().manual_seed(int(torch_seed.generate_state(1, np.uint64)[0] >> 1))
    return np.random.default_rng(data_seed), gen


@torch.no_grad()
def write_sample_grid(
    out_dir: Path, step: int, model: Denoiser, data: PatchSampler, seed: int
) -> None:
    """A PNG of a few EMA samples (short DDIM) in ``out_dir/samples/``; its own seeds, so it
    does not disturb training randomness."""
    kwargs = {
        "sampler": "ddim",
        "steps": GRID_STEPS,
        "batch_size": GRID_SAMPLES,
        "progress": False,
    }
    if model.config.model.kind == "structure":
        samples = sample_structures(model, GRID_SAMPLES, seed=seed, **kwargs)
        grid = mosaic([structure_rgb(x) for x in samples], ncols=8)
    else:
        n = GRID_SAMPLES // 2
        structures, real = data.draw(n, np.random.default_rng(seed), augment=False)
        fake = sample_images(
            model,
            structures,
            seed=seed,
            guidance_scale=model.config.sample.guidance_scale,
            **kwargs,
        )
        columns = (structures, fake) if real is None else (structures, fake, real)
        grid = mosaic(
            [
                structure_rgb(c[i]) if c is structures else c[i]
                for i in range(len(structures))
                for c in columns
            ],
            ncols=len(columns),
        )
    write_image(out_dir / "samples" / f"step_{step:07d}.png", grid)


def _check_same_model(cfg: DiffusionConfig, out_dir: Path) -> None:
    """A resumed run must build the network it saved (speed-only options, such as
    ``model.flash_attention``, may change: :func:`nudiff.config.differences`)."""
    saved_path = out_dir / "config.yaml"
    if saved_path.is_file():
        diff = differences(load_config(DiffusionConfig, saved_path).model, cfg.model)
        if diff:
            raise NudiffError(
                f"{saved_path}: the run was trained with another model config "
                f"(model.{', model.'.join(diff)})"
            )
