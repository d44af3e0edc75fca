"""Synthesize labeled pairs: structures -> instance maps -> re-encoded structures -> images.

Unlike the reference, the image model is conditioned on the structure **re-encoded from the
decoded instance map**, so the image and its label agree by construction (no nuclei removed
by a size filter or split by the watershed behind the image's back).

Output (the layout the data layer reads)::

    OUT/images/syn_00000.png   RGB uint8, at the source resolution (model output / data.scale)
    OUT/labels/syn_00000.png   16-bit instance map
    OUT/structures/syn_00000.npy  the raw sampled structure (float32 (3, h, w), model scale)
    OUT/manifest.json          checkpoints, seed, sampler, steps, guidance, filter counts, format
    OUT/mosaic.png             synthetic pairs (image | overlay) beside real ones (with a filter
                               segmenter: the nuclei it finds that a label lacks in magenta)

``--format hovernet`` writes the pairs as OUT/Images/<name>.png + OUT/Labels/<name>.mat
(``inst_map``, ``inst_centroid``), ``--format npy`` as OUT/images/<name>.npy (uint8 (H, W, 3))
+ OUT/labels/<name>.npy (int32 (H, W)); ``nudiff data convert OUT --to FORMAT --out DIR``
turns one into another (docs/synthetic-formats.md). nudiff's own stages read the png layout.

With a pair filter (``FilterConfig.segmenter`` / ``real_percentiles``; off by default), the
sampled pairs go to ``OUT/unfiltered/`` (the layout above) and the kept ones to ``OUT``, with
every pair's scores and every rejection in ``OUT/manifest.json``
(:func:`nudiff.quality.filter.filter_pairs`, also usable alone: ``--filter-only``).

Deterministic for a seed: structure ``i`` draws its noise from (seed, i), its image from
(seed + 1, i'), with i' fixed by the chunking of the run; a killed job resumes at the last
finished chunk and redoes the unfinished one identically.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from skimage.segmentation import relabel_sequential

from nudiff.config import ADDED_LATER, differences, from_dict, load_config, warn_deprecated
from nudiff.data.copypaste import CopyPasteConfig, donors_of, paste_nuclei
from nudiff.data.dataset import find_pairs, load_folder, load_pair
from nudiff.data.formats import PAIR_FORMATS, detect_pair_format, pair_names, read_pair, write_pair
from nudiff.data.io import read_instance_map, write_image
from nudiff.data.resize import resize_images, resize_instance_maps, upsample_labels
from nudiff.data.stain import STAIN_METHODS, fit_stain_normalizer, normalize_stain
from nudiff.diffusion.config import SampleConfig
from nudiff.diffusion.sample import load_model, read_model_config, sample_images, sample_structures
from nudiff.pictures import hstack, mosaic, overlay
from nudiff.quality.filter import FilterConfig, check_filter, filter_pairs
from nudiff.structure import DecodeParams, decode, encode
from nudiff.utils import DataError, NudiffError, progress_bar, read_json, write_json

__all__ = ["FilterConfig", "SynthesisConfig", "check_same_config", "check_structure", "resolve_sampling",
           "synthesize"]  # FilterConfig: with its filter, in nudiff.quality.filter


LABEL_UPSAMPLING = ("nearest", "smooth")
# where the labels come from: the structure model, windows of the labeled subset's own labels,
# or those windows with more of the subset's nuclei pasted in (labels only)
STRUCTURE_SOURCES = ("sampled", "subset", "copypaste")
REAL_STRUCTURES = ("subset", "copypaste")  # sources that need no structure model


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
    with a warning.)
    ``stain``: ``none`` | ``reinhard`` | ``macenko`` | ``reinhard-each`` — every image is stain-normalised to the
    real images (``real_dir``: the labeled subset in an experiment) as it is written;
    ``size``: side of the sampled windows in model pixels (default: the models' training
    ``patch_size``; the U-Nets are convolutional, so e.g. 128 at scale 0.5 gives 256-px pairs).
    ``decode``: how sampled structures become instance maps (:class:`nudiff.structure.DecodeParams`;
    ``min_marker: 2`` splits more of the merged nuclei a small structure model makes).
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
    ``pasted_nuclei``: nuclei tried per window with ``structures: copypaste`` (3: about the
    copy-paste arm's density, ~10 pasted per 256-px patch, for the 128-px windows of scale 0.5)."""

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
    structures: str = field(default="sampled", metadata=ADDED_LATER)
    pasted_nuclei: int = field(default=3, metadata=ADDED_LATER)

    def __post_init__(self) -> None:
        if self.structures not in STRUCTURE_SOURCES:
            raise NudiffError(f"synthesis.structures must be one of {STRUCTURE_SOURCES}, got {self.structures!r}")
        if self.stain not in STAIN_METHODS:
            raise NudiffError(f"synthesis.stain must be one of {STAIN_METHODS}, got {self.stain!r}")
        if self.label_upsampling not in LABEL_UPSAMPLING:
            raise NudiffError(f"synthesis.label_upsampling must be one of {LABEL_UPSAMPLING}, "
                              f"got {self.label_upsampling!r}")

    @staticmethod
    def upgrade_keys(data: dict, where: str) -> dict:
        """The flat sampler keys of earlier versions -> ``structure_sample`` / ``image_sample``
        (a key left out had the default of those versions: ddim, 50 steps, guidance 2)."""
        flat = {k: data.pop(k) for k in [*FLAT_SAMPLE_KEYS["structure"], *FLAT_SAMPLE_KEYS["image"]] if k in data}
        if not flat:
            return data
        for model, keys in FLAT_SAMPLE_KEYS.items():
            given = {field: flat[key] for key, field in keys.items() if key in flat}
            if given:
                if data.get(f"{model}_sample") is not None:
                    raise DataError(where, f"{', '.join(k for k in keys if k in flat)} and {model}_sample "
                                f"both given; keep {model}_sample")
                data[f"{model}_sample"] = {"sampler": "ddim", "steps": 50, "guidance_scale": 2.0} | given
        warn_deprecated(f"{where}: synthesis keys {', '.join(flat)} are deprecated (read as "
                        "structure_sample: {sampler, steps} and image_sample: {sampler, steps, guidance_scale})")
        return data


