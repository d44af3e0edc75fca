"""Seconds per whole 1000-px MoNuSeg image for all six metrics (``instance_metrics``), against
a perturbed copy of its own label (a realistic prediction: shifted, some nuclei dropped).

    python benchmarks/metrics_speed.py [--data ../shared/datasets/monuseg] [--threads 2]

Writes benchmarks/results/metrics_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from nudiff.data.io import read_instance_map
from nudiff.metrics import instance_metrics
from nudiff.utils import set_threads, write_json, write_text


def perturbed(gt: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pred = np.roll(gt, (2, -1), axis=(0, 1)).copy()
    drop = rng.choice(np.unique(pred)[1:], size=max(1, int(pred.max()) // 10), replace=False)
    pred[np.isin(pred, drop)] = 0
    return ndi.grey_dilation(pred, size=2) if seed % 2 else pred


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/monuseg"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    set_threads(args.threads)
    seconds = []
    for i, path in enumerate(sorted(args.data.glob("*/labels/*.png"))):
        gt = read_instance_map(path)
        pred = perturbed(gt, i)
        t = time.perf_counter()
        instance_metrics(gt, pred)
        seconds.append(time.perf_counter() - t)
    s = np.array(seconds)
    result = {
        "n_images": len(s),
        "mean_s": float(s.mean()),
        "median_s": float(np.median(s)),
        "max_s": float(s.max()),
        "target_s": 1.0,
        "meets_target": bool(s.max() < 1.0),
    }
    write_json(args.out / "metrics_speed.json", result)
    write_text(
        args.out / "metrics_speed.md",
        "# Metric speed (`benchmarks/metrics_speed.py`)\n\n"
        "All six metrics (Dice, AJI, AJI+, DQ, SQ, PQ) of one whole 1000-px MoNuSeg image "
        "against a perturbed copy of its label.\n\n| images | mean s | median s | max s | target "
        "|\n"
        f"|---|---|---|---|---|\n| {len(s)} | {s.mean():.3f} | {np.median(s):.3f} | {s.max():.3f} "
        "| < 1 s |\n",
    )
    print(result)


if __name__ == "__main__":
    main()
