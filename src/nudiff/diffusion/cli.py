"""`nudiff train structure|image`: train one of the two diffusion models on a labeled subset."""

from __future__ import annotations

import argparse
from pathlib import Path

from nudiff.utils import NudiffError, set_threads

EXAMPLES = """\
examples:
  nudiff train structure --config configs/cpu.yaml --data runs/data --fraction 0.1 --out runs/s10
  nudiff train image     --config configs/cpu.yaml --data runs/data --fraction 0.1 --out runs/i10
  nudiff train image     --config configs/cpu.yaml --data runs/data --fraction 0.1 --out runs/i10 \
--resume
  nudiff train image     --config configs/kumar-gpu.yaml --folder my_pairs --out runs/i \
--set train.compile=default
  # several GPUs / nodes: the same command under accelerate
  accelerate launch -m nudiff.cli train image --config configs/paper.yaml --data runs/data \
--fraction 0.1 --out runs/i10
"""


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train the structure model or the structure-conditioned image model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Trains a diffusion model (MONAI U-Net, accelerate, EMA, safetensors "
        "checkpoints) on the patches of a labeled subset written by `nudiff data prepare`, or on "
        "any paired folder (--folder). The YAML's `structure` / `image` section configures it.",
        epilog=EXAMPLES,
    )
    p.add_argument("kind", choices=("structure", "image"))
    p.add_argument(
        "--config", type=Path, default=None, help="YAML with `structure`/`image` sections"
    )
    p.add_argument(
        "--data", type=Path, default=None, help="folder written by `nudiff data prepare`"
    )
    p.add_argument("--fraction", type=float, default=0.1, help="labeled subset to train on")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument(
        "--folder",
        type=Path,
        nargs="+",
        default=None,
        help="instead of --data: paired folder(s) with images/ and labels/",
    )
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--steps", type=int, default=None, help="override train.steps")
    p.add_argument(
        "--precision",
        choices=("no", "bf16", "fp16"),
        default=None,
        help="override train.precision (no = fp32)",
    )
    p.add_argument(
        "--stop-at-step",
        type=int,
        default=None,
        help="stop after this step, keeping the LR schedule of the full run (resume later)",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="override train.max_minutes: a wall-clock budget that the LR schedule ends at",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the config's section, e.g. train.compile=default or "
        "model.flash_attention=true (repeatable)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: all cores); use 1 when other jobs share the cores",
    )
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> None:
    import numpy as np

    from nudiff.config import load_config
    from nudiff.data.dataset import load_folders
    from nudiff.data.prepare import load_subset
    from nudiff.diffusion.config import DiffusionConfig
    from nudiff.diffusion.train import train

    set_threads(args.threads)
    cfg = load_config(DiffusionConfig, args.config, section=args.kind, overrides=args.set)
    cfg.model.kind = args.kind
    if args.steps:
        cfg.train.steps = args.steps
    if args.precision:
        cfg.train.precision = args.precision
    if args.max_minutes:
        cfg.train.max_minutes = args.max_minutes
    if args.folder:
        samples = load_folders(args.folder)
    elif args.data:
        samples = load_subset(args.data, args.fraction, args.subset_seed)
    else:
        raise NudiffError("give --data (a prepared folder) or --folder (paired folders)")
    shapes = {s.image.shape for s in samples}
    if len(shapes) != 1:
        raise NudiffError(
            f"training patches must share one size, found {sorted(shapes)}; cut patches first"
        )
    images = np.stack([s.image for s in samples]) if args.kind == "image" else None
    insts = np.stack([s.instance_map for s in samples])
    run = train(cfg, args.out, images, insts, resume=args.resume, stop_at_step=args.stop_at_step)
    print(f"trained {args.kind} model: {run}")
