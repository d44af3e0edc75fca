"""`nudiff`: one entry point, a subcommand per pipeline stage.

Thin: parses arguments, loads the config, calls the stage function. Errors the user can fix
(bad files, bad configs) print as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nudiff import __version__
from nudiff.utils import NudiffError

EPILOG = """\
your own labeled images, in one command:
  nudiff augment my_labels --out runs/mine
pipeline:
  nudiff data prepare ../shared/datasets/monuseg/train ../shared/datasets/monuseg/train-recovered \
--out runs/data
  nudiff data show runs/data/val --out runs/show
  nudiff train structure --config configs/cpu.yaml --data runs/data --fraction 0.1 --out runs/s10
  nudiff train image     --config configs/cpu.yaml --data runs/data --fraction 0.1 --out runs/i10
  nudiff synthesize --structure-model runs/s10 --image-model runs/i10 -n 256 --seed 0 \
--out runs/syn10
  nudiff segment train --config configs/cpu.yaml --real runs/data/subsets/... \
--synthetic runs/syn10 --val runs/data/val --out runs/seg
  nudiff segment predict --model runs/seg --images runs/data/val/images --out runs/pred
  nudiff evaluate --pred runs/pred --gt runs/data/val --out runs/eval
  nudiff experiment --config configs/demo.yaml --out runs/demo
  nudiff run --config configs/demo.yaml --out runs/demo     (data prepare + experiment + report)
"""


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nudiff",
        description="Diffusion-based data augmentation for nuclei instance segmentation (NuDiff).",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"nudiff {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")

    from nudiff.data.cli import register as register_data

    data_sub = register_data(sub)
    _register_show(data_sub)
    _register_structure(sub)
    _register_evaluate(sub)
    from nudiff.diffusion.cli import register as register_diffusion

    register_diffusion(sub)
    from nudiff.synthesis.cli import register as register_synthesis

    register_synthesis(sub)
    from nudiff.quality.cli import register as register_quality

    register_quality(sub)
    from nudiff.segment.cli import register as register_segment

    register_segment(sub)
    from nudiff.experiment import register as register_experiment

    register_experiment(sub)
    from nudiff.augment import register as register_augment

    register_augment(sub)
    return parser


def _register_show(data_sub) -> None:
    p = data_sub.add_parser(
        "show",
        help="overlay + structure pictures for images of a paired folder",
        formatter_class=_Formatter,
        description="Writes <name>_overlay.png (instance contours on the image) and "
        "<name>_structure.png (semantic, horizontal, vertical channels) for each pair, so you "
        "can see what the structure codec does.",
        epilog="example:\n  nudiff data show ../shared/datasets/monuseg/train --out runs/show "
        "--crop 256 -n 2",
    )
    p.add_argument("folder", type=Path, help="paired folder with images/ and labels/")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("-n", type=int, default=4, help="how many pairs to show")
    p.add_argument(
        "--crop", type=int, default=256, help="show the top-left crop of this size (0 = whole)"
    )
    p.set_defaults(func=_cmd_show)


def _cmd_show(args) -> None:
    from nudiff.data.dataset import find_pairs, load_pair
    from nudiff.data.io import write_image
    from nudiff.pictures import hstack, overlay, structure_picture
    from nudiff.structure import decode, encode

    for pair in find_pairs(args.folder)[: args.n]:
        s = load_pair(pair)
        image, inst = s.image, s.instance_map
        if args.crop:
            image, inst = image[: args.crop, : args.crop], inst[: args.crop, : args.crop]
        structure = encode(inst)
        decoded = decode(structure)
        write_image(
            args.out / f"{pair.name}_overlay.png",
            hstack([overlay(image, inst), overlay(image, decoded)]),
        )
        write_image(args.out / f"{pair.name}_structure.png", structure_picture(structure))
        print(
            f"{pair.name}: {inst.max()} nuclei -> "
            f"{args.out}/{pair.name}_{{overlay,structure}}.png "
            "(overlay: labels | decode(encode(labels)))"
        )


def _register_structure(sub) -> None:
    p = sub.add_parser(
        "structure",
        help="encode instance maps to nuclei structures (.npy) or decode structures back",
        formatter_class=_Formatter,
        description="encode: instance map -> float32 (3, H, W) .npy [semantic {0,1}, h, v in "
        "[-1, 1]] plus a PNG of the channels. decode: .npy structure -> 16-bit instance map PNG "
        "by marker-controlled watershed.",
        epilog="examples:\n  nudiff structure encode "
        "../shared/datasets/monuseg/train/labels/*.png --out runs/struct\n"
        "  nudiff structure decode runs/struct/*.npy --out runs/decoded",
    )
    p.add_argument("action", choices=("encode", "decode"))
    p.add_argument("files", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_cmd_structure)


def _cmd_structure(args) -> None:
    import numpy as np

    from nudiff.data.io import read_instance_map, write_image, write_instance_map
    from nudiff.pictures import structure_picture
    from nudiff.structure import decode, encode
    from nudiff.utils import DataError, atomic_path, progress_bar

    for path in progress_bar(args.files, desc=args.action, unit="file"):
        if args.action == "encode":
            s = encode(read_instance_map(path))
            with atomic_path(args.out / f"{path.stem}.npy") as tmp:
                np.save(tmp, s)
            write_image(args.out / f"{path.stem}_structure.png", structure_picture(s))
        else:
            try:
                s = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise DataError(path, f"not a readable .npy structure ({e})") from None
            if s.ndim != 3 or s.shape[0] != 3:
                raise DataError(path, f"structure must have shape (3, H, W), got {s.shape}")
            write_instance_map(args.out / f"{path.stem}.png", decode(s))
    print(f"{len(args.files)} file(s) -> {args.out}")


def _register_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="Dice, AJI, AJI+, DQ, SQ, PQ of predicted instance maps",
        formatter_class=_Formatter,
        description="Pairs prediction and ground-truth instance maps by file name, computes the "
        "metrics per image with HoVer-Net's definitions and their mean over images, prints a "
        "table and writes metrics.csv + metrics.json.",
        epilog="example:\n  nudiff evaluate --pred runs/pred --gt "
        "../shared/datasets/monuseg/train --out runs/eval",
    )
    p.add_argument("--pred", type=Path, required=True, help="folder of predicted instance maps")
    p.add_argument(
        "--gt",
        type=Path,
        required=True,
        help="folder of ground-truth maps (or a folder with labels/)",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="where to write metrics.csv and metrics.json"
    )
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> None:
    from nudiff.metrics import evaluate_folders, format_table

    report = evaluate_folders(args.pred, args.gt, args.out)
    print(format_table(report))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except NudiffError as e:
        print(f"nudiff: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "nudiff: interrupted; rerun with --resume to continue from the last checkpoint",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