# the flat keys of earlier versions: model -> {key: SampleConfig field}
FLAT_SAMPLE_KEYS = {
    "structure": {"structure_sampler": "sampler", "structure_steps": "steps"},
    "image": {"image_sampler": "sampler", "image_steps": "steps", "guidance_scale": "guidance_scale"},
}


def resolve_sampling(cfg: SynthesisConfig, structure: SampleConfig | None, image: SampleConfig) -> SynthesisConfig:
    """``cfg`` with each model's sampling settled: a ``null`` ``structure_sample`` /
    ``image_sample`` becomes that model's own settings (``structure`` / ``image``: the
    ``sample`` section of its config); with labels from the subset no structure model is
    sampled (``structure_sample`` is then ``None``). What a manifest records and compares."""
    s = None if cfg.structures in REAL_STRUCTURES else (cfg.structure_sample or structure)
    return replace(cfg, structure_sample=s, image_sample=cfg.image_sample or image)


def check_structure(instance_map: np.ndarray, cfg: FilterConfig) -> str | None:
    """Why a decoded structure is rejected, or ``None`` when it is kept."""
    n = int(instance_map.max())
    if n < cfg.min_nuclei:
        return "too_few_nuclei"
    fg = instance_map > 0
    mean_area = fg.sum() / max(n, 1)
    if cfg.min_mean_area is not None and mean_area < cfg.min_mean_area:
        return "nuclei_too_small"
    if cfg.max_mean_area is not None and mean_area > cfg.max_mean_area:
        return "nuclei_too_large"
    if fg.mean() > cfg.max_foreground:
        return "too_much_foreground"
    return None


def _resize(image: np.ndarray, inst: np.ndarray, factor: float,
            labels: str = "nearest") -> tuple[np.ndarray, np.ndarray]:
    """Back to the source resolution: bilinear for the image; for the labels, nearest or
    ``"smooth"`` (:func:`nudiff.data.resize.upsample_instance_map_smooth`, sigma 1 px)."""
    return resize_images(image[None], factor)[0], upsample_labels(inst, factor, labels)


