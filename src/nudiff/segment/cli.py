"""`nudiff segment train|predict`: train the segmenter on paired folders, segment images."""

from __future__ import annotations

import argparse
from pathlib import Path

from nudiff.utils import set_threads

TRAIN_EXAMPLES = """\
examples:
  nudiff segment train --config configs/cpu.yaml \
--real ../shared/datasets/monuseg/train-recovered \\
      --val runs/data/val --out runs/seg
  nudiff segment train --config configs/cpu.yaml --real runs/real10 --synthetic runs/syn10 \\
      --val runs/data/val --out runs/seg
  nudiff segment train --config configs/cpu.yaml --real runs/real10 --val runs/data/val \
--out runs/seg --resume
  # GPUs: the same command under accelerate (set segment.model.arch: hovernet for HoVer-Net)
  accelerate launch -m nudiff.cli segment train --config configs/paper.yaml --real ... \
--out runs/seg

Each DIR is a paired folder: DIR/images/<name>.png + DIR/labels/<name>.png (instance map).
Writes RUN_DIR/model/ (best validation PQ), checkpoints/, train_log.csv, tb/, config.yaml.
"""

PREDICT_EXAMPLES = """\
example:
  nudiff segment predict --model runs/seg --images runs/data/val/images --out runs/pred
  nudiff segment predict --model runs/seg --images slides/ --out runs/pred --tta 8   \
# 8x slower, smoother
  nudiff evaluate --pred runs/pred --gt runs/data/val --out runs/eval
  nudiff segment predict --model runs/seg --slide slide.svs --out runs/slide1
  nudiff segment predict --model runs/seg --slide slide.ndpi --roi 20000,14000,4096,4096 \
--out runs/roi

Images: writes OUT/<name>.png (16-bit instance map), OUT/overlays/<name>.png (contours on
the image) and OUT/geojson/<name>.geojson (QuPath detections) for every image.
A slide (SVS, NDPI, pyramidal TIFF) is predicted tile by tile on its tissue (Otsu mask of a
thumbnail), nuclei stitched across tile borders: OUT/<slide>.geojson (QuPath detections
with area, centroid, eccentricity), OUT/<slide>_overlay.png, OUT/wsi.json (settings,
timing, peak memory) and OUT/tiles/ (one file per finished tile: rerun to resume).
"""

THREADS_HELP = (
    "torch CPU threads (default: all cores); use 1 when other jobs share the cores: two "
    "threads that must wait for each other then run several times slower than one"
)


