"""Why sampled structures have too much foreground: the samplers driven by an oracle denoiser.

Question: is the structure model's foreground excess (44 % of sampled semantic pixels >= 0.5
where real windows have 27 %) a property of the samplers and the objective rather than of the
network? No training: the denoiser is the *exact* posterior mean E[x_0 | x_t] of a set of real
training windows (a softmax over their distances to x_t), so it has no error of its own; a
controlled error of standard deviation ``delta`` (white Gaussian, in the network's output:
eps or v) stands in for an imperfect network. The samplers and schedule are the configs'
(diffusers, linear betas, T = 1000).

What it shows: with epsilon prediction, clipping the predicted x_0 to [-1, 1] at every step
(the reference's ``clip_denoised``, our ``sample.clip_x0``) turns small eps errors at high noise
— amplified by sqrt(1 - a_t) / sqrt(a_t), up to 150x at t = T — into saturated +-1 pixels, half
of them "nucleus", and the foreground fraction rises; without clipping, or with v prediction
(whose x_0 = sqrt(a) x_t - sqrt(1 - a) v amplifies nothing), it stays at the data's::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/structure_oracle.py --data runs/kumar-data

Writes oracle.{json,md} under --results (default benchmarks/results/structure-model).
"""

from __future__ import annotations

import argparse
import itertools
import warnings
from pathlib import Path

import numpy as np
import torch

from nudiff.data.prepare import load_subset
from nudiff.diffusion.config import DataConfig, DiffusionConfig
from nudiff.diffusion.data import PatchSampler
from nudiff.diffusion.schedule import make_scheduler, training_scheduler
from nudiff.utils import set_threads, write_json, write_text

RESULTS = Path(__file__).parent / "results" / "structure-model"
SAMPLERS = {"dpmsolver++ 20": ("dpmsolver++", 20), "ddim 50": ("ddim", 50)}


def training_windows(data: str, fraction: float, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` structure windows (64 px at scale 0.5, as the configs) in the model's range,
    flattened."""
    samples = load_subset(data, fraction)
    sampler = PatchSampler(
        DataConfig(patch_size=64, scale=0.5), np.stack([s.instance_map for s in samples])
    )
    s, _ = sampler.draw(n, np.random.default_rng(seed))
    return torch.from_numpy(np.concatenate([2 * s[:, :1] - 1, s[:, 1:]], 1)).reshape(n, -1)


def oracle_x0(x_t: torch.Tensor, a: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """E[x_0 | x_t] under the empirical distribution ``data`` (N, D) at alpha-bar ``a``."""
    d = torch.cdist(x_t.reshape(len(x_t), -1), a.sqrt() * data) ** 2
    w = torch.softmax(-d / (2 * (1 - a)), dim=1)
    return (w @ data).view_as(x_t)


def sample(
    data: torch.Tensor,
    sampler: str,
    steps: int,
    prediction: str,
    clip: bool,
    delta: float,
    n: int,
    seed: int,
) -> np.ndarray:
    """Structures (n, 3, 64, 64) in the model's range from the oracle + error."""
    cfg = DiffusionConfig(prediction_type=prediction)
    alphas = training_scheduler(cfg).alphas_cumprod
    sch = make_scheduler(cfg, sampler, clip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sch.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 64, 64, generator=g)
    for t in sch.timesteps:
        a = alphas[int(t)]
        x0 = oracle_x0(x, a, data)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        out = eps if prediction == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0
        out = out + delta * torch.randn(x.shape, generator=g)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = sch.step(out, t, x, generator=g).prev_sample
    return x.numpy()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True, help="a folder written by `nudiff data prepare`")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--windows", type=int, default=1500, help="real windows the oracle knows")
    ap.add_argument("--n", type=int, default=64, help="samples per setting")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    set_threads(args.threads)
    data = training_windows(args.data, args.fraction, args.windows)
    real_fg = float((data.view(len(data), 3, 64, 64)[:, 0] > 0).float().mean())
    rows = []
    for (name, (sampler, steps)), prediction, clip, delta in itertools.product(
        SAMPLERS.items(), ("epsilon", "v_prediction"), (True, False), (0.0, 0.02, 0.05)
    ):
        x = sample(data, sampler, steps, prediction, clip, delta, args.n, seed=0)
        row = {
            "sampler": name,
            "prediction": prediction,
            "clip_x0": clip,
            "delta": delta,
            "foreground_fraction": float((x[:, 0] >= 0).mean()),
        }
        rows.append(row)
        print(row, flush=True)
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(
        args.results / "oracle.json",
        {"real_foreground_fraction": real_fg, "windows": args.windows, "n": args.n, "rows": rows},
    )
    lines = [
        f"Oracle denoiser over {args.windows} real Kumar 10 % windows (64 px, scale 0.5; their "
        f"foreground: {real_fg:.3f}); {args.n} samples per cell, same seed. Foreground fraction "
        "of the samples (semantic >= 0.5) by the error delta added to the oracle's output:",
        "",
        "| sampler | prediction | clip x0 | delta 0 | delta 0.02 | delta 0.05 |",
        "|---|---|---|---|---|---|",
    ]
    for (name, _), prediction, clip in itertools.product(
        SAMPLERS.items(), ("epsilon", "v_prediction"), (True, False)
    ):
        fg = [
            r["foreground_fraction"]
            for r in rows
            if (r["sampler"], r["prediction"], r["clip_x0"]) == (name, prediction, clip)
        ]
        lines.append(
            f"| {name} | {prediction} | {clip} | " + " | ".join(f"{v:.3f}" for v in fg) + " |"
        )
    write_text(args.results / "oracle.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
