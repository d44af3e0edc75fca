"""Learning curve of structure realism: how close a structure model's samples come to real labels.

Question: what limits the unconditional structure model (NuDiff's first stage)? Each checkpoint
of a structure-model run (``nudiff train structure ... --set train.keep_checkpoints=...``) samples
``--n`` structures (EMA weights, its own seeds), decodes them (``DecodeParams(min_marker=2)``, the
configs' decode) and is scored at the model's scale against windows of the same size of the
labeled subset it was trained on:

- raw output: foreground fraction (semantic >= 0.5) and "haze" (semantic in [0.05, 0.2]: neither
  background nor nucleus) of the sampled semantic channel, before any decode;
- decoded: nuclei per window, mean nucleus area (px at the model's scale), mean solidity, and
  structure W1 (``nudiff.quality.stats.distances``, normalised by the real std; mean over
  count, area, eccentricity, solidity, equivalent diameter) against real windows.

Reference rows, measured the same way: ``real windows (other draw)`` (real vs real: the floor any
sampler can reach with this many windows), ``codec floor`` (real windows -> encode -> decode)
and ``training patches (100 %)`` (windows of all training patches against the subset's).

Each (run, checkpoint, sampler variant) is one entry of ``curve.json`` under --results (entries
already there are kept, the same key is replaced), with a chart ``curve.png`` and ``curve.md``::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/structure_curve.py \\
        --data runs/kumar-data --runs runs/sm/eps-base runs/sm/v-base \\
        --variants dpm20 dpm20-noclip
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch

from nudiff import checkpoint as ckpt
from nudiff.config import load_config
from nudiff.data.io import write_image
from nudiff.data.prepare import load_subset
from nudiff.diffusion.config import DiffusionConfig
from nudiff.diffusion.data import resize_instance_maps
from nudiff.diffusion.networks import Denoiser
from nudiff.diffusion.sample import sample_structures
from nudiff.pictures import mosaic, structure_rgb
from nudiff.quality.stats import STRUCTURE_STATS, distances, pair_statistics, statistics
from nudiff.structure import DecodeParams, decode, encode, min_area_at_scale, relabel
from nudiff.utils import read_json, set_threads, write_json, write_text

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "structure-model"
DECODE = DecodeParams(min_marker=2)
# name -> (sampler, steps, clip_x0)
VARIANTS = {
    "dpm20": ("dpmsolver++", 20, True),
    "dpm20-noclip": ("dpmsolver++", 20, False),
    "ddim50": ("ddim", 50, True),
    "ddim50-noclip": ("ddim", 50, False),
    "ddpm250": ("ddpm", 250, True),
    "ddpm250-noclip": ("ddpm", 250, False),
}


@functools.lru_cache(maxsize=4)
def subset_maps(data: str, fraction: float, scale: float) -> np.ndarray:
    """The subset's instance maps resized by ``scale`` (read once per process)."""
    return resize_instance_maps(
        np.stack([s.instance_map for s in load_subset(data, fraction)]), scale
    )


def real_windows(
    data: str, fraction: float, scale: float, size: int, n: int, seed: int
) -> np.ndarray:
    """``n`` random ``size`` windows (int32, relabelled) of the subset's patches resized by
    ``scale``."""
    inst = subset_maps(data, fraction, scale)
    rng = np.random.default_rng(seed)
    _, h, w = inst.shape
    out = []
    for _ in range(n):
        i, y, x = rng.integers(len(inst)), rng.integers(h - size + 1), rng.integers(w - size + 1)
        out.append(relabel(inst[i, y : y + size, x : x + size]))
    return np.stack(out)


def raw_measures(structures: np.ndarray) -> dict[str, float]:
    """Foreground and haze fractions of sampled structures (n, 3, S, S), semantic in [0, 1]."""
    sem = structures[:, 0]
    return {
        "foreground_fraction": float((sem >= 0.5).mean()),
        "haze_fraction": float(((sem >= 0.05) & (sem <= 0.2)).mean()),
    }


FILTER_STATS = ("count", "mean_area", "mean_solidity")


def percentile_bounds(
    maps: np.ndarray, q: tuple[float, float] = (5, 95)
) -> dict[str, tuple[float, float]]:
    """The real-percentile filter's bounds (``FilterConfig.real_percentiles``) over windows."""
    per = [pair_statistics(m) for m in maps]
    return {
        k: tuple(float(np.nanpercentile([p[k] for p in per], x)) for x in q) for k in FILTER_STATS
    }