def _to_image_scale(inst: np.ndarray, scale: float, image_scale: float,
                    labels: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels decoded at the structure model's ``scale`` -> (labels at ``image_scale``, the
    full-size labels), upsampled as ``labels`` says (nearest or smooth)."""
    full = upsample_labels(inst, 1 / scale, labels) if scale != 1 else inst
    at_image = full if image_scale == 1 else resize_instance_maps(full[None], image_scale)[0]
    return at_image, full


def subset_window(label_maps: list[np.ndarray], side: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``side``-px window of one of ``label_maps`` under one of the 8 flips/rotations,
    relabelled 1..n (int32)."""
    m = label_maps[int(rng.integers(len(label_maps)))]
    y, x = int(rng.integers(m.shape[0] - side + 1)), int(rng.integers(m.shape[1] - side + 1))
    window = np.rot90(m[y:y + side, x:x + side], int(rng.integers(4)))
    if rng.integers(2):
        window = window[:, ::-1]
    return relabel_sequential(np.ascontiguousarray(window, dtype=np.int32))[0]


def pasted_window(label_maps: list[np.ndarray], donors: list, side: int, rng: np.random.Generator,
                  cfg) -> np.ndarray:
    """:func:`subset_window` with up to ``cfg.nuclei`` of ``donors`` (label-only
    :class:`nudiff.data.copypaste.Donor`) pasted at free positions, ids max+1… (int32)."""
    return paste_nuclei(None, subset_window(label_maps, side, rng), donors, rng, cfg)[1]


def _label_donors(label_maps: list[np.ndarray], nuclei: int) -> tuple[list, object]:
    """Label-only donors of the subset's maps and the paste configuration."""
    cfg = CopyPasteConfig(nuclei=nuclei)
    maps = [SimpleNamespace(image=None, instance_map=m) for m in label_maps]
    return donors_of(maps, cfg, pad=cfg.margin), cfg


def _subset_labels(real_dir: Path | None, side: int, source: str = "subset") -> list[np.ndarray]:
    if real_dir is None:
        raise NudiffError(f"synthesis.structures '{source}' needs the labeled subset's folder (--real)")
    paths = sorted((Path(real_dir) / "labels").glob("*.png"))
    maps = [read_instance_map(p) for p in paths]
    small = [p.name for p, m in zip(paths, maps) if min(m.shape) < side]
    if not maps or small:
        raise NudiffError(f"{Path(real_dir) / 'labels'}: synthesis.structures '{source}' needs label maps of at "
                          f"least {side} px a side ({'none found' if not maps else 'smaller: ' + ', '.join(small[:3])})")
    return maps


def check_same_config(manifest_path: Path, cfg: SynthesisConfig, any_segmenter: bool = False,
                      models: tuple[SampleConfig | None, SampleConfig] | None = None) -> dict | None:
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
        raise NudiffError(f"{manifest_path}: made with another synthesis configuration (a different "
                          f"configuration of {diff}); use a new --out")
    return manifest


def model_sampling(structure_run: Path | None, image_run: Path) -> tuple[SampleConfig | None, SampleConfig]:
    """The ``sample`` settings saved in the models' folders (``None`` without a structure model)."""
    structure = None if structure_run is None else read_model_config(structure_run, "structure").sample
    return structure, read_model_config(image_run, "image").sample


