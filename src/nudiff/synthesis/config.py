"""How pairs are synthesized: :class:`SynthesisConfig` (YAML section ``synthesis``), the
upgrade of its deprecated flat sampler keys, and the comparison of a configuration with the
manifest of a folder it would resume."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from nudiff.config import REMOVED_IN, differences, from_dict, warn_deprecated
from nudiff.data.stain import STAIN_METHODS
from nudiff.diffusion.config import SampleConfig
from nudiff.quality.filter import FilterConfig
from nudiff.structure import DecodeParams
from nudiff.utils import DataError, NudiffError, read_json

LABEL_UPSAMPLING = ("nearest", "smooth")
# where the labels come from: the structure model, windows of the labeled subset's own labels,
# or those windows with more of the subset's nuclei pasted in (labels only)
STRUCTURE_SOURCES = ("sampled", "subset", "copypaste")
REAL_STRUCTURES = ("subset", "copypaste")  # sources that need no structure model

# the release that stops reading the flat sampler keys (FLAT_SAMPLE_KEYS), as diffusers'
# `deprecate("name", "0.x", ...)` names the version that removes what it warns about

# the flat keys of earlier versions: model -> {key: SampleConfig field}
FLAT_SAMPLE_KEYS = {
    "structure": {"structure_sampler": "sampler", "structure_steps": "steps"},
    "image": {
        "image_sampler": "sampler",
        "image_steps": "steps",
        "guidance_scale": "guidance_scale",
    },
}


@dataclass
class SynthesisConfig:
    """How pairs are synthesized (YAML section ``synthesis``): how many, seed, how each model
    is sampled, precision, the filter;
    ``structure_sample`` / ``image_sample``: the :class:`nudiff.diffusion.config.SampleConfig`
    (sampler, steps, ``guidance_scale`` s of the image model: see the README's convention,
    ``clip_x0``) each model is sampled with; ``null`` (the default): the model's own ``sample``
    settings, saved in its folder. Their ``batch_size`` is not used: ``batch_size`` here is the
    pairs per chunk and network call. (The flat keys of earlier versions, ``structure_sampler``,
    ``structure_steps``, ``image_sampler``, ``image_steps``, ``guidance_scale``, are still read,
    with a warning, until the release :data:`nudiff.config.REMOVED_IN`.)
    ``stain``: ``none`` | ``reinhard`` | ``macenko`` | ``reinhard-each`` — every image is
    stain-normalised to the real images (``real_dir``: the labeled subset in an experiment) as
    it is written;
    ``size``: side of the sampled windows in model pixels (default: the models' training
    ``patch_size``; the U-Nets are convolutional, so e.g. 128 at scale 0.5 gives 256-px pairs).
    ``decode``: how sampled structures become instance maps
    (:class:`nudiff.structure.DecodeParams`; ``min_marker: 2`` splits more of the merged nuclei
    a small structure model makes).
    ``label_upsampling``: ``nearest`` | ``smooth`` — how labels of models trained at
    ``scale < 1`` go back to full resolution; ``smooth`` gives nuclei round outlines instead of
    nearest's ×2 staircase (benchmarks/results/structure_decode.md).
    ``structures``: ``sampled`` (the method: labels from the structure model) | ``subset``
    (a diagnostic: labels are random windows of the labeled subset's own instance maps in
    ``real_dir``, with one of the 8 flips/rotations, exact at full resolution; only the image
    is synthesized, so the structure model is not used). Comparing the two tells whether the
    structure model or the image model limits the pairs. | ``copypaste``: a ``subset`` window
    with up to ``pasted_nuclei`` whole nuclei of the subset's labels pasted at free positions
    (:func:`nudiff.data.copypaste.paste_nuclei`, labels only: exact, never touching): new
    arrangements of real nucleus shapes, whose image the image model draws whole, so there is
    no blending seam.
    ``pasted_nuclei``: nuclei tried per window with ``structures: copypaste`` (the default
    matches the copy-paste arm's density at the image model's window size and scale)."""

    n: int = 256
    seed: int = 0
    structure_sample: SampleConfig | None = None
    image_sample: SampleConfig | None = None
    batch_size: int = 16
    precision: str = "bf16"
    max_attempts_factor: float = 3.0
    filter: FilterConfig = field(default_factory=FilterConfig)
    stain: str = "none"
    size: int | None = None
    decode: DecodeParams = field(default_factory=DecodeParams)
    label_upsampling: str = "nearest"
    structures: str = "sampled"
    pasted_nuclei: int = 3

    def __post_init__(self) -> None:
        if self.structures not in STRUCTURE_SOURCES:
            raise NudiffError(
                f"synthesis.structures must be one of {STRUCTURE_SOURCES}, got {self.structures!r}"
            )
        if self.stain not in STAIN_METHODS:
            raise NudiffError(
                f"synthesis.stain must be one of {STAIN_METHODS}, got {self.stain!r}"
            )
        if self.label_upsampling not in LABEL_UPSAMPLING:
            raise NudiffError(
                f"synthesis.label_upsampling must be one of {LABEL_UPSAMPLING}, "
                f"got {self.label_upsampling!r}"
            )

    @staticmethod
    def upgrade_keys(data: dict, where: str) -> dict:
        """The flat sampler keys of earlier versions -> ``structure_sample`` / ``image_sample``
        (a key left out had the default of those versions: ddim, 50 steps, guidance 2).

        Raises:
            DataError: a flat key and the section it moves to are both given.
        """
        keys = [*FLAT_SAMPLE_KEYS["structure"], *FLAT_SAMPLE_KEYS["image"]]
        flat = {k: data.pop(k) for k in keys if k in data}
        if not flat:
            return data
        for model, keys in FLAT_SAMPLE_KEYS.items():
            given = {field: flat[key] for key, field in keys.items() if key in flat}
            if given:
                if data.get(f"{model}_sample") is not None:
                    raise DataError(
                        where,
                        f"{', '.join(k for k in keys if k in flat)} and "
                        f"{model}_sample both given; keep {model}_sample",
                    )
                defaults = {"sampler": "ddim", "steps": 50, "guidance_scale": 2.0}
                data[f"{model}_sample"] = defaults | given
        warn_deprecated(
            f"{where}: synthesis keys {', '.join(flat)} are deprecated and will be "
            f"removed in nudiff {REMOVED_IN}; use structure_sample: "
            "{sampler, steps} and image_sample: {sampler, steps, guidance_scale} "
            "instead"
        )
        return data


def resolve_sampling(
    cfg: SynthesisConfig, structure: SampleConfig | None, image: SampleConfig
) -> SynthesisConfig:
    """``cfg`` with each model's sampling settled: a ``null`` ``structure_sample`` /
    ``image_sample`` becomes that model's own settings (``structure`` / ``image``: the
    ``sample`` section of its config); with labels from the subset no structure model is
    sampled (``structure_sample`` is then ``None``). What a manifest records and compares."""
    s = None if cfg.structures in REAL_STRUCTURES else (cfg.structure_sample or structure)
    return replace(cfg, structure_sample=s, image_sample=cfg.image_sample or image)


def check_same_config(
    manifest_path: Path,
    cfg: SynthesisConfig,
    any_segmenter: bool = False,
    models: tuple[SampleConfig | None, SampleConfig] | None = None,
) -> dict | None:
    """The manifest at ``manifest_path`` (``None`` if absent); an error naming the fields that
    differ (:func:`nudiff.config.differences`) if it was written with another configuration
    (keys added since it was written count as their defaults). ``models``: the models' own
    ``sample`` settings (structure, image), which a ``null`` sampling on either side stands for
    (:func:`resolve_sampling`). ``any_segmenter``: the filter's segmenter folder may have moved.
    A larger ``n`` is the same configuration: pair ``i`` is drawn from ``(seed, i)`` alone, so
    more pairs extend the set exactly as a fresh run of the larger ``n`` would draw it (a smaller
    ``n`` is an error: the set would hold pairs the configuration does not)."""
    manifest = read_json(manifest_path) if manifest_path.exists() else None
    if manifest is None:
        return None
    made = from_dict(SynthesisConfig, manifest.get("config"), str(manifest_path))
    made, cfg = (resolve_sampling(c, *(models or (None, None))) for c in (made, cfg))
    if made.n < cfg.n:
        made = replace(made, n=cfg.n)
    if any_segmenter:
        made = replace(made, filter=replace(made.filter, segmenter=cfg.filter.segmenter))
    diff = differences(made, cfg)
    if diff:
        raise NudiffError(
            f"{manifest_path}: made with another synthesis configuration (a "
            f"different configuration of {diff}); use a new --out"
        )
    return manifest
