"""Sampling nuclei structures and structure-conditioned images from trained models.

Samplers are diffusers schedulers (:mod:`nudiff.diffusion.schedule`) driving the MONAI U-Net
in a plain loop, with classifier-free guidance done here:
``eps = eps_u + s (eps_c - eps_u)``, s = ``guidance_scale`` (s = 1: conditional only, no null
pass; the paper's w = s - 1).

Determinism: sample ``i`` (0-based, counted from ``first_index``) draws all its noise — the
initial Gaussian and DDPM's per-step noise — from its own generator seeded by
``SeedSequence([seed, i])``. So results depend on (seed, i), not on the batch size or on
which other samples share the batch (up to float rounding of batched convolutions), and a
large job can be produced in resumable chunks with ``first_index``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from nudiff.diffusion.config import DiffusionConfig
from nudiff.diffusion.networks import Denoiser, condition_tensor, load_denoiser, null_condition
from nudiff.diffusion.schedule import make_scheduler, predicted_x0
from nudiff.model_folder import DIFFUSION_KINDS, read_model_folder
from nudiff.utils import DataError, autocast, default_device, progress_bar

ModelArg = Denoiser | str | Path


def load_model(
    run_dir: str | Path, device: str | torch.device | None = None, kind: str | None = None
) -> tuple[Denoiser, DiffusionConfig]:
    """The EMA model of a training run (``run_dir/model/``, or a model folder itself), in eval
    mode, on ``device`` (default: the GPU when there is one -- a model loaded to the CPU and
    handed to the samplers would be sampled there, on any machine). ``kind``: ``"structure"``
    or ``"image"`` (``None``: either); a folder of another kind is a one-line error naming it."""
    run_dir = Path(run_dir)
    directory = run_dir / "model" if (run_dir / "model").is_dir() else run_dir
    model = load_denoiser(directory, kind).to(device or default_device()).eval()
    return model, model.config


def read_model_config(run_dir: str | Path, kind: str | None = None) -> DiffusionConfig:
    """The config of a training run's model (or of a model folder), without its weights."""
    run_dir = Path(run_dir)
    directory = run_dir / "model" if (run_dir / "model").is_dir() else run_dir
    return read_model_folder(
        directory, DiffusionConfig, DIFFUSION_KINDS if kind is None else (kind,), weights=False
    ).config


def sample_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator of sample ``index`` under ``seed``."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def guided_eps(
    model: Denoiser,
    x: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor | None,
    guidance_scale: float,
    x0_prev: torch.Tensor | None = None,
) -> torch.Tensor:
    """The model's output (eps, or v for ``prediction_type: v_prediction``) for x (B, 3, H, W)
    at timesteps t (B,), with classifier-free guidance (linear in the output either way).

    ``cond`` (B, 4, H, W) or ``None`` (unconditional model, or the null condition). With
    ``guidance_scale == 1`` or no condition, a single conditional pass. ``x0_prev``: the
    previous estimate of x_0 for a self-conditioned model (``None``: none yet).
    """
    if cond is None or guidance_scale == 1:
        return model(x, t, cond, x0_prev).float()
    prev = None if x0_prev is None else torch.cat([x0_prev, x0_prev])
    both = model(
        torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null_condition(cond)]), prev
    )
    eps_c, eps_u = both.float().chunk(2)
    return eps_u + guidance_scale * (eps_c - eps_u)


@torch.no_grad()
def denoise(
    model: Denoiser,
    shape: tuple[int, int, int],
    generators: list[torch.Generator],
    sampler: str,
    steps: int,
    cond: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    precision: str = "no",
    clip_x0: bool = True,
) -> torch.Tensor:
    """Run one sampler from pure noise. Returns x_0 float32 (B, *shape) on the model's device
    (model range, [-1, 1] when clipping). One generator per sample."""
    device = next(model.parameters()).device
    scheduler = make_scheduler(model.config, sampler, clip_x0)
    with warnings.catch_warnings():  # diffusers' DPM-Solver calls np.array(copy=False) (numpy 2)
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        scheduler.set_timesteps(steps, device=device)
    x = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)
    x = x * scheduler.init_noise_sigma
    if cond is not None:
        cond = cond.to(device)
    x0_prev = None
    for t in scheduler.timesteps:
        tb = t.to(device=device, dtype=torch.long).expand(len(x))
        inp = scheduler.scale_model_input(x, t)
        with autocast(device, precision):
            eps = guided_eps(model, inp, tb, cond, guidance_scale, x0_prev)
        if model.self_conditioned:
            x0_prev = predicted_x0(
                eps, inp, tb, scheduler.alphas_cumprod, model.config.prediction_type
            )
            x0_prev = x0_prev.clamp(-1, 1)
        x = scheduler.step(eps, t, x, generator=generators).prev_sample
    return x