def synthesize(structure_run: Path | None, image_run: Path, out: Path, cfg: SynthesisConfig,
               real_dir: Path | None = None, pair_format: str = "png") -> dict:
    """Write ``cfg.n`` accepted synthetic pairs to ``out`` in ``pair_format`` (one of
    :data:`nudiff.data.formats.PAIR_FORMATS`); returns the manifest.

    With a pair filter on (``cfg.filter.filters_pairs``), the sampled pairs go to
    ``out/unfiltered`` and :func:`nudiff.quality.filter.filter_pairs` copies the kept ones to ``out``
    (png only: convert the filtered folder with ``nudiff data convert``).
    """
    _check_pair_format(pair_format, cfg.filter.filters_pairs)
    if not cfg.filter.filters_pairs:
        return _sample_pairs(structure_run, image_run, Path(out), cfg, real_dir, pair_format)
    out = Path(out)
    check_filter(cfg.filter, real_dir)
    structure = None if cfg.structures in REAL_STRUCTURES else structure_run
    check_same_config(out / "manifest.json", cfg, models=model_sampling(structure, image_run))
    n_sampled = math.ceil(cfg.n / cfg.filter.keep_top) if cfg.filter.keep_top else cfg.n
    raw_filter = replace(cfg.filter, segmenter=None, min_fidelity=None, keep_top=None, real_percentiles=None)
    raw = _sample_pairs(structure_run, image_run, out / "unfiltered", replace(cfg, n=n_sampled, filter=raw_filter),
                        real_dir)
    header = {k: raw[k] for k in ("structure_model", "image_model", "scale", "structure_scale", "format")
              if k in raw}
    header |= {"config": raw["config"] | {"n": cfg.n, "filter": asdict(cfg.filter)}}
    manifest = filter_pairs(out / "unfiltered", out, cfg.filter, real_dir, n_keep=cfg.n, header=header)
    if manifest["n_accepted"]:
        write_mosaic(out, real_dir, segmenter=cfg.filter.segmenter)
    return manifest


def _check_pair_format(pair_format: str, filtered: bool) -> None:
    if pair_format not in PAIR_FORMATS:
        raise NudiffError(f"synthesize: unknown format {pair_format!r}; use one of {', '.join(PAIR_FORMATS)}")
    if filtered and pair_format != "png":
        raise NudiffError(f"synthesize: the pair filter reads and writes png pairs, not {pair_format}; filter "
                          f"with --format png, then `nudiff data convert OUT --to {pair_format} --out DIR`")


