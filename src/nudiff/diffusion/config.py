"""Configuration of the two diffusion models (structure and image), loaded from YAML.

One YAML file holds both models as two top-level sections::

    structure:            # the unconditional nuclei-structure model
      model: {kind: structure, channels: [32, 64, 64]}
      train: {steps: 3000}
    image:                # the structure-conditioned image model
      model: {kind: image, conditioning: spade}

``load_config(DiffusionConfig, path, section="structure")`` reads one section; an unknown key
is an error. The defaults are the 2-core CPU configuration (see benchmarks/diffusion_speed.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nudiff.config import BOOKKEEPING, SPEED_ONLY
from nudiff.structure import min_area_at_scale
from nudiff.training import TrainConfig as BaseTrainConfig
from nudiff.training import check

KINDS = ("structure", "image")
CONDITIONINGS = ("spade", "concat")
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune")
SAMPLERS = ("ddpm", "ddim", "dpmsolver++")
NOISE_SCHEDULES = ("linear_beta",)
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass
class DenoiserConfig:
    """The denoising U-Net (MONAI ``DiffusionModelUNet`` / ``SPADEDiffusionModelUNet``).

    kind: ``"structure"`` (3 -> 3 channels, unconditional) or ``"image"`` (RGB, conditioned on
        a structure through ``conditioning``).
    channels: feature widths per level; the image is downsampled ``len(channels) - 1`` times.
    attention_levels: self-attention per level (same length as ``channels``); keep attention
        at feature maps of 16x16 or smaller on CPU.
    num_res_blocks: residual blocks per level (the decoder has one more, as in MONAI).
    num_head_channels: channels per attention head (must divide the width of attended levels).
    conditioning: image model only: ``"spade"`` (SDM/NuDiff: the condition modulates the
        normalisation of the middle block and the decoder) or ``"concat"`` (stacked with the
        noisy image at the input).
    norm_num_groups: GroupNorm groups (must divide every width).
    spade_channels: hidden width of each SPADE block's condition encoder (MONAI default 128;
        at full resolution it dominates the cost of a small network).
    self_condition: the network also sees its own previous estimate of the clean sample (3 more
        input channels; Chen et al., "Analog Bits", 2023): in training, half the batches first
        estimate x_0 without gradient and feed it back; in sampling, each step feeds the
        previous step's estimate. Known to help near-discrete data such as the semantic channel.
    flash_attention: self-attention through ``torch.nn.functional.scaled_dot_product_attention``
        (MONAI's ``use_flash_attention``): the same weights and, up to rounding, the same output
        (tested); for GPUs, where the plain attention over 32x32 maps is slow and memory-hungry.
    """

    kind: str = "structure"
    channels: tuple[int, ...] = (32, 64, 64)
    attention_levels: tuple[bool, ...] = (False, False, True)
    num_res_blocks: int = 1
    num_head_channels: int = 32
    conditioning: str = "spade"
    norm_num_groups: int = 32
    spade_channels: int = 32
    self_condition: bool = False
    flash_attention: bool = field(default=False, metadata=SPEED_ONLY)

    def __post_init__(self) -> None:
        check(self.kind in KINDS, f"model.kind must be one of {KINDS}, got {self.kind!r}")
        check(
            self.conditioning in CONDITIONINGS,
            f"model.conditioning must be one of {CONDITIONINGS}, got {self.conditioning!r}",
        )
        self.channels = tuple(int(c) for c in self.channels)
        self.attention_levels = tuple(bool(a) for a in self.attention_levels)
        check(
            len(self.attention_levels) == len(self.channels),
            "model.attention_levels needs one entry per model.channels level",
        )
        check(
            all(c % self.norm_num_groups == 0 for c in self.channels),
            f"model.norm_num_groups={self.norm_num_groups} must divide every width "
            f"{self.channels}",
        )
        check(
            all(
                c % self.num_head_channels == 0
                for c, a in zip(self.channels, self.attention_levels)
                if a
            ),
            f"model.num_head_channels={self.num_head_channels} must divide the attended widths",
        )


@dataclass
class DataConfig:
    """How training windows are drawn from the in-memory patches.

    patch_size: side (px) of the square window the model sees.
    scale: source patches are resized by this factor once, before cropping (0.5: 256 -> 128;
        images by area averaging, instance maps by nearest neighbour). Structures are encoded
        after resize + crop, so a nucleus cut by the window uses its visible part.
    min_area: nuclei smaller than this (px, at the model's scale) get h = v = 0, as HoVer-Net's
        30 px rule; ``None`` scales that rule: ``round(30 * scale**2)``.
    """

    patch_size: int = 64
    scale: float = 0.5
    min_area: int | None = None

    def __post_init__(self) -> None:
        check(self.patch_size >= 8, "data.patch_size must be >= 8")
        check(0 < self.scale <= 4, "data.scale must be in (0, 4]")

    @property
    def hv_min_area(self) -> int:
        """The ``min_area`` of :func:`nudiff.structure.encode` for windows at this scale: the
        training windows' and the conditions synthesis encodes."""
        return min_area_at_scale(self.scale, self.min_area)


@dataclass
class DiffusionTrainConfig(BaseTrainConfig):
    """Optimisation, checkpointing and logging of the one training loop: the fields of
    :class:`nudiff.training.TrainConfig` (steps, batch_size, lr, warmup_steps, weight_decay,
    grad_clip, precision, seed, checkpoint_every, keep_checkpoints, log_every), then:

    batch_size: windows per step and process (under ``accelerate launch`` with P processes
        an optimizer step sees P x batch_size windows). The LR decays to 0 (cosine).
    ema_decay: EMA of the weights, with warm-up ``min(decay, (1 + n) / (10 + n))``; samplers
        use the EMA weights.
    sample_every: sample-grid PNG every N steps (0 disables; a grid is always drawn at the end).
    cond_drop_prob: image model: probability that a sample's condition is replaced by the null
        condition (classifier-free guidance).
    min_snr_gamma: Min-SNR-gamma loss weighting (Hang et al. 2023): each sample's loss is
        weighted by min(SNR_t, gamma) / SNR_t (epsilon) or / (SNR_t + 1) (v), so the many
        easy low-noise timesteps stop dominating the gradient; ``None``: plain MSE (the method's).
    max_minutes: wall-clock budget (``None``: none). The cosine schedule then advances by the
        larger of ``step / steps`` and ``minutes / max_minutes``, and training ends (checkpoint
        and ``model/``) when either reaches 1: a run sized for a machine whose speed is not
        known beforehand (a GPU lease). Its step count depends on that machine, so such a run
        is not reproducible step for step; the step it reached is in ``train_log.csv``.
    num_workers: processes that draw the training windows ahead of the training step (a GPU
        otherwise waits for the CPU: ~30-50 ms per batch of 64); 0 draws them in the training
        process (CPU training: the cores are busy with the model anyway). The windows of a
        step depend on (seed, step, process) only, so they are the same either way.
    compile: ``torch.compile`` mode for the trained U-Net (``None``: eager): ``"default"``
        fuses its many small kernels, ``"reduce-overhead"`` adds CUDA graphs. For GPUs, where a
        small U-Net's step is bound by launching kernels, not by running them (an H200 spent
        35 ms on a forward pass whatever the batch: benchmarks/results/kumar-grid-gpu/);
        compiling costs minutes up front (on CPU too, for no gain). In place: the weights, the
        checkpoints and the EMA copy (the samplers' model, eager) are unchanged.
    init_from: a model folder of the same kind, network, windows and noise schedule (a shipped
        model, ``models/kumar-f0.10/image``) whose weights start the training: fine-tuning
        (``None``: from scratch). Another network or scale is a one-line error naming it.
    """

    ema_decay: float = 0.999
    sample_every: int = field(default=1000, metadata=BOOKKEEPING)
    cond_drop_prob: float = 0.2
    min_snr_gamma: float | None = None
    max_minutes: float | None = None
    num_workers: int = field(default=0, metadata=SPEED_ONLY)
    compile: str | None = field(default=None, metadata=SPEED_ONLY)
    init_from: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.compile in COMPILE_MODES, f"train.compile must be one of {COMPILE_MODES}")
        check(self.max_minutes is None or self.max_minutes > 0, "train.max_minutes must be > 0")
        check(self.num_workers >= 0, "train.num_workers must be >= 0")
        check(0 <= self.cond_drop_prob <= 1, "train.cond_drop_prob must be in [0, 1]")
        check(0 <= self.ema_decay < 1, "train.ema_decay must be in [0, 1)")
        check(
            self.min_snr_gamma is None or self.min_snr_gamma > 0, "train.min_snr_gamma must be > 0"
        )


@dataclass
class SampleConfig:
    """Defaults of the samplers (each can be overridden per call).

    sampler: ``"ddpm"`` (ancestral), ``"ddim"`` (eta 0) or ``"dpmsolver++"`` (2nd order).
    steps: network evaluations (times two with guidance).
    guidance_scale: s in eps_u + s (eps_c - eps_u); s = 1 is conditional only (no null pass);
        the paper's w is s - 1 (its code uses s = 2).
    batch_size: samples per network call (speed only: a sample's noise is its own).
    clip_x0: clip the predicted clean sample to [-1, 1] at every step (the reference's
        ``clip_denoised=True``), for all three samplers.
    """

    sampler: str = "ddim"
    steps: int = 50
    guidance_scale: float = 2.0
    batch_size: int = field(default=16, metadata=SPEED_ONLY)
    clip_x0: bool = True

    def __post_init__(self) -> None:
        check(self.sampler in SAMPLERS, f"sample.sampler must be one of {SAMPLERS}")


@dataclass
class DiffusionConfig:
    """One diffusion model: network, data, training, sampling and the noise schedule.

    The schedule is DDPM's: ``num_train_timesteps`` steps, betas linear from ``beta_start`` to
    ``beta_end``, epsilon prediction; training and every sampler share it.

    prediction_type: ``epsilon`` (the method's) or ``v_prediction`` (the network predicts
        v = sqrt(a_t) eps - sqrt(1 - a_t) x_0).
    zero_terminal_snr: rescale the betas so that the last step is pure noise (Lin et al.,
        "Common diffusion noise schedules and sample steps are flawed", 2024; diffusers'
        ``rescale_betas_zero_snr``). DDPM's linear betas leave a trace of the image at t = T
        (sqrt(a_T) = 0.0066) that training can lean on and sampling, from pure noise, cannot:
        a suspected cause of images whose colour follows their initial noise
        (benchmarks/results/sampling_levers.md). Needs ``v_prediction`` (epsilon is undefined
        at zero SNR).
    """

    model: DenoiserConfig = field(default_factory=DenoiserConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: DiffusionTrainConfig = field(default_factory=DiffusionTrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    num_train_timesteps: int = 1000
    schedule: str = "linear_beta"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "epsilon"
    zero_terminal_snr: bool = False

    def __post_init__(self) -> None:
        check(self.schedule in NOISE_SCHEDULES, f"schedule must be one of {NOISE_SCHEDULES}")
        check(
            self.prediction_type in PREDICTION_TYPES,
            f"prediction_type must be one of {PREDICTION_TYPES}",
        )
        check(
            not self.zero_terminal_snr or self.prediction_type == "v_prediction",
            "zero_terminal_snr needs prediction_type: v_prediction (epsilon is undefined at zero "
            "SNR)",
        )
        check(self.num_train_timesteps >= 2, "num_train_timesteps must be >= 2")