def sample_structures(
    run_dir_or_model: ModelArg,
    n: int,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    *,
    size: int | None = None,
    first_index: int = 0,
    precision: str = "no",
    clip_x0: bool | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Sample ``n`` nuclei structures from a structure model.

    Args:
        run_dir_or_model: a training run folder / model folder, or a :class:`Denoiser`.
        sampler, steps, batch_size: default to the model's ``sample`` config.
        size: side in px (default: the training ``patch_size``; the U-Net is convolutional,
            any multiple of 2**(levels-1) works).
        first_index: index of the first sample (for chunked, resumable jobs).
        precision: ``"bf16"`` for autocast (fp32 where bf16 is not native), ``"no"`` for fp32.
        clip_x0: clip the predicted x_0 at every step (default: the model's ``sample.clip_x0``).
    Returns:
        float32 (n, 3, size, size) in codec ranges: semantic [0, 1], h and v [-1, 1].
    """
    model, cfg = _resolve(run_dir_or_model, device)
    if cfg.model.kind != "structure":
        raise DataError(
            "model", f"sample_structures needs a structure model, got {cfg.model.kind!r}"
        )
    size = size or cfg.data.patch_size
    out = np.empty((n, 3, size, size), np.float32)
    for lo, hi in _batches(n, batch_size or cfg.sample.batch_size, progress, "structures"):
        gens = [sample_generator(seed, first_index + i) for i in range(lo, hi)]
        x = denoise(
            model,
            (3, size, size),
            gens,
            sampler or cfg.sample.sampler,
            steps or cfg.sample.steps,
            precision=precision,
            clip_x0=cfg.sample.clip_x0 if clip_x0 is None else clip_x0,
        )
        x = x.clamp(-1, 1).cpu().numpy()
        x[:, 0] = (x[:, 0] + 1) / 2
        out[lo:hi] = x
    return out


def sample_images(
    run_dir_or_model: ModelArg,
    structures: np.ndarray,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    *,
    first_index: int = 0,
    precision: str = "no",
    clip_x0: bool | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Sample one RGB image per structure from an image model.

    Args:
        structures: float (n, 3, H, W): semantic in [0, 1] (binarised at 0.5 here), h and v in
            [-1, 1] — the output of :func:`sample_structures` or ``nudiff.structure.encode``.
        guidance_scale: s of classifier-free guidance (default from the model's config).
        Other arguments as :func:`sample_structures`.
    Returns:
        uint8 (n, H, W, 3) RGB.
    """
    model, cfg = _resolve(run_dir_or_model, device)
    if cfg.model.kind != "image":
        raise DataError("model", f"sample_images needs an image model, got {cfg.model.kind!r}")
    s = np.asarray(structures, np.float32)
    if s.ndim != 4 or s.shape[1] != 3:
        raise DataError("structures", f"expected (n, 3, H, W), got shape {s.shape}")
    s = s.copy()
    s[:, 0] = s[:, 0] >= 0.5
    s[:, 1:] = np.clip(s[:, 1:], -1, 1)
    scale = cfg.sample.guidance_scale if guidance_scale is None else guidance_scale
    n, _, h, w = s.shape
    out = np.empty((n, h, w, 3), np.uint8)
    for lo, hi in _batches(n, batch_size or cfg.sample.batch_size, progress, "images"):
        gens = [sample_generator(seed, first_index + i) for i in range(lo, hi)]
        cond = condition_tensor(torch.from_numpy(s[lo:hi]))
        x = denoise(
            model,
            (3, h, w),
            gens,
            sampler or cfg.sample.sampler,
            steps or cfg.sample.steps,
            cond=cond,
            guidance_scale=scale,
            precision=precision,
            clip_x0=cfg.sample.clip_x0 if clip_x0 is None else clip_x0,
        )
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        out[lo:hi] = x.permute(0, 2, 3, 1).cpu().numpy()
    return out


def _resolve(arg: ModelArg, device: str | torch.device | None) -> tuple[Denoiser, DiffusionConfig]:
    if isinstance(arg, Denoiser):
        model = arg
        if device is not None:
            model = model.to(device)
    else:
        model, _ = load_model(arg, device)
    return model.eval(), model.config


def _batches(n: int, batch_size: int, progress: bool, what: str) -> Iterator[tuple[int, int]]:
    with progress_bar(
        total=n, desc=f"sampling {what}", unit="sample", disable=not progress
    ) as bar:
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            yield lo, hi
            bar.update(hi - lo)
