"""High-frequency content of synthetic vs real images (Laplacian variance of the grey image).

Residual diffusion noise raises it; blur lowers it. Compares one fraction's synthetic images
with the real labeled patches they were trained on, and those real patches after the models'
0.5x down / 2x up round trip (the detail a 64-px model at scale 0.5 can reproduce at most).

    .venv/bin/python benchmarks/synthetic_sharpness.py --run runs/grid --fraction 0.1

Writes benchmarks/results/synthetic_sharpness.{json,md}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from nudiff.data.prepare import subset_filename
from nudiff.experiment import RunLayout
from nudiff.quality.stats import laplacian_variance
from nudiff.utils import read_json, write_json, write_text

RESULTS = Path(__file__).parent / "results"


def down_up(im: Image.Image) -> np.ndarray:
    w, h = im.size
    return np.asarray(im.resize((w // 2, h // 2), Image.BILINEAR).resize((w, h), Image.BILINEAR))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--run", type=Path, required=True, help="an experiment's --out folder")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--subset-seed", type=int, default=0)
    args = ap.parse_args()
    run = RunLayout(args.run)
    syn = sorted((run.synthetic(args.fraction) / "images").glob("*.png"))
    subset = read_json(run.data / "subsets" / subset_filename(args.fraction, args.subset_seed))
    real = [run.data / "patches" / "images" / f"{n}.png" for n in subset["patches"]]
    grey = {
        "synthetic": [np.asarray(Image.open(p).convert("L")) for p in syn],
        "real": [np.asarray(Image.open(p).convert("L")) for p in real],
        "real, 0.5x down / 2x up": [down_up(Image.open(p).convert("L")) for p in real],
    }
    out = {}
    for k, ims in grey.items():
        v = [laplacian_variance(g) for g in ims]
        out[k] = {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)), "n": len(v)}
    report = {"run": str(args.run), "fraction": args.fraction, "laplacian_variance": out}
    lines = [
        f"# Laplacian variance of grey images, {args.fraction:.0%} subset (`{args.run}`)",
        "",
        "| images | mean ± sd | n |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {m['mean']:.0f} ± {m['sd']:.0f} | {m['n']} |" for k, m in out.items()]
    write_json(RESULTS / "synthetic_sharpness.json", report)
    write_text(RESULTS / "synthetic_sharpness.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
