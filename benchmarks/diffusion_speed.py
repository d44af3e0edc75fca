"""Speed of the diffusion stage on this machine: training samples/s and sampling s/pair.

Training is timed through the real loop (``nudiff.diffusion.train.train``: data draw,
accelerate, AdamW, EMA) on synthetic 256-px patches, fp32 vs bf16; the per-step rates are
read from the run's ``train_log.csv`` (first step dropped as warm-up). Sampling times one
network evaluation at the sampling batch size (image model with guidance: a doubled batch)
and runs DDIM-50 and DPM-Solver++-20 end to end; DDPM-1000 is extrapolated from the
per-evaluation time. Weights are random: speed does not depend on them.

    .venv/bin/python benchmarks/diffusion_speed.py            # ~2-3 min on 2 free cores
    .venv/bin/python benchmarks/diffusion_speed.py --variants # + SPADE hidden width 128

Writes ``benchmarks/results/diffusion_speed.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nudiff.diffusion.config import (
    DataConfig,
    DenoiserConfig,
    DiffusionConfig,
    DiffusionTrainConfig,
)
from nudiff.diffusion.networks import Denoiser, condition_tensor
from nudiff.diffusion.sample import denoise, sample_generator, sample_images, sample_structures
from nudiff.diffusion.train import train
from nudiff.training import read_log

RESULTS = Path(__file__).resolve().parent / "results"


def synthetic_patches(n: int = 8, size: int = 256, seed: int = 0):
    """uint8 images (n, size, size, 3) and instance maps of ~40 random discs each."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    inst = np.zeros((n, size, size), np.int32)
    for k in range(n):
        for i in range(1, 41):
            cy, cx, r = *rng.integers(0, size, 2), rng.integers(5, 11)
            inst[k][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    images = rng.integers(150, 230, (n, size, size, 3)).astype(np.uint8)
    images[inst > 0] = (90, 40, 130)
    return images, inst


def make_config(variant: str, args, precision: str) -> DiffusionConfig:
    kind, conditioning, spade = {
        "structure": ("structure", "spade", 32),
        "image-spade": ("image", "spade", 32),
        "image-concat": ("image", "concat", 32),
        "image-spade128": ("image", "spade", 128),
    }[variant]
    return DiffusionConfig(
        model=DenoiserConfig(
            kind=kind,
            channels=args.channels,
            attention_levels=(False,) * (len(args.channels) - 1) + (True,),
            conditioning=conditioning,
            spade_channels=spade,
        ),
        data=DataConfig(patch_size=args.size, scale=0.5),
        train=DiffusionTrainConfig(
            steps=args.train_steps,
            batch_size=args.batch,
            precision=precision,
            checkpoint_every=10**6,
            log_every=1,
            sample_every=0,
            warmup_steps=1,
        ),
    )


def time_training(cfg: DiffusionConfig, images, inst) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, tmp, images if cfg.model.kind == "image" else None, inst)
        rates = [float(r["steps_per_s"]) for r in read_log(tmp)][1:]
    # median: robust to other jobs on a shared CPU; min: the machine's uncontended speed
    s_per_step = float(np.median([1 / r for r in rates]))
    return {
        "s_per_step": s_per_step,
        "s_per_step_min": float(min(1 / r for r in rates)),
        "samples_per_s": cfg.train.batch_size / s_per_step,
    }


