"""One training loop for both diffusion models (structure and image), read top to bottom.

Per step: draw windows (:class:`PatchSampler`), build the model input (structure model:
[2 sem - 1, h, v]; image model: image / 127.5 - 1 with the condition of the structure, dropped
with probability ``cond_drop_prob``), noise it at a uniform timestep (diffusers' DDPM
forward process), regress the noise (or v, ``prediction_type``; MSE, optionally Min-SNR-gamma
weighted), AdamW step with clipping, cosine LR, EMA update. With ``model.self_condition``, half
the steps first estimate x_0 without gradient and feed it back to the network.

Runs on CPU, one GPU or many (``accelerate launch``) unchanged; mixed precision through
``accelerate``. Several CPU processes (DDP over gloo) need ``ACCELERATE_USE_CPU=true`` with
``torchrun`` (checked: 2 processes, resume included). All randomness of a step comes from generators seeded by
(seed, step, process), so a resumed run continues exactly as an uninterrupted one.

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

from nudiff import checkpoint as ckpt
from nudiff.config import differences, load_config, save_config
from nudiff.data.io import write_image
from nudiff.diffusion.config import DiffusionConfig, TrainConfig
from nudiff.diffusion.data import PatchSampler
from nudiff.diffusion.ema import EMA
from nudiff.diffusion.networks import Denoiser, condition_tensor, save_denoiser
from nudiff.diffusion.sample import sample_images, sample_structures
from nudiff.diffusion.schedule import min_snr_weights, predicted_x0, training_scheduler
from nudiff.model_folder import read_model_folder
from nudiff.pictures import mosaic, structure_rgb
from nudiff.training import RunLog, warmup_cosine
from nudiff.utils import (
    DataError,
    NudiffError,
    make_accelerator,
    progress_bar,
    seed_everything,
)

GRID_SAMPLES = 8
GRID_STEPS = 20


# what a model to fine-tune must share with the configuration (its training and sampling may differ)
INIT_SECTIONS = ("model", "data", "num_train_timesteps", "schedule", "beta_start", "beta_end",
                 "prediction_type", "zero_terminal_snr")


def init_weights(cfg: DiffusionConfig, folder: str | Path) -> dict:
    """The weights of the model folder ``folder`` (a shipped model) to fine-tune from, checked
    against ``cfg``: same kind, network, windows and noise schedule; else a one-line
    :class:`DataError` naming the folder and what differs."""
    m = read_model_folder(Path(folder), DiffusionConfig, (cfg.model.kind,))
    differ = [d for d in differences(m.config, cfg) if d.split(".")[0] in INIT_SECTIONS]
    if differ:
        raise DataError(folder, f"cannot fine-tune from it: its {', '.join(differ)} differ from the "
                        "configuration's (another network or scale)")
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
    out_dir = Path(out_dir)
    tc = cfg.train
    conditional = cfg.model.kind == "image"
    if conditional and images is None:
        raise DataError("images", "the image model needs images paired with the instance maps")
    existing = ckpt.list_checkpoints(out_dir)
    if existing and not resume:
        raise NudiffError(f"{out_dir} already holds checkpoints; pass resume or use a new folder")

    accelerator = make_accelerator(tc.precision)
    main = accelerator.is_main_process
    seed_everything(tc.seed)
    data = PatchSampler(cfg.data, instance_maps, images if conditional else None)
    model = Denoiser(cfg)
    if tc.init_from and not (resume and existing):
        model.load_state_dict(init_weights(cfg, tc.init_from))
    ema = EMA(model, tc.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    clock = WallClock(tc.max_minutes)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(tc.steps, tc.warmup_steps, progress=clock.fraction))

    start = 0
    if resume and existing:
        _check_same_model(cfg, out_dir)
        ckpt.remove_partial(out_dir)
        start = load_training_state(existing[-1][1], model, ema, optimizer, lr_schedule, clock)
    if tc.compile:  # in place, after the EMA's copy: state-dict keys and checkpoints unchanged
        model.net.compile(mode=tc.compile)
    model, optimizer = accelerator.prepare(model, optimizer)
    ema.model.to(accelerator.device)
    end = min(tc.steps, stop_at_step) if stop_at_step is not None else tc.steps
    if time_is_up(clock, accelerator):  # a resumed run whose time budget was spent: no step
        end = start

    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    log = RunLog(out_dir, start_step=start, enabled=main)
    noise_schedule = training_scheduler(cfg)
    alphas = noise_schedule.alphas_cumprod
    T = cfg.num_train_timesteps
    bar = progress_bar(total=end, initial=start, desc=f"train {cfg.model.kind}", disable=not main)
    running, count, tick = 0.0, 0, time.perf_counter()
    try:
        windows = step_windows(data, tc, accelerator.process_index, start + 1, end)
        for step, (structures, imgs) in zip(range(start + 1, end + 1), windows):
            _, gen = step_generators(tc.seed, step, accelerator.process_index)
            s = torch.as_tensor(structures)
            t = torch.randint(0, T, (tc.batch_size,), generator=gen)
            if conditional:
                x0 = torch.as_tensor(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
                drop = torch.rand(tc.batch_size, generator=gen) < tc.cond_drop_prob
                cond = condition_tensor(s, drop).to(accelerator.device)
            else:
                x0 = torch.cat([2 * s[:, :1] - 1, s[:, 1:]], dim=1)
                cond = None
            noise = torch.randn(x0.shape, generator=gen)
            xt = noise_schedule.add_noise(x0, noise, t)
            target = noise if cfg.prediction_type == "epsilon" else noise_schedule.get_velocity(x0, noise, t)
            xt, target, t = (v.to(accelerator.device) for v in (xt, target, t))

            x0_prev = None
            if cfg.model.self_condition and bool(torch.rand(1, generator=gen) < 0.5):
                with torch.no_grad(), accelerator.autocast():  # the network's own first estimate
                    first = model(xt, t, cond).float()
                x0_prev = predicted_x0(first, xt, t, alphas, cfg.prediction_type).clamp(-1, 1)
            with accelerator.autocast():
                pred = model(xt, t, cond, x0_prev)
            per_sample = F.mse_loss(pred.float(), target, reduction="none").mean(dim=(1, 2, 3))
            if tc.min_snr_gamma is not None:
                per_sample = per_sample * min_snr_weights(t, alphas, tc.min_snr_gamma, cfg.prediction_type)
            loss = per_sample.mean()
            accelerator.backward(loss)
            if tc.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
            lr = optimizer.param_groups[0]["lr"]  # the LR of this update
            optimizer.step()
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)
            ema.update(accelerator.unwrap_model(model))
            if time_is_up(clock, accelerator):  # the budget is spent: this step is the last
                end = bar.total = step

            running += loss.item()
            count += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if main and (step % tc.log_every == 0 or step == end):
                now = time.perf_counter()
                log.write(step, {"loss": running / count, "lr": lr, "steps_per_s": count / (now - tick)})
                running, count, tick = 0.0, 0, now
            # other processes need no barrier here: they wait in the next gradient all-reduce
            if main and (step % tc.checkpoint_every == 0 or step == end):
                save_training_state(out_dir, step, accelerator, model, ema, optimizer, lr_schedule, clock)
                ckpt.prune(out_dir, tc.keep_checkpoints)
            if main and ((tc.sample_every and step % tc.sample_every == 0) or step == end):
                write_sample_grid(out_dir, step, ema.model, data, tc.seed)
            if step == end:
                break
        if main:  # the EMA weights + config, replaced atomically: what the samplers load
            save_denoiser(ema.model, out_dir / "model", info={"step": end})
        accelerator.wait_for_everyone()
    finally:
        bar.close()
        log.close()
        accelerator.end_training()
    return out_dir / "model"


class WallClock:
    """Training minutes against ``TrainConfig.max_minutes`` (a resumed run adds its earlier
    minutes, kept in the checkpoint). Without a budget, ``fraction()`` is 0 and ``up()`` False."""

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

    def __init__(self, data: PatchSampler, tc: TrainConfig, process: int, first: int, last: int):
        self.data, self.tc, self.process, self.first, self.last = data, tc, process, first, last

    def __len__(self) -> int:
        return max(0, self.last - self.first + 1)

    def __getitem__(self, i: int):
        rng, _ = step_generators(self.tc.seed, self.first + i, self.process)
        structures, images = self.data.draw(self.tc.batch_size, rng)
        return structures, (np.zeros(0, np.uint8) if images is None else images)


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)


def step_windows(data: PatchSampler, tc: TrainConfig, process: int, first: int, last: int):
    """The (structures, images or None) of steps ``first..last`` in order: drawn here, or by
    ``tc.num_workers`` worker processes ahead of the training step."""
    steps = StepWindows(data, tc, process, first, last)
    if tc.num_workers == 0:
        items = (steps[i] for i in range(len(steps)))
    else:
        items = torch.utils.data.DataLoader(
            steps, batch_size=None, shuffle=False, num_workers=tc.num_workers, prefetch_factor=4,
            worker_init_fn=_one_thread)
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


def save_training_state(out_dir, step, accelerator, model, ema, optimizer, lr_schedule,
                        clock: WallClock | None = None) -> Path:
    """Checkpoint ``step`` (:func:`nudiff.checkpoint.save_training_state`) with the EMA weights,
    its update count, the minutes spent and the grad scaler."""
    scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
    state = {
        "ema_updates": ema.num_updates,
        "elapsed_s": round(clock.elapsed_s(), 1) if clock is not None else None,
        "grad_scaler": scaler,
        "data_sampler": {"seeding": "SeedSequence([seed, step, process])", "next_step": step + 1},
    }
    weights = {"model": accelerator.unwrap_model(model), "ema": ema.model}
    return ckpt.save_training_state(out_dir, step, weights, optimizer, lr_schedule, state)


def load_training_state(path: Path, model: Denoiser, ema: EMA, optimizer, lr_schedule,
                        clock: WallClock | None = None) -> int:
    """Load a checkpoint into un-prepared objects; restores the global RNGs; returns its step."""
    state = ckpt.load_training_state(path, {"model": model, "ema": ema.model}, optimizer, lr_schedule)
    if clock is not None:
        clock.before_s = float(state.get("elapsed_s") or 0.0)
    ema.num_updates = state["ema_updates"]
    return int(state["step"])


@torch.no_grad()
def write_sample_grid(
    out_dir: Path, step: int, model: Denoiser, data: PatchSampler, seed: int
) -> None:
    """A PNG of a few EMA samples (short DDIM) in ``out_dir/samples/``; its own seeds, so it
    does not disturb training randomness."""
    kwargs = {"sampler": "ddim", "steps": GRID_STEPS, "batch_size": GRID_SAMPLES, "progress": False}
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
        grid = mosaic([structure_rgb(c[i]) if c is structures else c[i]
                       for i in range(len(structures)) for c in columns], ncols=len(columns))
    write_image(out_dir / "samples" / f"step_{step:07d}.png", grid)


def _check_same_model(cfg: DiffusionConfig, out_dir: Path) -> None:
    """A resumed run must build the network it saved (speed-only options, such as
    ``model.flash_attention``, may change: :func:`nudiff.config.differences`)."""
    saved_path = out_dir / "config.yaml"
    if saved_path.is_file():
        diff = differences(load_config(DiffusionConfig, saved_path).model, cfg.model)
        if diff:
            raise NudiffError(f"{saved_path}: the run was trained with another model config "
                              f"(model.{', model.'.join(diff)})")
