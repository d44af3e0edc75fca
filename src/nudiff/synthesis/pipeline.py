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

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from nudiff.data.dataset import find_pairs, load_folder, load_pair
from nudiff.data.formats import PAIR_FORMATS, detect_pair_format, pair_names, read_pair, write_pair
from nudiff.data.io import write_image
from nudiff.data.resize import resize_images, resize_instance_maps, upsample_labels
from nudiff.data.stain import fit_stain_normalizer, normalize_stain
from nudiff.diffusion.config import SampleConfig
from nudiff.diffusion.sample import load_model, read_model_config, sample_images
from nudiff.pictures import hstack, mosaic, overlay
from nudiff.quality.filter import FilterConfig, check_filter, filter_pairs
from nudiff.structure import encode
from nudiff.synthesis.config import (
    REAL_STRUCTURES,
    SynthesisConfig,
    check_same_config,
    resolve_sampling,
)
from nudiff.synthesis.sources import LabelSource, LabelWindow, real_windows, sampled_structures
from nudiff.utils import DataError, NudiffError, progress_bar, write_json


def synthesize(
    structure_run: Path | None,
    image_run: Path,
    out: Path,
    cfg: SynthesisConfig,
    real_dir: Path | None = None,
    pair_format: str = "png",
) -> dict:
    """Write ``cfg.n`` accepted synthetic pairs to ``out`` in ``pair_format`` (one of
    :data:`nudiff.data.formats.PAIR_FORMATS`); returns the manifest.

    With a pair filter on (``cfg.filter.filters_pairs``), the sampled pairs go to
    ``out/unfiltered`` and :func:`nudiff.quality.filter.filter_pairs` copies the kept ones to
    ``out`` (png only: convert the filtered folder with ``nudiff data convert``).
    """
    check_pair_format(pair_format, cfg.filter.filters_pairs)
    if not cfg.filter.filters_pairs:
        return _sample_pairs(structure_run, image_run, Path(out), cfg, real_dir, pair_format)
    out = Path(out)
    check_filter(cfg.filter, real_dir)
    structure = None if cfg.structures in REAL_STRUCTURES else structure_run
    check_same_config(out / "manifest.json", cfg, models=model_sampling(structure, image_run))
    n_sampled = math.ceil(cfg.n / cfg.filter.keep_top) if cfg.filter.keep_top else cfg.n
    raw_filter = replace(
        cfg.filter, segmenter=None, min_fidelity=None, keep_top=None, real_percentiles=None
    )
    raw = _sample_pairs(
        structure_run,
        image_run,
        out / "unfiltered",
        replace(cfg, n=n_sampled, filter=raw_filter),
        real_dir,
    )
    header = {
        k: raw[k]
        for k in ("structure_model", "image_model", "scale", "structure_scale", "format")
        if k in raw
    }
    header |= {"config": raw["config"] | {"n": cfg.n, "filter": asdict(cfg.filter)}}
    manifest = filter_pairs(
        out / "unfiltered", out, cfg.filter, real_dir, n_keep=cfg.n, header=header
    )
    if manifest["n_accepted"]:
        write_mosaic(out, real_dir, segmenter=cfg.filter.segmenter)
    return manifest


def check_pair_format(pair_format: str, filtered: bool) -> None:
    """Refuse an unknown ``pair_format``, and any but png with the pair filter on."""
    if pair_format not in PAIR_FORMATS:
        raise NudiffError(
            f"synthesize: unknown format {pair_format!r}; use one of {', '.join(PAIR_FORMATS)}"
        )
    if filtered and pair_format != "png":
        raise NudiffError(
            f"synthesize: the pair filter reads and writes png pairs, not "
            f"{pair_format}; filter with --format png, then `nudiff data convert "
            f"OUT --to {pair_format} --out DIR`"
        )


def model_sampling(
    structure_run: Path | None, image_run: Path
) -> tuple[SampleConfig | None, SampleConfig]:
    """The ``sample`` settings saved in the models' folders (``None`` without a structure
    model)."""
    structure = (
        None if structure_run is None else read_model_config(structure_run, "structure").sample
    )
    return structure, read_model_config(image_run, "image").sample


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


