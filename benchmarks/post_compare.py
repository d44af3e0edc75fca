"""Post-processing of a trained segmenter's maps: nudiff's decoder vs HoVer-Net's.

Scores the held-out test images of ``segmenter_bar.py`` (same split) with the same network
output decoded twice: ``nudiff.structure.decode`` with the thresholds the training tuned, and
the same with a wider median filter on h/v (5, 9, 15 px; the other thresholds as tuned), and
MONAI's ``HoVerNetInstanceMapPostProcessing`` (HoVer-Net's marker-controlled watershed; Sobel
kernel 21 as in HoVer-Net, and MONAI's default 5).

    .venv/bin/python benchmarks/post_compare.py --model runs/bench/segmenter_bar

Writes benchmarks/results/post_compare.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from nudiff.metrics import METRICS, instance_metrics, mean_metrics
from nudiff.utils import write_json, write_text

sys.path.insert(0, str(Path(__file__).parent))
from segmenter_bar import split  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def hovernet_post(structure: np.ndarray, kernel: int) -> np.ndarray:
    from monai.apps.pathology.transforms import HoVerNetInstanceMapPostProcessing

    post = HoVerNetInstanceMapPostProcessing(
        activation=lambda x: x, mask_threshold=0.5, sobel_kernel_size=kernel)
    _, inst = post(torch.from_numpy(structure[:1].copy()), torch.from_numpy(structure[1:].copy()))
    return np.asarray(inst)[0].astype(np.int32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/monuseg"))
    ap.add_argument("--test", type=int, default=5)
    ap.add_argument("--val", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from nudiff.data.dataset import load_folders
    from nudiff.segment.predict import load_segmenter, predict_with_config
    from nudiff.structure import decode

    model, cfg = load_segmenter(args.model)
    samples = load_folders([args.data / "train", args.data / "train-recovered"], progress=False)
    _, _, test = split(samples, args.test, args.val, args.seed)
    from dataclasses import replace

    tuned = cfg.post.decode_params()
    medians = (5, 9, 15)
    per = {"nudiff (tuned)": {}, **{f"nudiff, median {m}": {} for m in medians},
           "hovernet sobel21": {}, "hovernet sobel5": {}}
    for s in test:
        _, structure = predict_with_config(model, cfg, s.image)
        per["nudiff (tuned)"][s.name] = instance_metrics(s.instance_map, decode(structure, tuned))
        for m in medians:
            per[f"nudiff, median {m}"][s.name] = instance_metrics(
                s.instance_map, decode(structure, replace(tuned, median_size=m)))
        for k in (21, 5):
            per[f"hovernet sobel{k}"][s.name] = instance_metrics(s.instance_map, hovernet_post(structure, k))
    report = {"model": str(args.model), "post": cfg.post.__dict__, "test": [s.name for s in test],
              "mean": {k: mean_metrics(v) for k, v in per.items()}, "per_image": per}
    lines = ["# Post-processing of one segmenter's maps (segmenter_bar test images)", "",
             f"Model: `{args.model}`; tuned decoder thresholds: {cfg.post.__dict__}.", "",
             "| decoder | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    lines += [f"| {k} | " + " | ".join(f"{m[x]:.4f}" for x in METRICS) + " |" for k, m in report["mean"].items()]
    write_json(RESULTS / "post_compare.json", report)
    write_text(RESULTS / "post_compare.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