def filter_keep(maps: np.ndarray, bounds: dict) -> float:
    """Share of windows whose count, mean area and mean solidity all lie within ``bounds``
    (what the synthesis filter with ``real_percentiles: [5, 95]`` keeps)."""
    per = [pair_statistics(m) for m in maps]
    return float(
        np.mean([all(bounds[k][0] <= p[k] <= bounds[k][1] for k in FILTER_STATS) for p in per])
    )


def decoded_measures(maps: np.ndarray, reference: dict) -> dict[str, float]:
    """Per-window nucleus statistics of instance maps, their W1 to ``reference`` (the real
    windows' :func:`statistics`, with their filter ``bounds``) and the filter's keep rate."""
    st = statistics(maps)
    w1 = distances(reference, st, STRUCTURE_STATS, normalise=True)
    out = {"structure_w1_mean": float(np.nanmean(list(w1.values())))}
    out |= {f"structure_w1_{k}": w1[k] for k in STRUCTURE_STATS}
    out["nuclei_per_window"] = float(st["count"].mean())
    out["mean_area"] = float(st["area"].mean()) if len(st["area"]) else float("nan")
    out["mean_solidity"] = float(st["solidity"].mean()) if len(st["solidity"]) else float("nan")
    out["decoded_foreground_fraction"] = float((maps > 0).mean())
    out["real_filter_keep"] = filter_keep(maps, reference["bounds"])
    return out


def reference_stats(real: np.ndarray) -> dict:
    """What samples are compared with: the real windows' statistics and filter bounds."""
    return statistics(real) | {"bounds": percentile_bounds(real)}


def references(
    data: str, fraction: float, scale: float, size: int, n: int
) -> tuple[dict, list[dict]]:
    """The real statistics samples are compared with, and the reference rows."""
    real = real_windows(data, fraction, scale, size, n, seed=1)
    ref = reference_stats(real)
    other = real_windows(data, fraction, scale, size, n, seed=2)
    codec = np.stack([decode(encode(m, min_area=min_area_at_scale(scale)), DECODE) for m in other])
    full = real_windows(data, 1.0, scale, size, n, seed=3)
    rows = []
    for name, maps in (
        ("real windows (other draw)", other),
        ("codec floor (encode -> decode)", codec),
        ("training patches (100 %)", full),
    ):
        fg = {"foreground_fraction": float((maps > 0).mean()), "haze_fraction": 0.0}
        rows.append(
            {"setting": name, "steps": None, "minutes": None, "variant": None}
            | fg
            | decoded_measures(maps, ref)
        )
    pct = [float(np.percentile([(m > 0).mean() for m in real], q)) for q in (5, 95)]
    areas = [
        float(np.mean(a)) if len(a) else np.nan for a in (statistics([m])["area"] for m in real)
    ]
    rows.append(
        {
            "setting": "real 5-95th percentile per window",
            "foreground_fraction": pct,
            "mean_area": [float(np.nanpercentile(areas, q)) for q in (5, 95)],
        }
    )
    return ref, rows


def score_run(
    run: Path, ref: dict, variants: list[str], n: int, seed: int, steps: list[int] | None
) -> list[dict]:
    cfg = load_config(DiffusionConfig, run / "config.yaml")
    rows = []
    for step, path in ckpt.list_checkpoints(run):
        if steps and step not in steps:
            continue
        files = ckpt.read_checkpoint(path)
        model = Denoiser(cfg)
        model.load_state_dict(files["ema.safetensors"])
        minutes = (files["state.json"].get("elapsed_s") or float("nan")) / 60
        for v in variants:
            sampler, nsteps, clip = VARIANTS[v]
            model.config.sample.clip_x0 = clip
            t0 = time.perf_counter()
            s = sample_structures(
                model.eval(),
                n,
                seed=seed,
                sampler=sampler,
                steps=nsteps,
                batch_size=32,
                device="cpu",
                progress=False,
            )
            maps = np.stack([decode(x, DECODE) for x in s])
            row = {
                "setting": run.name,
                "steps": step,
                "minutes": round(minutes, 1),
                "variant": v,
                "sample_s": round(time.perf_counter() - t0, 1),
            }
            row |= raw_measures(s) | decoded_measures(maps, ref)
            rows.append(row)
            print(
                {k: (round(x, 3) if isinstance(x, float) else x) for k, x in row.items()},
                flush=True,
            )
            np.save(run / f"samples_{step}_{v}.npy", s.astype(np.float16))
    return rows


