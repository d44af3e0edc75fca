"""The noise schedule and the samplers, all diffusers schedulers sharing one set of betas.

Training uses diffusers' ``DDPMScheduler.add_noise`` (x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps,
t uniform in [0, T)), so the betas seen in training and in sampling come from the same code.

Samplers (``make_scheduler``), all with the training betas and the model's prediction type
(epsilon, or v with ``zero_terminal_snr``; see ``DiffusionConfig``):

- ``"ddpm"``: ancestral sampling, ``fixed_small`` variance (the reference learned it), any
  number of steps (respaced when fewer than T).
- ``"ddim"``: eta = 0 (deterministic given the initial noise), ``set_alpha_to_one``.
- ``"dpmsolver++"``: DPM-Solver++ (2M), lower-order final steps, final sigma 0.

Clipping: with ``clip_x0`` (default) every sampler clips its predicted x_0 to [-1, 1] at
every step, as the reference's ``clip_denoised=True``. DDPM/DDIM do it with ``clip_sample``;
DPM-Solver++ has no ``clip_sample``, so it uses diffusers' dynamic thresholding with
``sample_max_value=1``, which reduces exactly to clipping to [-1, 1].

DDPM and DDIM use ``timestep_spacing="trailing"`` so that the first step starts at t = T-1,
the noise level of the initial Gaussian sample; DPM-Solver++ keeps its ``"linspace"`` default
(also starting at T-1).
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from nudiff.diffusion.config import SAMPLERS, DiffusionConfig
from nudiff.utils import NudiffError


def _betas(cfg: DiffusionConfig) -> dict:
    return {
        "num_train_timesteps": cfg.num_train_timesteps,
        "beta_start": cfg.beta_start,
        "beta_end": cfg.beta_end,
        "beta_schedule": "linear",  # cfg.schedule == "linear_beta" (the only one, validated)
        "prediction_type": cfg.prediction_type,
        "rescale_betas_zero_snr": cfg.zero_terminal_snr,
    }


def training_scheduler(cfg: DiffusionConfig) -> DDPMScheduler:
    """The forward process used by training (``add_noise``)."""
    return DDPMScheduler(**_betas(cfg))


def make_scheduler(cfg: DiffusionConfig, sampler: str, clip_x0: bool = True) -> SchedulerMixin:
    """A fresh diffusers scheduler for ``sampler`` in ``SAMPLERS`` (call ``set_timesteps``)."""
    if sampler == "ddpm":
        return DDPMScheduler(**_betas(cfg), clip_sample=clip_x0, timestep_spacing="trailing")
    if sampler == "ddim":
        return DDIMScheduler(
            **_betas(cfg), clip_sample=clip_x0, set_alpha_to_one=True, timestep_spacing="trailing"
        )
    if sampler == "dpmsolver++":
        return DPMSolverMultistepScheduler(
            **_betas(cfg),
            algorithm_type="dpmsolver++",
            solver_order=2,
            thresholding=clip_x0,
            sample_max_value=1.0,
        )
    raise NudiffError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")


def predicted_x0(
    output: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
) -> torch.Tensor:
    """The clean sample implied by a network output (eps or v) at x_t (B, C, H, W), t (B,):
    x_0 = (x_t - sqrt(1 - a) eps) / sqrt(a), or sqrt(a) x_t - sqrt(1 - a) v."""
    a = alphas_cumprod.to(x_t.device)[t].float().view(-1, 1, 1, 1)
    if prediction_type == "epsilon":
        return (x_t - (1 - a).sqrt() * output) / a.sqrt()
    return a.sqrt() * x_t - (1 - a).sqrt() * output


def min_snr_weights(
    t: torch.Tensor, alphas_cumprod: torch.Tensor, gamma: float, prediction_type: str
) -> torch.Tensor:
    """Min-SNR-gamma loss weights (B,) for timesteps t (B,): min(SNR, gamma) / SNR for eps
    targets, min(SNR, gamma) / (SNR + 1) for v targets (Hang et al., ICCV 2023)."""
    a = alphas_cumprod.to(t.device)[t].double()
    snr = a / (1 - a).clamp_min(1e-12)
    base = snr if prediction_type == "epsilon" else snr + 1
    return (snr.clamp(max=gamma) / base).float()
