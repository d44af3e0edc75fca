"""`nudiff synthesize`: sample structures, decode them, sample matching images (or filter a
synthesized folder with ``--filter-only``)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from nudiff.config import load_config
from nudiff.data.formats import PAIR_FORMATS
from nudiff.data.stain import STAIN_METHODS
from nudiff.synthesis.config import (
    LABEL_UPSAMPLING,
    REAL_STRUCTURES,
    STRUCTURE_SOURCES,
    SynthesisConfig,
)
from nudiff.utils import NudiffError, module_doc

EXAMPLES = """\
examples:
  nudiff synthesize --structure-model runs/s10 --image-model runs/i10 -n 256 --seed 0 \
--out runs/syn10 --real runs/data/val --min-marker 2 --label-upsampling smooth
  # sample 512, keep the 256 best by label fidelity whose nuclei look like real ones
  nudiff synthesize --structure-model runs/s10 --image-model runs/i10 -n 256 --out runs/syn10f \
--real runs/data/val --segmenter runs/seg --keep-top 0.5 --real-percentiles 5 95
  # diagnostic: images on windows of the labeled subset's own labels (no structure model)
  nudiff synthesize --image-model runs/i10 --structures subset --real runs/subset10 -n 256 \
--out runs/syn10r
  # ... with more of the subset's nuclei pasted into each window (new arrangements, real shapes)
  nudiff synthesize --image-model runs/i10 --structures copypaste --real runs/subset10 -n 256 \
--out runs/syn10p
  # filter a set already synthesized (no resampling)
  nudiff synthesize --filter-only runs/syn10 --out runs/syn10f --segmenter runs/seg \