def _sample_pairs(structure_run: Path | None, image_run: Path, out: Path, cfg: SynthesisConfig,
                  real_dir: Path | None = None, pair_format: str = "png") -> dict:
    """Sample, decode, check and write ``cfg.n`` pairs (the unfiltered synthesis)."""
    image_model, i_cfg = load_model(image_run, kind="image")
    from_subset = cfg.structures in REAL_STRUCTURES
    structure_model, s_cfg = (None, i_cfg) if from_subset else load_model(structure_run, kind="structure")
    cfg = resolve_sampling(cfg, s_cfg.sample, i_cfg.sample)
    manifest_path = out / "manifest.json"
    manifest = check_same_config(manifest_path, cfg, models=(s_cfg.sample, i_cfg.sample))
    if manifest is not None and manifest.get("format", "png") != pair_format:
        raise NudiffError(f"{manifest_path}: pairs written as {manifest.get('format', 'png')}, not {pair_format}; "
                          "use a new --out (or `nudiff data convert`)")
    normalizer = _stain_normalizer(cfg.stain, real_dir)
    s_sample, i_sample = cfg.structure_sample, cfg.image_sample
    # the structure model may work below the image model's resolution (e.g. structures at 0.5,
    # images at 1): its decoded labels are then upsampled to full size and taken to the image scale
    scale, image_scale = float(s_cfg.data.scale), float(i_cfg.data.scale)
    if image_scale < scale:
        raise DataError(image_run, f"image model at scale {image_scale:g} below the structure model's "
                        f"{scale:g}: its labels would be downsampled; train the image model at >= {scale:g}")
    if from_subset:
        full_side = round((cfg.size or i_cfg.data.patch_size) / scale)
        label_maps = _subset_labels(real_dir, full_side, cfg.structures)
        if cfg.structures == "copypaste":
            donors, paste = _label_donors(label_maps, cfg.pasted_nuclei)
            draw_label = partial(pasted_window, label_maps, donors, full_side, cfg=paste)
        else:
            draw_label = partial(subset_window, label_maps, full_side)
    header = {
        "structure_model": None if from_subset else str(structure_run), "image_model": str(image_run),
        "config": asdict(cfg), "scale": image_scale, "structure_scale": scale, "format": pair_format,
    }
    (out / "structures").mkdir(parents=True, exist_ok=True)
    samples: dict = dict(manifest["samples"]) if manifest else {}
    rejected: dict = dict(manifest["rejected"]) if manifest else {}
    decode_params = cfg.decode
    attempts = max(int(cfg.n * cfg.max_attempts_factor), cfg.n)
    index = (max(int(k) for k in list(samples) + list(rejected)) + 1) if samples or rejected else 0
    t0 = time.time()
    bar = progress_bar(total=cfg.n, initial=len(samples), desc="synthesize", unit="pair")
    while len(samples) < cfg.n and index < attempts:
        chunk = min(cfg.batch_size, attempts - index)
        # (labels at model resolution, exact full-resolution labels or None, raw structure or None)
        if from_subset:
            full = [draw_label(rng=np.random.default_rng([cfg.seed, index + j])) for j in range(chunk)]
            drawn = [(resize_instance_maps(f[None], scale)[0], f, None) for f in full]
        else:
            structures = sample_structures(structure_model, chunk, seed=cfg.seed, first_index=index,
                                           size=cfg.size, sampler=s_sample.sampler, steps=s_sample.steps,
                                           batch_size=cfg.batch_size, clip_x0=s_sample.clip_x0,
                                           precision=cfg.precision, progress=False)
            drawn = [(decode(s, decode_params), None, s) for s in structures]
        kept = []
        for j, (inst, exact, raw) in enumerate(drawn):
            reason = check_structure(inst, cfg.filter)
            if reason:
                rejected[str(index + j)] = reason
            else:
                kept.append((index + j, inst, exact, raw))
        kept = kept[: cfg.n - len(samples)]
        if image_scale != scale:
            kept = [(i, *_to_image_scale(inst, scale, image_scale, cfg.label_upsampling), raw)
                    for i, inst, _, raw in kept]
        if kept:
            conditions = np.stack([encode(inst, min_area=i_cfg.data.hv_min_area) for _, inst, _, _ in kept])
            images = sample_images(image_model, conditions, seed=cfg.seed + 1, first_index=index,
                                   sampler=i_sample.sampler, steps=i_sample.steps,
                                   guidance_scale=i_sample.guidance_scale, batch_size=cfg.batch_size,
                                   clip_x0=i_sample.clip_x0, precision=cfg.precision, progress=False)
            for (i, inst, exact, raw), condition, image in zip(kept, conditions, images):
                name = f"syn_{i:05d}"
                if exact is None:
                    image_full, inst_full = _resize(image, inst, 1 / scale, cfg.label_upsampling)
                else:  # full-size labels already: the subset window's own, or upsampled structures
                    image_full, inst_full = resize_images(image[None], 1 / image_scale)[0], exact
                image_full = normalize_stain(image_full, normalizer)
                write_pair(out, name, image_full, inst_full, pair_format)
                # the sampled structure (subset windows: the condition the image was drawn on)
                np.save(out / "structures" / f"{name}.npy", condition if raw is None else raw)
                samples[str(i)] = {"name": name, "n_nuclei": int((inst if exact is None else exact).max())}
                bar.update(1)
        index += chunk
        _write_manifest(manifest_path, header, samples, rejected, time.time() - t0)
    bar.close()
    if len(samples) < cfg.n:
        print(f"warning: only {len(samples)} of {cfg.n} structures passed the filter "
              f"after {index} attempts ({_counts(rejected)})")
    manifest = _write_manifest(manifest_path, header, samples, rejected, time.time() - t0)
    if samples:
        write_mosaic(out, real_dir)
    return manifest


def _stain_normalizer(method: str, real_dir: Path | None):
    if method == "none":
        return None
    if real_dir is None:
        raise NudiffError(f"synthesis.stain {method!r} needs real images to normalise to (--real)")
    return fit_stain_normalizer([s.image for s in load_folder(real_dir, progress=False)], method)


def _counts(rejected: dict) -> dict:
    out: dict = {}
    for r in rejected.values():
        out[r] = out.get(r, 0) + 1
    return out


def _write_manifest(path: Path, header: dict, samples: dict, rejected: dict, seconds: float) -> dict:
    manifest = header | {
        "n_accepted": len(samples), "n_rejected": len(rejected), "rejected_by_reason": _counts(rejected),
        "seconds_this_run": round(seconds, 1), "samples": samples, "rejected": rejected,
    }
    write_json(path, manifest)
    return manifest


