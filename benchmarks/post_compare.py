"""Post-processing of a trained segmenter's maps: nudiff's decoder vs HoVer-Net's, and
test-time augmentation.

Scores the held-out test images of ``segmenter_bar.py`` (same split) with the same network
output decoded several ways: ``nudiff.structure.decode`` with nudiff's method and the
thresholds the training tuned (or its defaults when HoVer-Net's was chosen), the same with a
wider median filter on h/v (5, 9, 15 px), and HoVer-Net's marker-controlled watershed
(``method="hovernet"``: MONAI ``HoVerNetInstanceMapPostProcessing``, Sobel kernel 21 as in
HoVer-Net, and MONAI's default 5). Then both decoders on maps averaged over 4 and 8
flipped / turned copies of each image (``infer.tta``).

    .venv/bin/python benchmarks/post_compare.py --model runs/bench/segmenter_bar

Writes benchmarks/results/post_compare.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nudiff.metrics import METRICS, instance_metrics, mean_metrics
from nudiff.utils import write_json, write_text

sys.path.insert(0, str(Path(__file__).parent))
from segmenter_bar import split  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/monuseg"))
    ap.add_argument("--test", type=int, default=5)
    ap.add_argument("--val", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="post_compare", help="report file name (without suffix)")
    args = ap.parse_args()
    from nudiff.data.dataset import load_folders
    from nudiff.segment.predict import load_segmenter, structure_with_config
    from nudiff.structure import DecodeParams, decode

    model, cfg = load_segmenter(args.model)
    samples = load_folders([args.data / "train", args.data / "train-recovered"], progress=False)
    _, _, test = split(samples, args.test, args.val, args.seed)
    from dataclasses import replace

    chosen = cfg.post
    tuned = chosen if chosen.method == "nudiff" else DecodeParams()
    ours = "nudiff (tuned)" if chosen.method == "nudiff" else "nudiff (defaults)"
    medians = (5, 9, 15)
    decoders = {
        ours: tuned,
        **{f"nudiff, median {m}": replace(tuned, median_size=m) for m in medians},
        "hovernet sobel21": DecodeParams(method="hovernet", sobel_size=21),
        "hovernet sobel5": DecodeParams(method="hovernet", sobel_size=5),
    }
    per = {}
    for tta in (1, 4, 8):
        names = decoders if tta == 1 else (ours, "hovernet sobel21")
        cfg.infer.tta = tta
        for s in test:
            structure = structure_with_config(model, cfg, s.image)
            for name in names:
                key = name if tta == 1 else f"{name}, tta {tta}"
                per.setdefault(key, {})[s.name] = instance_metrics(
                    s.instance_map, decode(structure, decoders[name])
                )
    report = {
        "model": str(args.model),
        "post": cfg.post.__dict__,
        "test": [s.name for s in test],
        "mean": {k: mean_metrics(v) for k, v in per.items()},
        "per_image": per,
    }
    lines = [
        "# Post-processing of one segmenter's maps (segmenter_bar test images)",
        "",
        f"Model: `{args.model}`; post-processing chosen on validation: {cfg.post.__dict__}.",
        "",
        "| decoder | " + " | ".join(METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    lines += [
        f"| {k} | " + " | ".join(f"{m[x]:.4f}" for x in METRICS) + " |"
        for k, m in report["mean"].items()
    ]
    write_json(RESULTS / f"{args.name}.json", report)
    write_text(RESULTS / f"{args.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