@dataclass
class _Run:
    """What one unfiltered synthesis samples with: its configuration (sampling resolved), the
    label source, the image model and the scales the two models work at."""

    cfg: SynthesisConfig
    labels: LabelSource
    image_model: object
    hv_min_area: int
    scale: float  # the structure model's (the image model's with real labels)
    image_scale: float
    normalizer: object
    header: dict
    manifest: dict | None  # of the run this one resumes


class _Pair(NamedTuple):
    """A kept window ready for the image model."""

    index: int
    condition_labels: np.ndarray  # int32 (h, w) at the image model's scale
    full_size: np.ndarray  # int32 (H, W) labels at the source resolution
    structure: np.ndarray | None  # the sampled structure (None: save the condition)
    n_nuclei: int


def _sample_pairs(
    structure_run: Path | None,
    image_run: Path,
    out: Path,
    cfg: SynthesisConfig,
    real_dir: Path | None = None,
    pair_format: str = "png",
) -> dict:
    """Sample, decode, check and write ``cfg.n`` pairs (the unfiltered synthesis)."""
    run = _open_run(structure_run, image_run, out, cfg, real_dir, pair_format)
    cfg, manifest_path = run.cfg, out / "manifest.json"
    (out / "structures").mkdir(parents=True, exist_ok=True)
    samples: dict = dict(run.manifest["samples"]) if run.manifest else {}
    rejected: dict = dict(run.manifest["rejected"]) if run.manifest else {}
    attempts = max(int(cfg.n * cfg.max_attempts_factor), cfg.n)
    index = (max(int(k) for k in list(samples) + list(rejected)) + 1) if samples or rejected else 0
    t0 = time.time()
    bar = progress_bar(total=cfg.n, initial=len(samples), desc="synthesize", unit="pair")
    while len(samples) < cfg.n and index < attempts:
        chunk = min(cfg.batch_size, attempts - index)
        kept = _check_windows(run.labels(index, chunk), index, cfg.filter, rejected)
        kept = [_for_image_model(i, w, run) for i, w in kept[: cfg.n - len(samples)]]
        if kept:
            for sample in _draw_images(run, kept, index, out, pair_format):
                samples[str(sample.pop("index"))] = sample
                bar.update(1)
        index += chunk
        _write_manifest(manifest_path, run.header, samples, rejected, time.time() - t0)
    bar.close()
    if len(samples) < cfg.n:
        print(
            f"warning: only {len(samples)} of {cfg.n} structures passed the filter "
            f"after {index} attempts ({_counts(rejected)})"
        )
    manifest = _write_manifest(manifest_path, run.header, samples, rejected, time.time() - t0)
    if samples:
        write_mosaic(out, real_dir)
    return manifest


def _open_run(
    structure_run: Path | None,
    image_run: Path,
    out: Path,
    cfg: SynthesisConfig,
    real_dir: Path | None,
    pair_format: str,
) -> _Run:
    """Load the models and the label source, refusing what cannot be resumed or sampled before
    anything is written."""
    image_model, i_cfg = load_model(image_run, kind="image")
    from_subset = cfg.structures in REAL_STRUCTURES
    structure_model, s_cfg = (
        (None, i_cfg) if from_subset else load_model(structure_run, kind="structure")
    )
    cfg = resolve_sampling(cfg, s_cfg.sample, i_cfg.sample)
    manifest_path = out / "manifest.json"
    manifest = check_same_config(manifest_path, cfg, models=(s_cfg.sample, i_cfg.sample))
    if manifest is not None and manifest.get("format", "png") != pair_format:
        raise NudiffError(
            f"{manifest_path}: pairs written as {manifest.get('format', 'png')}, not "
            f"{pair_format}; use a new --out (or `nudiff data convert`)"
        )
    normalizer = _stain_normalizer(cfg.stain, real_dir)
    # the structure model may work below the image model's resolution (e.g. structures at 0.5,
    # images at 1): its decoded labels are then upsampled to full size and taken to the image scale
    scale, image_scale = float(s_cfg.data.scale), float(i_cfg.data.scale)
    if image_scale < scale:
        raise DataError(
            image_run,
            f"image model at scale {image_scale:g} below the structure "
            f"model's {scale:g}: its labels would be downsampled; train the image "
            f"model at >= {scale:g}",
        )
    if from_subset:
        full_side = round((cfg.size or i_cfg.data.patch_size) / scale)
        labels = real_windows(cfg, real_dir, full_side, scale)
    else:
        labels = sampled_structures(structure_model, cfg)
    header = {
        "structure_model": None if from_subset else str(structure_run),
        "image_model": str(image_run),
        "config": asdict(cfg),
        "scale": image_scale,
        "structure_scale": scale,
        "format": pair_format,
    }
    return _Run(
        cfg,
        labels,
        image_model,
        i_cfg.data.hv_min_area,
        scale,
        image_scale,
        normalizer,
        header,
        manifest,
    )


