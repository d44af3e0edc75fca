"""`nudiff quality`: how far from real is a synthetic paired set?"""

from __future__ import annotations

import argparse
from pathlib import Path

from nudiff.utils import set_threads

DESCRIPTION = """\
Measures a synthetic paired folder against a real one, each number beside its real-versus-real
floor (the same measure between two halves of the real images):

  structure    W1 / real sd of nucleus area, eccentricity, solidity, diameter, nuclei per window
  colour       W1 / real sd of per-image HED and Lab means and sds; Laplacian-variance ratio
  C2ST         held-out accuracy of a small CNN telling real from synthetic \
(0.5 = indistinguishable)
  KID          on the pooled deepest encoder features of a real-trained segmenter (--segmenter)
  fidelity     Dice / AJI / PQ of that segmenter's prediction against each synthetic label
  TSTR         syn-only vs real cells of a `nudiff experiment` run (--experiment)

Windows: the synthetic pairs' size; real images (whole or patches) are tiled at that size and
the windows dealt into the two halves (--split images: each half its own images).
Pairs sampled below full resolution (the manifest's `scale` < 1) are also set beside real
windows taken to that scale and back: the texture they can reach at most, and C2ST once
resolution is equal.
Writes OUT/quality.json (flat), quality.md, pairs.csv (per-pair scores), histograms.png and
mosaic_<score>.png (best and worst pairs by each per-pair score).
"""

EPILOG = """\
examples:
  nudiff quality --synthetic runs/syn10 --real runs/data/val --segmenter runs/seg --out runs/q10
  nudiff quality --synthetic runs/grid/diffusion/f0.10/synthetic --real runs/data/val \\
      --segmenter runs/grid/cells/f1.00_real_s0 --experiment runs/grid --out runs/q10 --threads 1
  # the floors alone: two real folders
  nudiff quality --synthetic ../shared/datasets/monuseg/train \
--real ../shared/datasets/monuseg/train-recovered --out runs/q-real
"""


def register(sub) -> None:
    p = sub.add_parser(
        "quality",
        help="measure a synthetic paired set against real data (with floors)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    p.add_argument(
        "--synthetic", type=Path, required=True, metavar="SYN_DIR", help="paired folder to assess"
    )
    p.add_argument(
        "--real",
        type=Path,
        required=True,
        metavar="REAL_DIR",
        help="paired folder of real images (whole images or patches; >= 2 images)",
    )
    p.add_argument(
        "--segmenter",
        type=Path,
        default=None,
        metavar="SEG_RUN",
        help="a `nudiff segment train` run trained on real data (KID, label fidelity)",
    )
    p.add_argument(
        "--experiment",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="a `nudiff experiment` run: its syn-only cells give TSTR",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0, help="real halves, crops, C2ST, KID subsets")
    p.add_argument(
        "--c2st-epochs", type=int, default=15, help="training passes of each C2ST network"
    )
    p.add_argument(
        "--max-pairs",
        type=int,
        default=None,
        help="assess a random choice (--seed) of N synthetic pairs",
    )
    p.add_argument(
        "--split",
        choices=("windows", "images"),
        default="windows",
        help="real halves for the floor: non-overlapping windows of all real images dealt in two "
        "(sampling noise only), or half of the images each (adds between-image variation)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 on a shared machine)"
    )
    p.set_defaults(func=_cmd_quality)


def _cmd_quality(args) -> None:
    from nudiff.quality.assess import assess, check_dirs
    from nudiff.quality.report import write_report

    set_threads(args.threads)
    check_dirs(args.synthetic, args.real, args.segmenter, args.experiment)
    a = assess(
        args.synthetic,
        args.real,
        args.segmenter,
        args.experiment,
        seed=args.seed,
        c2st_epochs=args.c2st_epochs,
        max_pairs=args.max_pairs,
        split=args.split,
    )
    md = write_report(args.out, a)
    m = a.metrics
    print(f"{m['n_synthetic']} pairs in {m['seconds']:.0f} s -> {md}")
    for key in ("structure_w1_mean", "colour_w1_mean", "c2st_accuracy", "kid", "fidelity_pq"):
        if key in m:
            print(f"  {key}: {m[key]:.4g} (floor {m[key + '_floor']:.4g})")
