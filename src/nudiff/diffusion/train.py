"""One training loop for both diffusion models (structure and image), read top to bottom.

Per step: draw windows (:class:`PatchSampler`), build the model input (structure model:
[2 sem - 1, h, v]; image model: image / 127.5 - 1 with the condition of the structure, dropped
with probability ``cond_drop_prob``), noise it at a uniform timestep (diffusers' DDPM
forward process), regress the noise (or v, ``prediction_type``; MSE), AdamW step with clipping, cosine LR, EMA update.

Runs on CPU, one GPU or many (``accelerate launch``) unchanged; mixed precision through
``accelerate``. Several CPU processes (DDP over gloo) need ``ACCELERATE_USE_CPU=true`` with
``torchrun`` (checked: 2 processes, resume included). All randomness of a step comes from generators seeded by
(seed, step, process), so a resumed run continues exactly as an uninterrupted one.

Writes into ``out_dir``: ``config.yaml`` (at start), ``train_log.csv`` and ``tb/``
(TensorBoard), ``samples/step_*.png`` grids, ``checkpoints/step_*`` (see
:mod:`nudiff.checkpoint`) and ``model/`` (EMA weights + config.json, what the
samplers load).
"""

from __future__ import annotations

import csv
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

from nudiff import checkpoint as ckpt
from nudiff.config import load_config, save_config, to_dict
from nudiff.data.io import write_image
from nudiff.diffusion.config import DiffusionConfig, TrainConfig
from nudiff.diffusion.data import PatchSampler
from nudiff.diffusion.ema import EMA
from nudiff.diffusion.networks import Denoiser, condition_tensor, save_denoiser, state_dict_cpu
from nudiff.diffusion.sample import sample_images, sample_structures
from nudiff.diffusion.schedule import training_scheduler
from nudiff.report import mosaic, structure_rgb
from nudiff.utils import DataError, NudiffError, make_accelerator, progress_bar, seed_everything

GRID_SAMPLES = 8
GRID_STEPS = 20
CSV_FIELDS = ["step", "loss", "lr", "it_per_s"]


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
    ema = EMA(model, tc.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(tc))

    start = 0
    if resume and existing:
        _check_same_model(cfg, out_dir)
        ckpt.remove_partial(out_dir)
        start = load_training_state(existing[-1][1], model, ema, optimizer, lr_schedule)
    model, optimizer = accelerator.prepare(model, optimizer)
    ema.model.to(accelerator.device)
    end = min(tc.steps, stop_at_step) if stop_at_step is not None else tc.steps

    writer = log_file = None
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
        writer = SummaryWriter(out_dir / "tb", purge_step=start + 1)
        log_file, csv_writer = _open_csv(out_dir / "train_log.csv", start)
    noise_schedule = training_scheduler(cfg)
    T = cfg.num_train_timesteps
    bar = progress_bar(total=end, initial=start, desc=f"train {cfg.model.kind}", disable=not main)
    running, count, tick = 0.0, 0, time.perf_counter()
    try:
        for step in range(start + 1, end + 1):
            rng, gen = step_generators(tc.seed, step, accelerator.process_index)
            structures, imgs = data.draw(tc.batch_size, rng)
            s = torch.from_numpy(structures)
            t = torch.randint(0, T, (tc.batch_size,), generator=gen)
            if conditional:
                x0 = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
                drop = torch.rand(tc.batch_size, generator=gen) < tc.cond_drop_prob
                cond = condition_tensor(s, drop).to(accelerator.device)
            else:
                x0 = torch.cat([2 * s[:, :1] - 1, s[:, 1:]], dim=1)
                cond = None
            noise = torch.randn(x0.shape, generator=gen)
            xt = noise_schedule.add_noise(x0, noise, t)
            target = noise if cfg.prediction_type == "epsilon" else noise_schedule.get_velocity(x0, noise, t)
            xt, target, t = (v.to(accelerator.device) for v in (xt, target, t))

            with accelerator.autocast():
                pred = model(xt, t, cond)
            loss = F.mse_loss(pred.float(), target)
            accelerator.backward(loss)
            if tc.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
            lr = optimizer.param_groups[0]["lr"]  # the LR of this update
            optimizer.step()
            lr_schedule.step()
            optimizer.zero_grad(set_to_none=True)
            ema.update(accelerator.unwrap_model(model))

            running += loss.item()
            count += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if main and (step % tc.log_every == 0 or step == end):
                now = time.perf_counter()
                row = {
                    "step": step,
                    "loss": running / count,
                    "lr": lr,
                    "it_per_s": count / (now - tick),
                }
                csv_writer.writerow(row)
                log_file.flush()
                for key in ("loss", "lr", "it_per_s"):
                    writer.add_scalar(f"train/{key}", row[key], step)
                running, count, tick = 0.0, 0, now
            # other processes need no barrier here: they wait in the next gradient all-reduce
            if main and (step % tc.checkpoint_every == 0 or step == end):
                save_training_state(out_dir, step, accelerator, model, ema, optimizer, lr_schedule)
                ckpt.prune(out_dir, tc.keep_checkpoints)
            if main and ((tc.sample_every and step % tc.sample_every == 0) or step == end):
                write_sample_grid(out_dir, step, ema.model, data, tc.seed)
        if main:
            _save_final(ema.model, out_dir / "model")
        accelerator.wait_for_everyone()
    finally:
        bar.close()
        if writer is not None:
            writer.close()
            log_file.close()
        accelerator.end_training()
    return out_dir / "model"


