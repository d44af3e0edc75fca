"""Configuration of the segmenter (YAML section ``segment``).

::

    segment:
      model:   {arch: unet, base: 16, depth: 4}
      train:   {steps: 3900, batch_size: 8, crop_size: 256, lr: 1.0e-3, real_ratio: 0.5}
      augment: {scale: [0.8, 1.2], rotate: 179, hed_scale: 0.05}
      post:    {center_threshold: 0.3}          # a nudiff.structure.DecodeParams
      infer:   {tile: 256, overlap: 0.5}

``load_config(SegmentConfig, path, section="segment")`` reads it; unknown keys are errors.
The defaults are the 2-core CPU configuration (benchmarks/segmenter_bar.py): a 1.9 M-parameter
U-Net, bf16, batch 8 of 256-px crops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nudiff.config import BOOKKEEPING
from nudiff.structure import DecodeParams
from nudiff.training import TrainConfig as BaseTrainConfig
from nudiff.training import check

ARCHS = ("unet", "hovernet")
LR_SCHEDULES = ("cosine", "constant")
BLENDS = ("gaussian", "constant")


def _check(ok: bool, message: str) -> None:
    check(ok, f"segment config: {message}")


@dataclass
class SegmenterNetConfig:
    """The network.

    arch: ``"unet"`` (light U-Net, CPU) or ``"hovernet"`` (MONAI ``HoVerNet`` fast mode with
        decoder padding, ~34 M parameters, 256x256 input only: GPU).
    base / depth: U-Net widths ``base * 2**i`` for ``i = 0..depth`` (16 and 4: 16..256,
        ~1.9 M parameters); the input side must be divisible by ``2**depth``.
    widths: explicit widths instead of ``base``/``depth`` (e.g. ``[16, 32, 64, 128, 256]``).
    norm: ``"batch"`` (BatchNorm) or ``"instance"``.
    hv_activation: ``"linear"`` (HoVer-Net) or ``"tanh"`` on the HV head.
    channels_last: NHWC memory format (1.3-1.5x faster BatchNorm convnets on CPU).
    """

    arch: str = "unet"
    base: int = 16
    depth: int = 4
    widths: tuple[int, ...] | None = None
    norm: str = "batch"
    hv_activation: str = "linear"
    channels_last: bool = True

    def __post_init__(self) -> None:
        _check(self.arch in ARCHS, f"model.arch must be one of {ARCHS}, got {self.arch!r}")
        _check(self.norm in ("batch", "instance"), "model.norm must be 'batch' or 'instance'")
        _check(
            self.hv_activation in ("linear", "tanh"),
            "model.hv_activation must be 'linear' or 'tanh'",
        )
        if self.widths is not None:
            self.widths = tuple(int(w) for w in self.widths)
            _check(len(self.widths) >= 2, "model.widths needs at least two levels")
        _check(self.base >= 1 and self.depth >= 1, "model.base and model.depth must be >= 1")

    def level_widths(self) -> tuple[int, ...]:
        """Feature widths per U-Net level, from the top (full resolution) down."""
        return self.widths or tuple(self.base * 2**i for i in range(self.depth + 1))

    @property
    def multiple(self) -> int:
        """Input height and width must be divisible by this."""
        return 2 ** (len(self.level_widths()) - 1)


@dataclass
class SegmentTrainConfig(BaseTrainConfig):
    """The training loop: the fields of :class:`nudiff.training.TrainConfig` (steps,
    batch_size, lr, warmup_steps, weight_decay, grad_clip, precision, seed, checkpoint_every,
    keep_checkpoints, log_every) with the segmenter's defaults, then:

    batch_size / crop_size: crops per batch, crop side (px; a multiple of the model's
        ``multiple``; smaller samples are reflect-padded).
    schedule / min_lr_ratio: after the warm-up, cosine to ``min_lr_ratio * lr`` (or constant).
    precision: ``"bf16"`` is the one switch that helps on a CPU with AVX512-BF16/AMX.
    seed: seeds weights, batch sampling and augmentation.
    real_ratio: probability that a batch item comes from the real samples rather than the
        synthetic ones, so every arm gets the same number of optimizer steps; ``None``: one
        pool, the plain union (items drawn in proportion to pixel area). Ignored without
        synthetic samples.
    synthetic_until: from this step on, batches are real only (``None``: synthetic pairs
        all the way). With ``real_ratio: 0`` it is pre-training on synthetic pairs, then
        fine-tuning on real, in the same number of optimizer steps.
    synthetic_weight: weight of the synthetic crops' loss relative to the real ones' (1: plain
        mean over the batch; the loss is then computed on the two parts of a batch apart).
    val_every: validation (and model selection) every N steps.
    target_context: h/v targets are computed on the augmented crop plus this margin (px),
        then cropped, so a nucleus cut by the crop edge keeps its true centre where known.
    tune_post: after training, choose the post-processing thresholds (``post``) of the
        selected model on the validation images by a small grid search (mean PQ); the
        choice is written into the model folder's ``config.yaml``.
    """

    steps: int = 3900
    batch_size: int = 8
    lr: float = 1.0e-3
    warmup_steps: int = 100
    weight_decay: float = 1.0e-4
    grad_clip: float = 5.0
    keep_checkpoints: int = field(default=2, metadata=BOOKKEEPING)
    log_every: int = field(default=20, metadata=BOOKKEEPING)
    crop_size: int = 256
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    real_ratio: float | None = 0.5
    val_every: int = 500
    target_context: int = 16
    tune_post: bool = True
    synthetic_until: int | None = None
    synthetic_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.synthetic_weight >= 0, "train.synthetic_weight must be >= 0")
        _check(
            self.synthetic_until is None or self.synthetic_until >= 0,
            "train.synthetic_until must be >= 0",
        )
        _check(self.schedule in LR_SCHEDULES, f"train.schedule must be one of {LR_SCHEDULES}")
        _check(self.crop_size >= 16, "train.crop_size must be >= 16")
        _check(
            self.real_ratio is None or 0.0 <= self.real_ratio <= 1.0,
            "train.real_ratio must be in [0, 1]",
        )
        _check(self.val_every >= 1, "train.val_every must be >= 1")


@dataclass
class AugmentConfig:
    """HoVer-Net-style augmentation (vqdang/hover_net ``train_loader``), applied per crop.

    Geometry (image bilinear, instance map nearest, one resampling): ``scale`` range, ``rotate``
    (max degrees, uniform in +-), ``shear`` (max degrees), then a random flip and quarter turn.
    Colour (on the batch): ``hue`` (max degrees of hue rotation), ``saturation`` / ``contrast``
    (max relative change), ``brightness`` (max shift, 0-1 scale), HED stain jitter (per H, E, D
    channel: scale ``1 +- hed_scale``, shift ``+- hed_shift`` in the units of skimage's
    ``rgb2hed``, where 0.01 is 0.14 optical density), then with probability ``p_blur`` a Gaussian
    blur (sigma up to ``blur_sigma``) or with ``p_noise`` additive Gaussian noise (std up to
    ``noise_std``). ``enabled: false`` keeps only the random crop.
    """

    enabled: bool = True
    p_affine: float = 1.0
    scale: tuple[float, float] = (0.8, 1.2)
    rotate: float = 179.0
    shear: float = 5.0
    flip_rot90: bool = True
    hue: float = 8.0
    saturation: float = 0.2
    brightness: float = 0.1
    contrast: float = 0.25
    hed_scale: float = 0.05
    hed_shift: float = 0.005
    p_blur: float = 0.1
    blur_sigma: float = 1.0
    p_noise: float = 0.1
    noise_std: float = 0.03

    def __post_init__(self) -> None:
        self.scale = tuple(float(s) for s in self.scale)
        _check(
            len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1],
            "augment.scale must be [lo, hi] > 0",
        )


@dataclass
class InferConfig:
    """Tiled inference (``monai.inferers.SlidingWindowInferer``).

    tile: window side (px; 256 for ``hovernet``); overlap: fraction of a window shared with
    its neighbour; blend: ``"gaussian"`` or ``"constant"``; batch_size: windows per forward;
    precision: ``"no"`` (float32, default: bit-stable) or ``"bf16"``.
    tta: test-time augmentation, 1 (none) to 8 (all flips and quarter turns, averaged):
        costs ``tta`` times the inference time.
    """

    tile: int = 256
    overlap: float = 0.5
    blend: str = "gaussian"
    batch_size: int = 8
    precision: str = "no"
    tta: int = 1

    def __post_init__(self) -> None:
        _check(1 <= self.tta <= 8, "infer.tta must be 1..8")
        _check(self.blend in BLENDS, f"infer.blend must be one of {BLENDS}")
        _check(0.0 <= self.overlap < 1.0, "infer.overlap must be in [0, 1)")
        _check(self.precision in ("no", "bf16"), "infer.precision must be 'no' or 'bf16'")


@dataclass
class SegmentConfig:
    """All of the segmentation stage (YAML section ``segment``). ``post``: the post-processing
    (:class:`nudiff.structure.DecodeParams`; tuned on the validation images after training)."""

    model: SegmenterNetConfig = field(default_factory=SegmenterNetConfig)
    train: SegmentTrainConfig = field(default_factory=SegmentTrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    post: DecodeParams = field(default_factory=DecodeParams)
    infer: InferConfig = field(default_factory=InferConfig)

    @staticmethod
    def upgrade_keys(data: dict, where: str) -> dict:
        """``post`` written before it was a ``DecodeParams``: ``null`` meant "the default"
        (read until :data:`nudiff.config.REMOVED_IN`)."""
        if isinstance(data.get("post"), dict):
            data["post"] = {k: v for k, v in data["post"].items() if v is not None}
        return data

    def __post_init__(self) -> None:
        m = self.model.multiple if self.model.arch == "unet" else 32
        _check(
            self.train.crop_size % m == 0,
            f"train.crop_size {self.train.crop_size} must be a multiple of {m}",
        )
        _check(self.infer.tile % m == 0, f"infer.tile {self.infer.tile} must be a multiple of {m}")
        if self.model.arch == "hovernet":
            _check(
                self.train.crop_size == 256 and self.infer.tile == 256,
                "model.arch 'hovernet' (MONAI fast mode) takes 256x256 input: crop_size and tile "
                "256",
            )
