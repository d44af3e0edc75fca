"""Sampling levers of the image model, with the structure model out of the way.

Every setting samples images on the **same** conditions: windows of the labeled subset's own
labels (``synthesis.structures: subset``, seed fixed), so only the image sampler differs. Each
set is compared with windows of the real training patches by the cheap measures of
``nudiff quality`` (no network): colour W1 (Lab mean / sd per image, in units of the real sd),
Laplacian-variance ratio, H-visibility of the labelled nuclei; with the real-vs-real floors.
A mosaic shows the first images of every setting on the same labels, one row each.

Settings: the grid's (DPM-Solver++ 20, guidance s = 2, bf16) and one change each: fp32,
s = 1 / 1.5 / 3, DPM-Solver++ 50, DDIM 50, DDPM 250 (the ancestral sampler: the model's own
distribution, slowest); and a diagnostic, ``zero-mean-noise``: the initial noise with its
per-channel means removed (if each image's colour comes from its noise's mean, the off hues
go). Checkpoint settings (``ckpt500`` ...) sample an earlier checkpoint of
the same training run (EMA weights), to see quality against training steps.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sampling_levers.py \\
        --image-model runs/kumar/diffusion/f0.10/image \
--subset runs/kumar/diffusion/f0.10/subset \\
        --real runs/kumar/data/patches --config configs/kumar-grid.yaml -n 64 --threads 1

Writes sampling_levers.{json,md,png} under --results (default benchmarks/results/sampling_levers).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from pathlib import Path

import numpy as np

from nudiff.experiment import load_plan
from nudiff.utils import read_json, set_threads, write_json, write_text

SETTINGS: dict[str, dict] = {
    "base": {},
    "fp32": {"precision": "no"},
    "s1": {"image_sample": {"guidance_scale": 1.0}},
    "s1.5": {"image_sample": {"guidance_scale": 1.5}},
    "s3": {"image_sample": {"guidance_scale": 3.0}},
    "dpm50": {"image_sample": {"steps": 50}},
    "ddim50": {"image_sample": {"sampler": "ddim", "steps": 50}},
    "ddpm250": {"image_sample": {"sampler": "ddpm", "steps": 250}},
    # diagnostic, not a recipe: each sample's initial noise with its per-channel means removed
    # (if colour drift comes from the noise's mean, it goes; see zero_mean_noise)
    "zero-mean-noise": {},
}
KEYS = ("colour_w1_mean", "laplacian_variance_ratio", "visible_fraction")


def sample_setting(name: str, args, plan) -> tuple[Path, float]:
    from nudiff.quality.filter import FilterConfig
    from nudiff.synthesis import synthesize

    out = args.out / name
    model = args.image_model
    overrides = dict(SETTINGS.get(name, {}))
    if "image_sample" in overrides:  # the image model's sampling, with this setting's changes
        own = plan.synthesis.image_sample or plan.image.sample
        overrides["image_sample"] = dataclasses.replace(own, **overrides["image_sample"])
    if name.startswith("ckpt"):  # an earlier checkpoint of the same run, as a model folder
        model = checkpoint_model(args.image_model, int(name[4:]), args.out / "models" / name)
    accept_all = FilterConfig(
        min_nuclei=0, min_mean_area=None, max_mean_area=None, max_foreground=1.0
    )
    cfg = dataclasses.replace(
        plan.synthesis,
        n=args.n,
        seed=0,
        structures="subset",
        stain="none",
        filter=accept_all,
        **overrides,
    )
    t = time.time()
    with zero_mean_noise(name == "zero-mean-noise"):
        synthesize(None, model, out, cfg, real_dir=args.subset)
    return out, (time.time() - t) / 60


@contextlib.contextmanager
def zero_mean_noise(on: bool):
    """While on, the samplers' initial noise (one (3, H, W) draw per sample in
    ``nudiff.diffusion.sample.denoise``) has its per-channel means removed."""
    import torch

    from nudiff.diffusion import sample

    if not on:
        yield
        return
    randn = torch.randn

    def centred(*a, **k):
        x = randn(*a, **k)
        return x - x.mean(dim=(1, 2), keepdim=True) if x.dim() == 3 and x.shape[0] == 3 else x

    sample.torch.randn = centred
    try:
        yield
    finally:
        sample.torch.randn = randn


def checkpoint_model(run: Path, step: int, folder: Path) -> Path:
    """``run/checkpoints/step_N``'s EMA weights as a model folder ``load_model`` reads."""
    from safetensors.torch import load_file

    from nudiff.config import load_config
    from nudiff.diffusion.config import DiffusionConfig
    from nudiff.diffusion.networks import Denoiser, save_denoiser

    ckpt = run / "checkpoints" / f"step_{step:07d}"
    if not ckpt.is_dir():
        raise SystemExit(f"{ckpt}: no such checkpoint")
    if not (folder / "model.safetensors").exists():  # the run's config (it may still be training)
        model = Denoiser(
            load_config(DiffusionConfig, run / "config.yaml")
        )  # strict load checks the keys
        model.load_state_dict(load_file(str(ckpt / "ema.safetensors")))
        save_denoiser(model, folder)
    return folder