def write_mosaic(out: Path, real_dir: Path | None = None, n: int = 8, segmenter: str | None = None) -> Path:
    """mosaic.png: rows of (image | overlay) for synthetic pairs (in any pair format), then real
    ones. With ``segmenter`` (a real-trained segmenter's run folder, the filter's), the nuclei
    it finds in a synthetic image that the label lacks are outlined in magenta."""
    from nudiff.quality.fidelity import load, pair_fidelity
    from nudiff.quality.report import UNLABELED_COLOUR

    pairs = []
    pair_format = detect_pair_format(out)
    for name in pair_names(out, pair_format)[:n]:
        image, inst, _ = read_pair(out, name, pair_format)
        pairs.append((image, inst))
    unlabeled: list = []
    if segmenter and pairs:
        pair_fidelity(*load(segmenter), [p[0] for p in pairs], [p[1] for p in pairs], False, unlabeled)
    tiles, size = [], None
    for k, (image, inst) in enumerate(pairs):
        size = image.shape[0]
        picture = overlay(image, inst, (0, 255, 0))
        if unlabeled:
            picture = overlay(picture, unlabeled[k], UNLABELED_COLOUR)
        tiles.append(hstack([image, picture], gap=1))
    if real_dir is not None and size is not None:
        for p in find_pairs(real_dir)[:n]:
            s = load_pair(p)
            img, inst = s.image[:size, :size], s.instance_map[:size, :size]
            tiles.append(hstack([img, overlay(img, inst, (0, 255, 0))], gap=1))
    path = out / "mosaic.png"
    if tiles:
        write_image(path, mosaic(tiles, ncols=4, gap=6))
    return path


def register(sub) -> None:
    p = sub.add_parser(
        "synthesize",
        help="sample structures, decode them, sample matching images: a paired dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog="examples:\n  nudiff synthesize --structure-model runs/s10 --image-model runs/i10 "
        "-n 256 --seed 0 --out runs/syn10 --real runs/data/val --min-marker 2 --label-upsampling smooth\n"
        "  # sample 512, keep the 256 best by label fidelity whose nuclei look like real ones\n"
        "  nudiff synthesize --structure-model runs/s10 --image-model runs/i10 -n 256 --out runs/syn10f "
        "--real runs/data/val --segmenter runs/seg --keep-top 0.5 --real-percentiles 5 95\n"
        "  # diagnostic: images on windows of the labeled subset's own labels (no structure model)\n"
        "  nudiff synthesize --image-model runs/i10 --structures subset --real runs/subset10 -n 256 --out runs/syn10r\n"
        "  # ... with more of the subset's nuclei pasted into each window (new arrangements, real shapes)\n"
        "  nudiff synthesize --image-model runs/i10 --structures copypaste --real runs/subset10 -n 256 --out runs/syn10p\n"
        "  # filter a set already synthesized (no resampling)\n"
        "  nudiff synthesize --filter-only runs/syn10 --out runs/syn10f --segmenter runs/seg --min-fidelity 0.5",
    )
    p.add_argument("--structure-model", type=Path, default=None, help="run dir of `nudiff train structure`")
    p.add_argument("--image-model", type=Path, default=None, help="run dir of `nudiff train image`")
    p.add_argument("-n", type=int, default=None, help="number of pairs (default: config)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--format", choices=PAIR_FORMATS, default="png", dest="pair_format",
                   help="how the pairs are written: png (images/ + labels/, what nudiff reads), hovernet "
                   "(Images/*.png + Labels/*.mat with inst_map, inst_centroid) or npy (images/*.npy + "
                   "labels/*.npy); see docs/synthetic-formats.md")
    p.add_argument("--config", type=Path, default=None, help="YAML with a `synthesis` section")
    p.add_argument("--sampler", choices=("ddpm", "ddim", "dpmsolver++"), default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="s in eps_u + s (eps_c - eps_u); the paper's w is s - 1")
    p.add_argument("--real", type=Path, default=None,
                   help="paired folder of real images: the mosaic, the percentiles of --real-percentiles "
                   "and the stain reference of --stain")
    p.add_argument("--stain", choices=STAIN_METHODS, default=None,
                   help="stain-normalise every synthetic image to the --real images (torchstain; "
                   "reinhard-each: to one real image each, keeping their spread)")
    p.add_argument("--label-upsampling", choices=LABEL_UPSAMPLING, default=None,
                   help="labels of half-resolution models back to full size: nearest or smooth "
                   "(round outlines)")
    p.add_argument("--structures", choices=STRUCTURE_SOURCES, default=None,
                   help="sampled: labels from --structure-model (the method); subset: windows of the "
                   "--real folder's own labels, only the images synthesized; copypaste: those windows "
                   "with more of its nuclei pasted in (the recipe that paid on Kumar 10 %%)")
    p.add_argument("--pasted-nuclei", type=int, default=None,
                   help="nuclei tried per window with --structures copypaste (default 3)")
    p.add_argument("--min-marker", type=int, default=None,
                   help="decode: smallest marker (px) that seeds a nucleus (2 splits more merges)")
    f = p.add_argument_group("pair filter (off by default; synthesis.filter in the config)")
    f.add_argument("--segmenter", default=None, metavar="SEG_RUN",
                   help="a segmenter trained on real data: scores every pair's label fidelity")
    f.add_argument("--fidelity-metric", choices=("pq", "aji", "dice"), default=None)
    f.add_argument("--min-fidelity", type=float, default=None, help="reject pairs scoring below")
    f.add_argument("--keep-top", type=float, default=None,
                   help="keep this best fraction by fidelity (n / fraction pairs are sampled)")
    f.add_argument("--real-percentiles", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="reject pairs whose nucleus statistics fall outside these percentiles of real windows")
    f.add_argument("--filter-only", type=Path, default=None, metavar="SYN_DIR",
                   help="filter this synthesized folder into --out instead of sampling")
    p.set_defaults(func=_cmd_synthesize)