--min-fidelity 0.5"""


def register(sub) -> None:
    """Add ``synthesize`` to the subcommands ``sub``."""
    p = sub.add_parser(
        "synthesize",
        help="sample structures, decode them, sample matching images: a paired dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=module_doc("nudiff.synthesis.pipeline"),
        epilog=EXAMPLES,
    )
    p.add_argument(
        "--structure-model", type=Path, default=None, help="run dir of `nudiff train structure`"
    )
    p.add_argument(
        "--image-model", type=Path, default=None, help="run dir of `nudiff train image`"
    )
    p.add_argument("-n", type=int, default=None, help="number of pairs (default: config)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--format",
        choices=PAIR_FORMATS,
        default="png",
        dest="pair_format",
        help="how the pairs are written: png (images/ + labels/, what nudiff reads), "
        "hovernet (Images/*.png + Labels/*.mat with inst_map, inst_centroid) or npy "
        "(images/*.npy + labels/*.npy); see docs/synthetic-formats.md",
    )
    p.add_argument("--config", type=Path, default=None, help="YAML with a `synthesis` section")
    p.add_argument("--sampler", choices=("ddpm", "ddim", "dpmsolver++"), default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help="s in eps_u + s (eps_c - eps_u); the paper's w is s - 1",
    )
    p.add_argument(
        "--real",
        type=Path,
        default=None,
        help="paired folder of real images: the mosaic, the percentiles of "
        "--real-percentiles and the stain reference of --stain",
    )
    p.add_argument(
        "--stain",
        choices=STAIN_METHODS,
        default=None,
        help="stain-normalise every synthetic image to the --real images (torchstain; "
        "reinhard-each: to one real image each, keeping their spread)",
    )
    p.add_argument(
        "--label-upsampling",
        choices=LABEL_UPSAMPLING,
        default=None,
        help="labels of half-resolution models back to full size: nearest or smooth "
        "(round outlines)",
    )
    p.add_argument(
        "--structures",
        choices=STRUCTURE_SOURCES,
        default=None,
        help="sampled: labels from --structure-model (the method); subset: windows of "
        "the --real folder's own labels, only the images synthesized; copypaste: "
        "those windows with more of its nuclei pasted in (configs/demo.yaml's "
        "recipe)",
    )
    p.add_argument(
        "--pasted-nuclei",
        type=int,
        default=None,
        help="nuclei tried per window with --structures copypaste (default 3)",
    )
    p.add_argument(
        "--min-marker",
        type=int,
        default=None,
        help="decode: smallest marker (px) that seeds a nucleus (2 splits more merges)",
    )
    _add_filter_options(p)
    p.set_defaults(func=_cmd_synthesize)


def _add_filter_options(p: argparse.ArgumentParser) -> None:
    f = p.add_argument_group("pair filter (off by default; synthesis.filter in the config)")
    f.add_argument(
        "--segmenter",
        default=None,
        metavar="SEG_RUN",
        help="a segmenter trained on real data: scores every pair's label fidelity",
    )
    f.add_argument("--fidelity-metric", choices=("pq", "aji", "dice"), default=None)
    f.add_argument("--min-fidelity", type=float, default=None, help="reject pairs scoring below")
    f.add_argument(
        "--keep-top",
        type=float,
        default=None,
        help="keep this best fraction by fidelity (n / fraction pairs are sampled)",
    )
    f.add_argument(
        "--real-percentiles",
        type=float,
        nargs=2,
        default=None,
        metavar=("LO", "HI"),
        help="reject pairs whose nucleus statistics fall outside these percentiles of "
        "real windows",
    )
    f.add_argument(
        "--filter-only",
        type=Path,
        default=None,
        metavar="SYN_DIR",
        help="filter this synthesized folder into --out instead of sampling",
    )


def _set_sampling(cfg: SynthesisConfig, args) -> None:
    """--sampler / --steps (both models) and --guidance-scale (the image model) on top of the
    config's sampling, or of the model's own where the config leaves it to the model."""
    from nudiff.diffusion.sample import read_model_config

    runs = {"structure": args.structure_model, "image": args.image_model}
    for kind, run in runs.items():
        given = {"sampler": args.sampler, "steps": args.steps}
        if kind == "image":
            given["guidance_scale"] = args.guidance_scale
        given = {k: v for k, v in given.items() if v is not None}
        if not given or run is None:
            continue
        base = getattr(cfg, f"{kind}_sample") or read_model_config(run, kind).sample
        setattr(cfg, f"{kind}_sample", replace(base, **given))


def _config_from_args(args) -> SynthesisConfig:
    """The ``synthesis`` section of ``--config`` with the flags given on top."""
    cfg = load_config(SynthesisConfig, args.config, section="synthesis")
    for key, value in (
        ("n", args.n),
        ("seed", args.seed),
        ("stain", args.stain),
        ("label_upsampling", args.label_upsampling),
        ("structures", args.structures),
        ("pasted_nuclei", args.pasted_nuclei),
    ):
        if value is not None:
            setattr(cfg, key, value)
    if args.min_marker is not None:
        cfg.decode = replace(cfg.decode, min_marker=args.min_marker)
    _set_sampling(cfg, args)
    for key in ("segmenter", "fidelity_metric", "min_fidelity", "keep_top", "real_percentiles"):
        if getattr(args, key) is not None:
            value = getattr(args, key)
            setattr(cfg.filter, key, tuple(value) if key == "real_percentiles" else value)
    return cfg


def _cmd_synthesize(args) -> None:
    from nudiff.quality.filter import filter_pairs
    from nudiff.synthesis.pipeline import check_pair_format, synthesize, write_mosaic

    cfg = _config_from_args(args)
    if args.filter_only is not None:
        check_pair_format(args.pair_format, filtered=True)
        m = filter_pairs(args.filter_only, args.out, cfg.filter, args.real)
        if m["n_accepted"]:
            write_mosaic(args.out, args.real)
    elif args.structure_model is not None and cfg.structures in REAL_STRUCTURES:
        raise NudiffError(
            f"synthesize: --structure-model is not used with structures "
            f"'{cfg.structures}' (labels from --real); pass --structures sampled "
            "to use it"
        )
    elif args.image_model is None or (
        args.structure_model is None and cfg.structures == "sampled"
    ):
        raise NudiffError(
            "synthesize: --structure-model and --image-model are required "
            "(--image-model and --real with --structures subset or copypaste; or "
            "--filter-only SYN_DIR)"
        )
    else:
        m = synthesize(
            args.structure_model, args.image_model, args.out, cfg, args.real, args.pair_format
        )
    print(
        f"{m['n_accepted']} pairs in {args.out} ({m['n_rejected']} rejected: "
        f"{m['rejected_by_reason']}); mosaic: {args.out / 'mosaic.png'}"
    )