def _check_windows(
    windows: list[LabelWindow], first_index: int, cfg: FilterConfig, rejected: dict
) -> list[tuple[int, LabelWindow]]:
    """The windows that pass :func:`check_structure`, with their indices; the others' reasons
    go to ``rejected`` (index -> reason)."""
    kept = []
    for j, window in enumerate(windows):
        reason = check_structure(window.instance_map, cfg)
        if reason:
            rejected[str(first_index + j)] = reason
        else:
            kept.append((first_index + j, window))
    return kept


def _for_image_model(index: int, window: LabelWindow, run: _Run) -> _Pair:
    """``window``'s labels at the image model's scale and at the source resolution."""
    upsampling = run.cfg.label_upsampling
    if run.image_scale != run.scale:
        at_image, full = _to_image_scale(
            window.instance_map, run.scale, run.image_scale, upsampling
        )
        return _Pair(index, at_image, full, window.structure, int(full.max()))
    if window.exact:  # full-size labels already: the subset window's own
        full = window.full_size
        return _Pair(index, window.instance_map, full, None, int(full.max()))
    full = upsample_labels(window.instance_map, 1 / run.scale, upsampling)
    return _Pair(
        index, window.instance_map, full, window.structure, int(window.instance_map.max())
    )


def _draw_images(
    run: _Run, pairs: list[_Pair], first_index: int, out: Path, pair_format: str
) -> list[dict]:
    """Sample an image for each of ``pairs`` (noise from (seed + 1, ``first_index`` + k)), write
    each pair and its structure; the manifest's record of each."""
    i_sample = run.cfg.image_sample
    conditions = np.stack([encode(p.condition_labels, min_area=run.hv_min_area) for p in pairs])
    images = sample_images(
        run.image_model,
        conditions,
        seed=run.cfg.seed + 1,
        first_index=first_index,
        sampler=i_sample.sampler,
        steps=i_sample.steps,
        guidance_scale=i_sample.guidance_scale,
        batch_size=run.cfg.batch_size,
        clip_x0=i_sample.clip_x0,
        precision=run.cfg.precision,
        progress=False,
    )
    written = []
    for pair, condition, image in zip(pairs, conditions, images):
        name = f"syn_{pair.index:05d}"
        image_full = resize_images(image[None], 1 / run.image_scale)[0]
        image_full = normalize_stain(image_full, run.normalizer)
        write_pair(out, name, image_full, pair.full_size, pair_format)
        # the sampled structure (subset windows: the condition the image was drawn on)
        structure = condition if pair.structure is None else pair.structure
        np.save(out / "structures" / f"{name}.npy", structure)
        written.append({"index": pair.index, "name": name, "n_nuclei": pair.n_nuclei})
    return written


def _to_image_scale(
    inst: np.ndarray, scale: float, image_scale: float, labels: str
) -> tuple[np.ndarray, np.ndarray]:
    """Labels decoded at the structure model's ``scale`` -> (labels at ``image_scale``, the
    full-size labels), upsampled as ``labels`` says (nearest or smooth)."""
    full = upsample_labels(inst, 1 / scale, labels) if scale != 1 else inst
    at_image = full if image_scale == 1 else resize_instance_maps(full[None], image_scale)[0]
    return at_image, full


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


def _write_manifest(
    path: Path, header: dict, samples: dict, rejected: dict, seconds: float
) -> dict:
    manifest = header | {
        "n_accepted": len(samples),
        "n_rejected": len(rejected),
        "rejected_by_reason": _counts(rejected),
        "seconds_this_run": round(seconds, 1),
        "samples": samples,
        "rejected": rejected,
    }
    write_json(path, manifest)
    return manifest


def write_mosaic(
    out: Path, real_dir: Path | None = None, n: int = 8, segmenter: str | None = None
) -> Path:
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
        images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
        pair_fidelity(*load(segmenter), images, labels, False, unlabeled)
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