def measure(folder: Path, real: Path, seed: int) -> dict:
    from nudiff.quality.assess import load_windows, structure_and_colour

    w = load_windows(folder, real, seed=seed, progress=False)
    metrics: dict = {}
    structure_and_colour(w, metrics, [{} for _ in w["synthetic"].names])
    return {k: v for k, v in metrics.items() if k.startswith(KEYS)}


def mosaic(folders: dict[str, Path], path: Path, k: int = 6) -> None:
    from nudiff.data.dataset import load_folder
    from nudiff.data.io import write_image
    from nudiff.pictures import hstack
    from nudiff.pictures import mosaic as grid

    rows = []
    for folder in folders.values():
        pairs = load_folder(folder, progress=False)[:k]
        rows.append(hstack([p.image for p in pairs], gap=2))
    write_image(path, grid(rows, ncols=1, gap=6))


def table(rows: dict[str, dict], n: int, threads: int | None) -> str:
    first = next(iter(rows.values()))
    lines = [
        "# Image-model sampling levers (`benchmarks/sampling_levers.py`)",
        "",
        f"{n} images per setting, all on the same conditions: windows of the labeled subset's own "
        "labels; only the image sampler (or checkpoint) differs. Floors: two halves of the real "
        "patches (as many windows; with so few, the Laplacian floor is noisy). Minutes: sampling "
        "at "
        f"{threads or 'all'} thread(s), on a machine that may have been busy.",
        "",
        "| setting | minutes | colour W1 | Laplacian ratio | H-visible nuclei |",
        "|---|---|---|---|---|",
        f"| real vs real (floor) | – | {first['colour_w1_mean_floor']:.3f} | "
        f"{first['laplacian_variance_ratio_floor']:.2f} | {first['visible_fraction_floor']:.2f} |",
    ]
    for name, m in rows.items():
        lines.append(
            f"| {name} | {m['minutes']:.1f} | {m['colour_w1_mean']:.3f} | "
            f"{m['laplacian_variance_ratio']:.2f} | {m['visible_fraction']:.2f} |"
        )
    lines += [
        "",
        "Mosaic (`sampling_levers.png`): one row per setting, in the order above, same labels.",
    ]
    return "\n".join(lines) + "\n"


def curve(results: Path, run: Path) -> list[dict]:
    """The checkpoint settings (``ckptN``; ``base`` = the finished model) as a learning curve in
    the form of ``benchmarks/results/image-model/curve.json``: measures this script does not
    take (C2ST, KID, label fidelity: ``nudiff quality``) are ``None``."""
    from nudiff.checkpoint import list_checkpoints

    rows = read_json(results / "sampling_levers.json")["settings"]
    checkpoints = dict(list_checkpoints(run))
    entries = []
    for name, m in rows.items():
        if name != "base" and not name.startswith("ckpt"):
            continue
        step = int(name[4:]) if name.startswith("ckpt") else max(checkpoints)
        state = read_json(checkpoints[step] / "state.json") if step in checkpoints else {}
        entries.append(
            {
                "setting": run.name,
                "steps": step,
                "minutes": round((state.get("elapsed_s") or float("nan")) / 60, 1),
                "colour_w1_mean": m["colour_w1_mean"],
                "laplacian_variance_ratio": m["laplacian_variance_ratio"],
                "visible_fraction": m["visible_fraction"],
                "c2st_accuracy": None,
                "kid": None,
                "fidelity_pq": None,
            }
        )
    return sorted(entries, key=lambda e: e["steps"])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--image-model", type=Path, required=True, help="an image-model training run")
    ap.add_argument(
        "--subset", type=Path, required=True, help="the labeled subset as a paired folder"
    )
    ap.add_argument("--real", type=Path, required=True, help="real paired folder to compare with")
    ap.add_argument("--config", type=Path, default=Path("configs/kumar-grid.yaml"))
    ap.add_argument(
        "--settings",
        nargs="+",
        default=list(SETTINGS),
        help=f"of {sorted(SETTINGS)} or ckptN (an earlier checkpoint, N its step)",
    )
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/sampling_levers"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/sampling_levers"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--curve",
        action="store_true",
        help="only write curve.json from the ckptN / base settings already measured",
    )
    args = ap.parse_args()
    set_threads(args.threads)
    if args.curve:
        some = next(iter(read_json(args.results / "sampling_levers.json")["settings"].values()))
        floors = {
            k: v for k, v in some.items() if k.endswith("_floor")
        }  # the same for every setting
        write_json(
            args.results / "curve.json",
            {"entries": curve(args.results, args.image_model), "floors": floors},
        )
        return
    plan = load_plan(args.config)
    summary = args.results / "sampling_levers.json"
    rows = read_json(summary)["settings"] if summary.exists() else {}
    folders = {}
    for name in args.settings:
        if name not in SETTINGS and not name.startswith("ckpt"):
            raise SystemExit(f"--settings: unknown {name!r}")
        folder, minutes = sample_setting(name, args, plan)
        folders[name] = folder
        if name not in rows:
            rows[name] = measure(folder, args.real, args.seed) | {"minutes": round(minutes, 2)}
        write_json(
            summary,
            {
                "settings": rows,
                "image_model": str(args.image_model),
                "n": args.n,
                "real": str(args.real),
                "seed": args.seed,
            },
        )
        write_text(args.results / "sampling_levers.md", table(rows, args.n, args.threads))
        print(table(rows, args.n, args.threads), flush=True)
    mosaic(folders, args.results / "sampling_levers.png")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