def warmup_cosine(tc: TrainConfig):
    """LR factor after ``step`` optimizer steps: linear warm-up, then cosine to 0 at the end."""

    def factor(step: int) -> float:
        if step < tc.warmup_steps:
            return (step + 1) / tc.warmup_steps
        progress = (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def step_generators(
    seed: int, step: int, process: int
) -> tuple[np.random.Generator, torch.Generator]:
    """The step's data generator (windows, flips) and torch generator (t, noise, drops)."""
    ss = np.random.SeedSequence([seed, step, process])
    data_seed, torch_seed = ss.spawn(2)
    gen = torch.Generator().manual_seed(int(torch_seed.generate_state(1, np.uint64)[0] >> 1))
    return np.random.default_rng(data_seed), gen


def save_training_state(out_dir, step, accelerator, model, ema, optimizer, lr_schedule) -> Path:
    tensors, meta = ckpt.flatten_optimizer(optimizer.state_dict())
    scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
    state = {
        "step": step,
        "lr_scheduler": lr_schedule.state_dict(),
        "ema_updates": ema.num_updates,
        "grad_scaler": scaler,
        "rng": ckpt.rng_state(),
        "data_sampler": {"seeding": "SeedSequence([seed, step, process])", "next_step": step + 1},
    }
    return ckpt.write_checkpoint(
        out_dir,
        step,
        {
            "model.safetensors": state_dict_cpu(accelerator.unwrap_model(model)),
            "ema.safetensors": state_dict_cpu(ema.model),
            "optimizer.safetensors": tensors,
            "optimizer.json": meta,
            "state.json": state,
        },
    )


def load_training_state(path: Path, model: Denoiser, ema: EMA, optimizer, lr_schedule) -> int:
    """Load a checkpoint into un-prepared objects; restores the global RNGs; returns its step."""
    files = ckpt.read_checkpoint(path)
    state = files["state.json"]
    model.load_state_dict(files["model.safetensors"])
    ema.model.load_state_dict(files["ema.safetensors"])
    ema.num_updates = state["ema_updates"]
    optimizer.load_state_dict(
        ckpt.unflatten_optimizer(files["optimizer.safetensors"], files["optimizer.json"])
    )
    lr_schedule.load_state_dict(state["lr_scheduler"])
    ckpt.set_rng_state(state["rng"])
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


def _save_final(model: Denoiser, directory: Path) -> None:
    """``directory`` = EMA weights + config.json, replaced atomically."""
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".tmp-{directory.name}-"))
    try:
        save_denoiser(model, tmp)
        if directory.exists():
            old = directory.parent / f".tmp-old-{directory.name}"
            directory.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _open_csv(path: Path, start: int):
    """Open the CSV log for appending; rows after ``start`` (from a killed run) are dropped."""
    rows = []
    if start and path.is_file():
        with path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start]
    f = path.open("w", newline="")
    writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    f.flush()
    return f, writer


def _check_same_model(cfg: DiffusionConfig, out_dir: Path) -> None:
    saved_path = out_dir / "config.yaml"
    if saved_path.is_file():
        saved = load_config(DiffusionConfig, saved_path)
        if to_dict(saved.model) != to_dict(cfg.model):
            raise NudiffError(f"{saved_path}: the run was trained with another model config")