def chart(rows: list[dict], refs: list[dict], path: Path) -> None:
    keys = ("structure_w1_mean", "foreground_fraction", "mean_area", "nuclei_per_window")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4))
    curves: dict[tuple, list] = {}
    for r in rows:
        if r.get("steps") is not None:
            curves.setdefault((r["setting"], r["variant"]), []).append(r)
    for ax, k in zip(axes, keys):
        for (setting, variant), rs in sorted(curves.items()):
            rs = sorted(rs, key=lambda r: r["steps"])
            ax.plot(
                [r["steps"] for r in rs],
                [r[k] for r in rs],
                marker="o",
                label=f"{setting} {variant}",
            )
        for r, style in zip(refs[:2], ("--", ":")):
            if isinstance(r.get(k), float):
                ax.axhline(r[k], color="k", ls=style, lw=1, label=r["setting"])
        ax.set_title(k)
        ax.set_xscale("log")
        ax.set_xlabel("training steps")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(rows: list[dict], refs: list[dict]) -> str:
    cols = (
        "setting",
        "variant",
        "steps",
        "minutes",
        "structure_w1_mean",
        "foreground_fraction",
        "haze_fraction",
        "nuclei_per_window",
        "mean_area",
        "mean_solidity",
        "real_filter_keep",
    )
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in refs[:3] + sorted(
        [r for r in rows if r.get("steps") is not None],
        key=lambda r: (r["setting"], r["variant"], r["steps"]),
    ):
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append("" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    p = refs[3]
    lines.append(
        f"\nReal windows' 5–95th percentiles: foreground {p['foreground_fraction'][0]:.3f}–"
        f"{p['foreground_fraction'][1]:.3f}, mean area "
        f"{p['mean_area'][0]:.1f}–{p['mean_area'][1]:.1f} px."
    )
    return "\n".join(lines) + "\n"


BIAS_T = (999, 950, 900, 800, 700, 500, 300, 100)


@torch.no_grad()
def x0_bias(
    run: Path, step: int, data: str, fraction: float, n: int = 64, seed: int = 5
) -> list[dict]:
    """The network's estimate of x_0 from real windows noised to t, against the truth: mean
    semantic (model range, -1 background / +1 nucleus) per t. A sampler from pure noise builds
    each window's foreground fraction from these estimates at high t, where an epsilon model's
    x_0 = (x_t - sqrt(1 - a) eps) / sqrt(a) multiplies its error by up to 150."""
    from nudiff.diffusion.schedule import predicted_x0, training_scheduler

    cfg = load_config(DiffusionConfig, run / "config.yaml")
    model = Denoiser(cfg)
    model.load_state_dict(
        ckpt.read_checkpoint(dict(ckpt.list_checkpoints(run))[step])["ema.safetensors"]
    )
    model.eval()
    maps = real_windows(data, fraction, cfg.data.scale, cfg.data.patch_size, n, seed)
    enc = np.stack([encode(m, min_area=min_area_at_scale(cfg.data.scale)) for m in maps])
    x0 = torch.from_numpy(np.concatenate([2 * enc[:, :1] - 1, enc[:, 1:]], 1))
    sched = training_scheduler(cfg)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for t in BIAS_T:
        tt = torch.full((n,), t, dtype=torch.long)
        noise = torch.randn(x0.shape, generator=g)
        xt = sched.add_noise(x0, noise, tt)
        est = predicted_x0(
            model(xt, tt).float(), xt, tt, sched.alphas_cumprod, cfg.prediction_type
        )
        rows.append(
            {
                "setting": run.name,
                "steps": step,
                "t": t,
                "true_mean_semantic": float(x0[:, 0].mean()),
                "x0_mean_semantic": float(est[:, 0].mean()),
                "x0_mean_semantic_clipped": float(est[:, 0].clamp(-1, 1).mean()),
                "x0_rmse": float((est - x0).pow(2).mean().sqrt()),
            }
        )
        print(rows[-1], flush=True)
    return rows


DECODE_LEVERS = {
    "configs (min_marker 2)": DECODE,
    "median 5": DecodeParams(min_marker=2, median_size=5),
    "fg_threshold 0.6": DecodeParams(min_marker=2, fg_threshold=0.6),
    "fg_threshold 0.4": DecodeParams(min_marker=2, fg_threshold=0.4),
    "semantic_sigma 1": DecodeParams(min_marker=2, semantic_sigma=1.0),
    "semantic_sigma 1.5": DecodeParams(min_marker=2, semantic_sigma=1.5),
    "semantic_sigma 2": DecodeParams(min_marker=2, semantic_sigma=2.0),
    "hovernet watershed (Sobel 21)": DecodeParams(method="hovernet"),
}


def decode_levers(spec: str, data: str, fraction: float, n: int) -> list[dict]:
    """The decode side: one saved sample set (``RUN:STEP:VARIANT``) decoded several ways, and
    real windows through the same decodes (what each costs a perfect structure)."""
    run, step, variant = spec.split(":")
    samples = np.load(Path(run) / f"samples_{step}_{variant}.npy").astype(np.float32)
    size = samples.shape[-1]
    ref = reference_stats(real_windows(data, fraction, 0.5, size, n, seed=1))
    real = [
        encode(m, min_area=min_area_at_scale(0.5))
        for m in real_windows(data, fraction, 0.5, size, n, seed=2)
    ]
    rows = []
    for name, params in DECODE_LEVERS.items():
        for what, structures in (
            (f"{Path(run).name} {step} {variant}", samples),
            ("real windows (codec)", real),
        ):
            maps = np.stack([decode(x, params) for x in structures])
            rows.append({"structures": what, "decode": name} | decoded_measures(maps, ref))
            print(
                {k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[-1].items()},
                flush=True,
            )
    return rows


def picture(rows: list[str], data: str, fraction: float, path: Path, n: int = 8) -> None:
    """One row of ``n`` structures per ``RUN:STEP:VARIANT`` (samples saved by the scoring), under
    a row of real windows: semantic in red, h and v in green and blue."""
    real = real_windows(data, fraction, 0.5, 64, n, seed=4)
    tiles = [structure_rgb(encode(m, min_area=min_area_at_scale(0.5))) for m in real]
    for spec in rows:
        run, step, variant = spec.split(":")
        tiles += [
            structure_rgb(x.astype(np.float32))
            for x in np.load(Path(run) / f"samples_{step}_{variant}.npy")[:n]
        ]
    write_image(path, mosaic(tiles, ncols=n))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True, help="a folder written by `nudiff data prepare`")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--runs", nargs="+", type=Path, help="structure-model run folders")
    ap.add_argument("--variants", nargs="+", default=["dpm20"], choices=sorted(VARIANTS))
    ap.add_argument("--steps", nargs="*", type=int, help="only these checkpoints")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument(
        "--decode-levers",
        metavar="RUN:STEP:VARIANT",
        help="only decode one scored sample set several ways (decode_levers.json)",
    )
    ap.add_argument(
        "--bias",
        action="store_true",
        help="only measure each run's x0 estimate at high noise (x0_bias.json)",
    )
    ap.add_argument(
        "--picture",
        nargs="+",
        metavar="RUN:STEP:VARIANT",
        help="only draw samples.png: real windows, then one row per scored sample set",
    )
    args = ap.parse_args()
    set_threads(args.threads)
    if args.picture:
        picture(args.picture, args.data, args.fraction, args.results / "samples.png")
        return
    if args.decode_levers:
        rows = decode_levers(args.decode_levers, args.data, args.fraction, args.n)
        write_json(args.results / "decode_levers.json", rows)
        return
    if args.bias:
        rows = [
            r
            for run in args.runs
            for step in args.steps
            for r in x0_bias(run, step, args.data, args.fraction)
        ]
        write_json(args.results / "x0_bias.json", rows)
        return
    torch.manual_seed(0)
    path = args.results / "curve.json"
    if args.runs:
        cfg = load_config(DiffusionConfig, args.runs[0] / "config.yaml")
        ref, refs = references(
            args.data, args.fraction, cfg.data.scale, cfg.data.patch_size, args.n
        )
        old = read_json(path)["entries"] if path.is_file() else []
        new = [
            r
            for run in args.runs
            for r in score_run(run, ref, args.variants, args.n, args.seed, args.steps)
        ]
        key = lambda r: (r["setting"], r["steps"], r["variant"])  # noqa: E731
        fresh = {key(r) for r in new}
        entries = [r for r in old if key(r) not in fresh] + new
        write_json(
            path,
            {
                "references": refs,
                "entries": entries,
                "decode": "DecodeParams(min_marker=2)",
                "n": args.n,
                "scale": cfg.data.scale,
                "window": cfg.data.patch_size,
            },
        )
    saved = read_json(path)  # without --runs: redraw the chart and table from curve.json
    chart(saved["entries"], saved["references"], args.results / "curve.png")
    write_text(args.results / "curve.md", table(saved["entries"], saved["references"]))


if __name__ == "__main__":
    main()