def time_eval(model: Denoiser, batch: int, size: int, precision: str, reps: int = 5) -> float:
    """Seconds per sampler step for ``batch`` samples (guidance doubles the image batch);
    median of ``reps`` one-step runs."""
    gens = [sample_generator(0, i) for i in range(batch)]
    cond = None
    if model.conditional:
        cond = condition_tensor(torch.zeros(batch, 3, size, size))
    denoise(model, (3, size, size), gens, "ddim", 1, cond, 2.0, precision)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        denoise(model, (3, size, size), gens, "ddim", 1, cond, 2.0, precision)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--channels", type=lambda s: tuple(int(c) for c in s.split(",")), default=(32, 64, 64)
    )
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--train-steps", type=int, default=6, help="timed steps + 1 warm-up")
    ap.add_argument("--variants", action="store_true", help="also SPADE hidden width 128")
    ap.add_argument("--no-end-to-end", action="store_true", help="skip the DDIM/DPM full runs")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's). On a CPU shared with other jobs use 1: two "
        "threads stall each other when another process holds a core (x10-30 slower steps).",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images, inst = synthetic_patches()
    variants = ["structure", "image-spade", "image-concat"] + (
        ["image-spade128"] if args.variants else []
    )
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
        },
        "setup": {
            "channels": list(args.channels),
            "size": args.size,
            "batch": args.batch,
            "attention": "deepest level only",
            "num_res_blocks": 1,
        },
        "params": {},
        "train": {},
        "sample_step_s": {},
        "sample_s_per_pair": {},
    }
    t_start = time.perf_counter()
    for variant in variants:
        cfg = make_config(variant, args, "no")
        result["params"][variant] = sum(p.numel() for p in Denoiser(cfg).parameters())
        for precision in ("no", "bf16"):
            r = time_training(make_config(variant, args, precision), images, inst)
            result["train"][f"{variant}/{precision}"] = r
            print(
                f"train {variant:15s} {precision:4s} {r['s_per_step']:.3f} s/step  "
                f"{r['samples_per_s']:.1f} samples/s"
            )
    models = {v: Denoiser(make_config(v, args, "no")).eval() for v in variants}
    for variant, model in models.items():
        for precision in ("no", "bf16"):
            s = time_eval(model, args.batch, args.size, precision)
            result["sample_step_s"][f"{variant}/{precision}"] = s
            print(f"sample step {variant:15s} {precision:4s} {s:.3f} s per {args.batch} samples")
    # seconds per (structure, image) pair, bf16, image model = SPADE (guidance 2: two passes)
    per_step = (
        result["sample_step_s"]["structure/bf16"] + result["sample_step_s"]["image-spade/bf16"]
    ) / args.batch
    for sampler, steps in (("ddpm", 1000), ("ddim", 50), ("dpmsolver++", 20)):
        result["sample_s_per_pair"][f"{sampler}-{steps} (estimate)"] = per_step * steps
    if not args.no_end_to_end:
        for sampler, steps in (("ddim", 50), ("dpmsolver++", 20)):
            t0 = time.perf_counter()
            s = sample_structures(
                models["structure"],
                args.batch,
                seed=0,
                sampler=sampler,
                steps=steps,
                batch_size=args.batch,
                precision="bf16",
                progress=False,
            )
            sample_images(
                models["image-spade"],
                s,
                seed=0,
                sampler=sampler,
                steps=steps,
                guidance_scale=2.0,
                batch_size=args.batch,
                precision="bf16",
                progress=False,
            )
            result["sample_s_per_pair"][f"{sampler}-{steps} (measured)"] = (
                time.perf_counter() - t0
            ) / args.batch
    for k, v in result["sample_s_per_pair"].items():
        print(f"sampling {k:28s} {v:.3f} s per pair")
    result["benchmark_seconds"] = time.perf_counter() - t_start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diffusion_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "diffusion_speed.md").write_text(markdown(result, args))
    print(f"wrote {args.out / 'diffusion_speed.json'} and .md")


def markdown(r: dict, args) -> str:
    lines = [
        "# Diffusion stage speed",
        "",
        (
            f"Machine: {r['machine']['cpu']}, {r['machine']['torch_threads']} torch threads, "
            "torch "
            f"{r['machine']['torch']}. U-Net widths {tuple(args.channels)}, 1 res block/level, "
            "attention at "
            f"the deepest level, {args.size} px, batch {args.batch}. Command: "
            "`.venv/bin/python benchmarks/diffusion_speed.py --threads "
            f"{r['machine']['torch_threads']}`."
        ),
        "",
        "## Training (real loop: data draw + accelerate + AdamW + EMA)",
        "",
        "Medians over the timed steps (the CPU may be shared); min = uncontended speed.",
        "",
        (
            "| model | params | fp32 s/step | bf16 s/step | bf16 s/step (min) | bf16 samples/s "
            "| bf16 steps in 30 min (at min) |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for v, n in r["params"].items():
        a, b = r["train"][f"{v}/no"], r["train"][f"{v}/bf16"]
        lines.append(
            f"| {v} | {n / 1e6:.2f} M | {a['s_per_step']:.3f} | {b['s_per_step']:.3f} | "
            f"{b['s_per_step_min']:.3f} | "
            f"{b['samples_per_s']:.1f} | {int(1800 / b['s_per_step_min'])} |"
        )
    lines += [
        "",
        f"## Sampling: one step for {args.batch} samples (image models: guidance, 2 passes)",
        "",
        "| model | fp32 s | bf16 s |",
        "|---|---|---|",
    ]
    for v in r["params"]:
        lines.append(
            f"| {v} | {r['sample_step_s'][f'{v}/no']:.3f} | {r['sample_step_s'][f'{v}/bf16']:.3f} "
            "|"
        )
    lines += [
        "",
        "## Seconds per (structure, image) pair, bf16, SPADE image model, guidance 2",
        "",
        "| sampler | s / pair |",
        "|---|---|",
    ]
    for k, v in r["sample_s_per_pair"].items():
        lines.append(f"| {k} | {v:.3f} |")
    lines += ["", f"Benchmark took {r['benchmark_seconds']:.0f} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
