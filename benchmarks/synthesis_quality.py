"""How good are the synthetic pairs? Structure realism and image-label agreement vs sampler.

Given a trained structure model and image model (e.g. from `make run`:
runs/demo/diffusion/f0.10/{structure,image}) and the prepared data folder:

1. Structure realism: nuclei count per window, nucleus area and eccentricity of decoded
   synthetic structures vs real windows of the training subset (same scale and size), as the
   1-D Wasserstein distance per statistic, for several samplers / step counts. A second real
   set (the validation images, never trained on) gives the real-vs-real floor.
2. Image-label agreement: a nucleus is *visible* when most of its pixels are haematoxylin-
   positive (`skimage.color.rgb2hed`, threshold chosen on real training windows to best match
   their labels). Reported per sampler and guidance scale, beside real pairs (ceiling) and
   synthetic images paired with another sample's labels (floor).
3. Seconds per pair for each sampler.

    .venv/bin/python benchmarks/synthesis_quality.py --run runs/demo [--n 64]

Writes benchmarks/results/synthesis_quality.{json,md} and synthesis_histograms.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from nudiff.data.prepare import load_subset, load_val
from nudiff.diffusion.sample import load_model, sample_images, sample_structures
from nudiff.experiment import RunLayout
from nudiff.quality.report import histograms
from nudiff.quality.stats import STRUCTURE_STATS as STATS
from nudiff.quality.stats import agreement, distances, h_threshold, statistics, windows
from nudiff.structure import decode, encode
from nudiff.utils import write_json, write_text

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--run", type=Path, default=Path("runs/demo"), help="an experiment output folder"
    )
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument(
        "--structure-model", type=Path, default=None, help="default: RUN/diffusion/fFRAC/structure"
    )
    ap.add_argument(
        "--image-model", type=Path, default=None, help="default: RUN/diffusion/fFRAC/image"
    )
    ap.add_argument(
        "--data", type=Path, default=None, help="prepared data folder (default: RUN/data)"
    )
    ap.add_argument("--tag", default="", help="suffix of the result files")
    ap.add_argument("--n", type=int, default=64, help="samples per sampler setting")
    ap.add_argument("--skip-ddpm", action="store_true", help="skip the 1000-step sampler (slow)")
    args = ap.parse_args()
    run = RunLayout(args.run)
    data = args.data or run.data
    models = {
        kind: getattr(args, f"{kind}_model") or run.model_run(args.fraction, kind)
        for kind in ("structure", "image")
    }
    s_model, s_cfg = load_model(models["structure"])
    i_model, _ = load_model(models["image"])
    scale, size = s_cfg.data.scale, s_cfg.data.patch_size
    min_area = round(30 * scale**2) if s_cfg.data.min_area is None else s_cfg.data.min_area

    train_i, train_l = windows(load_subset(data, args.fraction, 0), scale, size)
    val_i, val_l = windows(load_val(data), scale, size)
    real = statistics(train_l)
    result: dict = {
        "n": args.n,
        "scale": scale,
        "size": size,
        "n_real_windows": len(train_l),
        "real_vs_val": distances(real, statistics(val_l)),
        "structures": {},
        "images": {},
    }
    print("real(train) vs real(val):", result["real_vs_val"])

    settings = [("dpmsolver++", 10), ("dpmsolver++", 20), ("ddim", 20), ("ddim", 50)]
    if not args.skip_ddpm:
        settings.append(("ddpm", 1000))
    decoded = {}
    for sampler, steps in settings:
        t = time.time()
        s = sample_structures(
            s_model, args.n, seed=0, sampler=sampler, steps=steps, precision="bf16", progress=False
        )
        seconds = (time.time() - t) / args.n
        insts = np.stack([decode(x) for x in s])
        decoded[(sampler, steps)] = insts
        st = statistics(insts)
        result["structures"][f"{sampler}-{steps}"] = {
            "seconds_per_structure": seconds,
            "wasserstein": distances(real, st),
            "mean": {k: float(np.mean(st[k])) if len(st[k]) else None for k in STATS},
            "empty_fraction": float(np.mean(st["count"] == 0)),
        }
        print(sampler, steps, result["structures"][f"{sampler}-{steps}"])
    result["real_mean"] = {k: float(np.mean(real[k])) for k in STATS}

    thr = h_threshold(train_i, train_l)
    result["h_threshold"] = thr
    result["images"]["real pairs (ceiling)"] = agreement(train_i, train_l, thr)
    insts = decoded[("dpmsolver++", 20)]
    conds = np.stack([encode(x, min_area=min_area) for x in insts])
    last = None
    for sampler, steps, g in [
        ("dpmsolver++", 20, 1.0),
        ("dpmsolver++", 20, 2.0),
        ("dpmsolver++", 20, 3.0),
        ("ddim", 50, 2.0),
    ]:
        t = time.time()
        imgs = sample_images(
            i_model,
            conds,
            seed=1,
            sampler=sampler,
            steps=steps,
            guidance_scale=g,
            precision="bf16",
            progress=False,
        )
        seconds = (time.time() - t) / args.n
        key = f"{sampler}-{steps} s={g:g}"
        result["images"][key] = agreement(imgs, insts, thr) | {"seconds_per_image": seconds}
        print(key, result["images"][key])
        if (sampler, g) == ("dpmsolver++", 2.0):
            last = imgs
    result["images"]["shuffled labels (floor)"] = agreement(last, np.roll(insts, 1, axis=0), thr)
    result["models"] = {kind: str(path) for kind, path in models.items()}
    write_json(RESULTS / f"synthesis_quality{args.tag}.json", result)
    write_text(
        RESULTS / f"synthesis_quality{args.tag}.md",
        to_markdown(result, f"synthesis_histograms{args.tag}.png"),
    )
    histograms(
        {
            "real (training subset)": real,
            "synthetic (DPM-Solver++ 20)": statistics(decoded[("dpmsolver++", 20)]),
        },
        RESULTS / f"synthesis_histograms{args.tag}.png",
        STATS,
    )


def to_markdown(r: dict, histogram_png: str) -> str:
    lines = [
        "# Synthetic pairs: structure realism and image-label agreement",
        "",
        f"Models: `{r['models']['structure']}`, `{r['models']['image']}`.",
        "",
        f"{r['n']} samples per setting, {r['size']}-px windows at scale {r['scale']} "
        f"(real reference: {r['n_real_windows']} windows of the training subset).",
        "",
        "## Structure realism (1-D Wasserstein distance to real; lower is better)",
        "",
        "| sampler | " + " | ".join(STATS) + " | empty | s / structure |",
        "|---" * (len(STATS) + 3) + "|",
        "| real val vs real train (floor) | "
        + " | ".join(f"{r['real_vs_val'][k]:.3f}" for k in STATS)
        + " | – | – |",
    ]
    for key, v in r["structures"].items():
        w = v["wasserstein"]
        lines.append(
            f"| {key} | "
            + " | ".join(f"{w[k]:.3f}" for k in STATS)
            + f" | {v['empty_fraction']:.2f} | {v['seconds_per_structure']:.3f} |"
        )
    lines += [
        "",
        "Means — real: " + ", ".join(f"{k} {r['real_mean'][k]:.2f}" for k in STATS),
        "",
        f"![histograms]({histogram_png})",
        "",
        "## Image-label agreement (haematoxylin threshold "
        f"{r['h_threshold']:.3f}, chosen on real training windows)",
        "",
        "| images | nuclei visible | pixel Dice (H-mask vs labels) | s / image |",
        "|---|---|---|---|",
    ]
    for key, v in r["images"].items():
        sec = f"{v['seconds_per_image']:.3f}" if "seconds_per_image" in v else "–"
        lines.append(f"| {key} | {v['visible_fraction']:.3f} | {v['pixel_dice']:.3f} | {sec} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
