"""Synthesize labeled pairs: structures -> instance maps -> re-encoded structures -> images.

Unlike the reference, the image model is conditioned on the structure **re-encoded from the
decoded instance map**, so the image and its label agree by construction (no nuclei removed
by a size filter or split by the watershed behind the image's back).

Output (the layout the data layer reads)::

    OUT/images/syn_00000.png   RGB uint8, at the source resolution (model output / data.scale)
    OUT/labels/syn_00000.png   16-bit instance map
    OUT/structures/syn_00000.npy  the raw sampled structure (float32 (3, h, w), model scale)
    OUT/manifest.json          checkpoints, seed, sampler, steps, guidance, filter counts
    OUT/mosaic.png             synthetic pairs (image | overlay) beside real ones

Deterministic for a seed: structure ``i`` draws its noise from (seed, i), its image from
(seed + 1, i'), with i' fixed by the chunking of the run; a killed job resumes at the last
finished chunk and redoes the unfinished one identically.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from nudiff.structure import DecodeParams, decode, encode
from nudiff.utils import NudiffError, progress_bar, read_json, write_json


@dataclass
class FilterConfig:
    """Rejects degenerate sampled structures (counted in the manifest).

    min_nuclei: fewer decoded nuclei than this -> rejected (an empty structure teaches nothing).
    max_mean_area / min_mean_area: mean nucleus area (px at the model's scale) outside this
        range -> rejected (implausible blobs or dust); ``None`` disables a bound.
    max_foreground: foreground fraction above this -> rejected.
    """

    min_nuclei: int = 1
    min_mean_area: float | None = 4.0
    max_mean_area: float | None = 2000.0
    max_foreground: float = 0.9


@dataclass
class SynthesisConfig:
    n: int = 256
    seed: int = 0
    structure_sampler: str = "ddim"
    structure_steps: int = 50
    image_sampler: str = "ddim"
    image_steps: int = 50
    guidance_scale: float = 2.0
    batch_size: int = 16
    precision: str = "bf16"
    max_attempts_factor: float = 3.0
    filter: FilterConfig = field(default_factory=FilterConfig)


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


def _resize(image: np.ndarray, inst: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Back to the source resolution: bilinear for the image, nearest for the labels."""
    from nudiff.diffusion.data import resize_images, resize_instance_maps

    return resize_images(image[None], factor)[0], resize_instance_maps(inst[None], factor)[0]


def synthesize(structure_run: Path, image_run: Path, out: Path, cfg: SynthesisConfig,
               real_dir: Path | None = None) -> dict:
    """Write ``cfg.n`` accepted synthetic pairs to ``out``; returns the manifest."""
    from nudiff.data.io import write_image, write_instance_map
    from nudiff.diffusion.sample import load_model, sample_images, sample_structures

    out = Path(out)
    manifest_path = out / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.exists() else None
    structure_model, s_cfg = load_model(structure_run)
    image_model, i_cfg = load_model(image_run)
    scale = float(s_cfg.data.scale)
    header = {
        "structure_model": str(structure_run), "image_model": str(image_run),
        "config": asdict(cfg), "scale": scale,
    }
    if manifest is not None and manifest.get("config") != header["config"]:
        raise NudiffError(f"{manifest_path}: exists with a different configuration; use a new --out")
    (out / "structures").mkdir(parents=True, exist_ok=True)
    samples: dict = dict(manifest["samples"]) if manifest else {}
    rejected: dict = dict(manifest["rejected"]) if manifest else {}
    decode_params = DecodeParams(fg_threshold=0.5)
    attempts = max(int(cfg.n * cfg.max_attempts_factor), cfg.n)
    index = (max(int(k) for k in list(samples) + list(rejected)) + 1) if samples or rejected else 0
    t0 = time.time()
    bar = progress_bar(total=cfg.n, initial=len(samples), desc="synthesize", unit="pair")
    while len(samples) < cfg.n and index < attempts:
        chunk = min(cfg.batch_size, attempts - index)
        structures = sample_structures(structure_model, chunk, seed=cfg.seed, first_index=index,
                                       sampler=cfg.structure_sampler, steps=cfg.structure_steps,
                                       batch_size=cfg.batch_size, precision=cfg.precision,
                                       progress=False)
        kept = []
        for j, s in enumerate(structures):
            inst = decode(s, decode_params)
            reason = check_structure(inst, cfg.filter)
            if reason:
                rejected[str(index + j)] = reason
            else:
                kept.append((index + j, s, inst))
        kept = kept[: cfg.n - len(samples)]
        if kept:
            conditions = np.stack([encode(inst, min_area=_min_area(s_cfg)) for _, _, inst in kept])
            images = sample_images(image_model, conditions, seed=cfg.seed + 1, first_index=index,
                                   sampler=cfg.image_sampler, steps=cfg.image_steps,
                                   guidance_scale=cfg.guidance_scale, batch_size=cfg.batch_size,
                                   precision=cfg.precision, progress=False)
            for (i, s, inst), image in zip(kept, images):
                name = f"syn_{i:05d}"
                image_full, inst_full = _resize(image, inst, 1 / scale)
                write_image(out / "images" / f"{name}.png", image_full)
                write_instance_map(out / "labels" / f"{name}.png", inst_full)
                np.save(out / "structures" / f"{name}.npy", s)
                samples[str(i)] = {"name": name, "n_nuclei": int(inst.max())}
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


def _min_area(cfg) -> int:
    if cfg.data.min_area is not None:
        return int(cfg.data.min_area)
    return round(30 * cfg.data.scale**2)


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


def write_mosaic(out: Path, real_dir: Path | None = None, n: int = 8) -> Path:
    """mosaic.png: rows of (image | overlay) for synthetic pairs, then real ones."""
    from nudiff.data.dataset import find_pairs, load_pair
    from nudiff.data.io import write_image
    from nudiff.report import hstack, mosaic, overlay

    tiles = []
    syn = find_pairs(out)[:n]
    size = None
    for p in syn:
        s = load_pair(p)
        size = s.image.shape[0]
        tiles.append(hstack([s.image, overlay(s.image, s.instance_map, (0, 255, 0))], gap=1))
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
        epilog="example:\n  nudiff synthesize --structure-model runs/s10 --image-model runs/i10 "
        "-n 256 --seed 0 --out runs/syn10 --real runs/data/val",
    )
    p.add_argument("--structure-model", type=Path, required=True, help="run dir of `nudiff train structure`")
    p.add_argument("--image-model", type=Path, required=True, help="run dir of `nudiff train image`")
    p.add_argument("-n", type=int, default=None, help="number of pairs (default: config)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--config", type=Path, default=None, help="YAML with a `synthesis` section")
    p.add_argument("--sampler", choices=("ddpm", "ddim", "dpmsolver++"), default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="s in eps_u + s (eps_c - eps_u); the paper's w is s - 1")
    p.add_argument("--real", type=Path, default=None, help="paired folder of real patches for the mosaic")
    p.set_defaults(func=_cmd_synthesize)


def _cmd_synthesize(args) -> None:
    from nudiff.config import load_config

    cfg = load_config(SynthesisConfig, args.config, section="synthesis")
    for key, value in (("n", args.n), ("seed", args.seed), ("guidance_scale", args.guidance_scale)):
        if value is not None:
            setattr(cfg, key, value)
    if args.sampler:
        cfg.structure_sampler = cfg.image_sampler = args.sampler
    if args.steps:
        cfg.structure_steps = cfg.image_steps = args.steps
    m = synthesize(args.structure_model, args.image_model, args.out, cfg, args.real)
    print(f"{m['n_accepted']} pairs in {args.out} ({m['n_rejected']} structures rejected: "
          f"{m['rejected_by_reason']}); mosaic: {args.out / 'mosaic.png'}")