def _set_sampling(cfg: SynthesisConfig, args) -> None:
    """--sampler / --steps (both models) and --guidance-scale (the image model) on top of the
    config's sampling, or of the model's own where the config leaves it to the model."""
    runs = {"structure": args.structure_model, "image": args.image_model}
    for kind, run in runs.items():
        given = {"sampler": args.sampler, "steps": args.steps}
        if kind == "image":
            given["guidance_scale"] = args.guidance_scale
        given = {k: v for k, v in given.items() if v is not None}
        if not given or run is None:
            continue
        base = getattr(cfg, f"{kind}_sample") or read_model_config(run, kind).sample
        setattr(cfg, f"{kind}_sample", replace(base, **given))


def _cmd_synthesize(args) -> None:
    cfg = load_config(SynthesisConfig, args.config, section="synthesis")
    for key, value in (("n", args.n), ("seed", args.seed),
                       ("stain", args.stain), ("label_upsampling", args.label_upsampling),
                       ("structures", args.structures), ("pasted_nuclei", args.pasted_nuclei)):
        if value is not None:
            setattr(cfg, key, value)
    if args.min_marker is not None:
        cfg.decode = replace(cfg.decode, min_marker=args.min_marker)
    _set_sampling(cfg, args)
    for key in ("segmenter", "fidelity_metric", "min_fidelity", "keep_top", "real_percentiles"):
        if getattr(args, key) is not None:
            setattr(cfg.filter, key, tuple(args.real_percentiles) if key == "real_percentiles" else getattr(args, key))
    if args.filter_only is not None:
        _check_pair_format(args.pair_format, filtered=True)
        m = filter_pairs(args.filter_only, args.out, cfg.filter, args.real)
        if m["n_accepted"]:
            write_mosaic(args.out, args.real)
    elif args.structure_model is not None and cfg.structures in REAL_STRUCTURES:
        raise NudiffError(f"synthesize: --structure-model is not used with structures '{cfg.structures}' "
                          "(labels from --real); pass --structures sampled to use it")
    elif args.image_model is None or (args.structure_model is None and cfg.structures == "sampled"):
        raise NudiffError("synthesize: --structure-model and --image-model are required (--image-model "
                          "and --real with --structures subset or copypaste; or --filter-only SYN_DIR)")
    else:
        m = synthesize(args.structure_model, args.image_model, args.out, cfg, args.real, args.pair_format)
    print(f"{m['n_accepted']} pairs in {args.out} ({m['n_rejected']} rejected: "
          f"{m['rejected_by_reason']}); mosaic: {args.out / 'mosaic.png'}")