def register(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``segment`` with ``train`` and ``predict`` to the top-level subparsers."""
    seg = subparsers.add_parser(
        "segment",
        help="train the nuclei segmenter / segment images",
        description="HoVer-Net-style segmenter (NP + HV heads, marker-controlled watershed).",
    )
    sub = seg.add_subparsers(dest="segment_command", required=True, metavar="ACTION")
    _add_train(sub)
    _add_predict(sub)
    return sub


def _add_train(sub: argparse._SubParsersAction) -> None:
    """``segment train``: its flags, help and examples."""
    t = sub.add_parser(
        "train",
        help="train a segmenter on real (+ synthetic) paired folders",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Trains the segmenter configured in the YAML's `segment` section. Each batch "
        "item comes from the real folders with probability segment.train.real_ratio, else from "
        "the synthetic ones; the checkpoint with the best validation PQ is kept as RUN_DIR/model.",
        epilog=TRAIN_EXAMPLES,
    )
    t.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML with a `segment` section (default: CPU defaults)",
    )
    t.add_argument(
        "--real", type=Path, nargs="+", required=True, metavar="DIR", help="real paired folder(s)"
    )
    t.add_argument(
        "--synthetic",
        type=Path,
        nargs="+",
        default=None,
        metavar="DIR",
        help="synthetic paired folder(s)",
    )
    t.add_argument(
        "--val",
        type=Path,
        default=None,
        metavar="DIR",
        help="validation paired folder (whole images)",
    )
    t.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run directory")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    t.add_argument("--steps", type=int, default=None, help="override segment.train.steps")
    t.add_argument("--seed", type=int, default=None, help="override segment.train.seed")
    t.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    t.set_defaults(func=_cmd_train)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    """``segment predict``: a folder of images or a slide; its flags, help and examples."""
    p = sub.add_parser(
        "predict",
        help="segment every image of a folder, or a whole slide",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Tiled inference with a trained segmenter, then marker-controlled watershed.",
        epilog=PREDICT_EXAMPLES,
    )
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        metavar="RUN_DIR",
        help="run directory (or its model/)",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", type=Path, metavar="DIR", help="folder of RGB images")
    src.add_argument(
        "--slide", type=Path, metavar="SLIDE", help="whole-slide image (SVS, NDPI, pyramidal TIFF)"
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument(
        "--tta",
        type=int,
        choices=range(1, 9),
        default=None,
        metavar="N",
        help="test-time augmentation: average N flipped / turned copies, 1-8 "
        "(default: the model's segment.infer.tta)",
    )
    _add_slide_options(p)
    p.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    p.set_defaults(func=_cmd_predict)


def _add_slide_options(p: argparse.ArgumentParser) -> None:
    """The flags of ``segment predict --slide`` only: region, level, tiling, tissue mask."""
    p.add_argument(
        "--roi",
        type=_roi,
        metavar="X,Y,W,H",
        help="slide only: predict this level-0 rectangle instead of the whole slide",
    )
    res = p.add_mutually_exclusive_group()
    res.add_argument("--level", type=int, help="slide only: pyramid level to read (default 0)")
    res.add_argument("--mpp", type=float, help="slide only: read at this µm/px (e.g. 0.25)")
    p.add_argument(
        "--tile-size", type=int, default=1024, help="slide only: tile core in px (default 1024)"
    )
    p.add_argument(
        "--margin",
        type=int,
        default=128,
        help="slide only: context px around each core; > a nucleus' radius (default 128)",
    )
    p.add_argument("--no-tissue-mask", action="store_true", help="slide only: predict every tile")


def _cmd_train(args: argparse.Namespace) -> None:
    from nudiff.config import load_config
    from nudiff.data.dataset import load_folder, load_folders
    from nudiff.segment.config import SegmentConfig
    from nudiff.segment.train import train_segmenter

    set_threads(args.threads)
    cfg = load_config(SegmentConfig, args.config, section="segment")
    if args.steps is not None:
        cfg.train.steps = args.steps
    if args.seed is not None:
        cfg.train.seed = args.seed
    real = load_folders(args.real)
    synthetic = load_folders(args.synthetic) if args.synthetic else None
    val = load_folder(args.val) if args.val else None
    run = train_segmenter(cfg, args.out, real, synthetic, val, resume=args.resume)
    print(f"segmenter trained: {run / 'model'}")


def _roi(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(float(v)) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected X,Y,W,H (4 integers), got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"width and height must be positive, got {text!r}")
    return x, y, w, h


def _cmd_predict(args: argparse.Namespace) -> None:
    set_threads(args.threads)
    if args.slide is not None:
        return _cmd_predict_slide(args)
    from nudiff.segment.predict import predict_folder

    written = predict_folder(args.model, args.images, args.out, tta=args.tta)
    print(f"segmented {len(written)} image(s) into {args.out}")


def _cmd_predict_slide(args: argparse.Namespace) -> None:
    from nudiff.segment.wsi import predict_slide

    summary = predict_slide(
        args.model,
        args.slide,
        args.out,
        roi=args.roi,
        level=args.level,
        mpp=args.mpp,
        tile=args.tile_size,
        margin=args.margin,
        tissue=not args.no_tissue_mask,
        tta=args.tta,
    )
    print(
        f"{summary['n_nuclei']} nuclei in {summary['n_tissue_tiles']} tissue tiles "
        f"({summary['tissue_megapixels']:.1f} MP) -> {args.out}"
    )
