"""``nudiff data ...`` subcommands. Thin: parse, load config, call the stage function.

``register(subparsers)`` adds the ``data`` command to the main parser and returns the
``data`` subparsers object so that more subcommands (``show``) can be hooked in. Every
subcommand sets ``func`` to a handler taking the parsed ``argparse.Namespace``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nudiff.config import load_config
from nudiff.data.dataset import load_folders, raise_problems
from nudiff.data.formats import PAIR_FORMATS, convert_pairs, read_monuseg_xml, write_geojson
from nudiff.data.io import (
    IMAGE_SUFFIXES,
    read_image,
    read_instance_map,
    write_image,
    write_instance_map,
)
from nudiff.data.patches import PATCH_MANIFEST, cut_patches
from nudiff.data.prepare import PrepareConfig, prepare, write_subset_folders
from nudiff.data.subsets import STRATEGIES, SubsetConfig, write_subsets
from nudiff.utils import DataError, NudiffError, progress_bar, read_json

RAW = argparse.RawDescriptionHelpFormatter


def register(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``data`` and its subcommands; return the ``data`` subparsers object."""
    data = subparsers.add_parser(
        "data", help="prepare datasets: validate, convert, cut patches, choose subsets"
    )
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    _add_prepare(sub)
    _add_convert(sub)
    _add_patches(sub)
    _add_subset(sub)
    _add_export_geojson(sub)
    return sub


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="paired folders -> val/, patches/, subsets/ and manifest.json",
        formatter_class=RAW,
        description=(
            "Validate paired folders (<dir>/images + <dir>/labels, paired by file name), hold\n"
            "out whole validation images from the first folder, cut the rest into patches and\n"
            "choose labeled subsets by nuclei fraction.\n\n"
            "example:\n  nudiff data prepare ../shared/datasets/monuseg/train \\\n"
            "      ../shared/datasets/monuseg/train-recovered --out runs/data --seed 0"
        ),
    )
    p.add_argument("folders", nargs="+", type=Path, metavar="FOLDER")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--config", type=Path, help="YAML file; its 'data' section is used")
    p.add_argument("--seed", type=int, help="subset seed (overrides the config)")
    p.add_argument("--strategy", choices=sorted(STRATEGIES), help="subset strategy")
    p.add_argument(
        "--split",
        type=Path,
        help="split file (JSON: 'train' + 'test...' lists of "
        "image names, e.g. kumar_split.json): hold out exactly its test images",
    )
    p.add_argument(
        "--val-images", type=int, help="whole images held out as validation (default 4)"
    )
    p.add_argument(
        "--fraction",
        type=float,
        action="append",
        default=None,
        help="labeled fraction(s) to draw (repeatable; default 0.1 0.2 0.5 1.0)",
    )
    p.add_argument(
        "--paired",
        action="store_true",
        help="also write each subset as a paired folder subsets/<subset>/ (images/ + labels/), "
        "what `segment train --real` and `synthesize --real` take",
    )
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> None:
    cfg = load_config(PrepareConfig, args.config, section="data")
    if args.seed is not None:
        cfg.seed = args.seed
    if args.strategy is not None:
        cfg.strategy = args.strategy
    if args.split is not None:
        cfg.split = str(args.split)
    if args.val_images is not None:
        cfg.val_images = args.val_images
    if args.fraction:
        cfg.fractions = sorted(set(args.fraction))
    manifest = prepare(args.folders, args.out, cfg)
    print(
        f"{len(manifest['val'])} validation images, {len(manifest['pool'])} pool images, "
        f"{manifest['patches']['n_patches']} patches -> {args.out}"
    )
    for name, info in manifest["subsets"].items():
        print(
            f"  subsets/{name}: {info['n_patches']} patches, "
            f"nuclei fraction {info['achieved_fraction']:.3f}"
        )
    if args.paired:
        for folder in write_subset_folders(args.out):
            print(f"  {folder}: paired folder")


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="MoNuSeg XML or QuPath GeoJSON + slide -> paired folder with 16-bit instance maps; "
        "a paired (e.g. synthetic) folder -> png, hovernet or npy pairs",
        formatter_class=RAW,
        description=(
            "Paired folder (--to): copy FOLDER (a synthetic folder of any format, or images/ +\n"
            "labels/) into the new folder --out as png (images/ + labels/), hovernet "
            "(Images/*.png\n"
            "+ Labels/*.mat: inst_map, inst_centroid) or npy (images/*.npy + labels/*.npy) "
            "pairs,\n"
            "keeping its manifest with the new format (docs/synthetic-formats.md). A problem "
            "names\nthe file in one line and leaves nothing behind.\n"
            "MoNuSeg/Kumar XML: rasterise <xml-dir>/<name>.xml for every <images>/<name>.*\n"
            "(later polygons overwrite earlier ones, ids 1..N).\n"
            "QuPath GeoJSON: for every annotated region (a top-level QuPath annotation around\n"
            "the nucleus detections, or each rectangle of --regions) crop the slide and\n"
            "rasterise the nuclei the same way; nucleus classes go to <out>/types.json.\n"
            "Both write <out>/images/<name>.png and <out>/labels/<name>.png. Every problem is\n"
            "listed, one line each, and then nothing is written.\n\n"
            "example:\n  nudiff data convert runs/syn10 --to hovernet --out runs/syn10-hovernet\n"
            "  nudiff data convert --xml-dir MoNuSeg/Annotations "
            "--images MoNuSeg/Tissue_Images --out data/monuseg-train\n"
            "  nudiff data convert --geojson slide1.geojson --slide slide1.svs --out data/mine\n"
            "  nudiff data convert --geojson exports/ --slide slides/ --mpp 0.5 --out data/mine\n"
            "  nudiff data convert --geojson nuclei.geojson --regions boxes.geojson "
            "--slide s.ndpi --out data/mine"
        ),
    )
    p.add_argument(
        "folder",
        nargs="?",
        type=Path,
        metavar="FOLDER",
        help="paired folder to convert (with --to)",
    )
    p.add_argument("--to", choices=PAIR_FORMATS, help="format to write FOLDER's pairs in")
    p.add_argument("--xml-dir", type=Path, help="MoNuSeg/Kumar XML folder (with --images)")
    p.add_argument("--images", type=Path, help="images annotated by --xml-dir")
    p.add_argument(
        "--geojson", type=Path, help="QuPath GeoJSON export, or a folder of them (with --slide)"
    )
    p.add_argument(
        "--slide",
        type=Path,
        help="the slide (SVS, NDPI, pyramidal TIFF), or a folder of slides matched by name",
    )
    p.add_argument("--regions", type=Path, help="GeoJSON of region rectangles (optional)")
    p.add_argument("--level", type=int, help="pyramid level to crop from (default 0)")
    p.add_argument("--mpp", type=float, help="target µm/px instead of a level, e.g. 0.5")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> None:
    if args.folder is not None or args.to is not None:
        return run_convert_pairs(args)
    if args.geojson is not None or args.slide is not None:
        return run_convert_geojson(args)
    if args.xml_dir is None or args.images is None:
        raise NudiffError("data convert: give --xml-dir and --images, or --geojson and --slide")
    if not args.images.is_dir():
        raise DataError(args.images, "folder not found")
    images = sorted(
        p
        for p in args.images.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    problems = []
    for path in progress_bar(images, desc="converting", unit="image"):
        xml = args.xml_dir / f"{path.stem}.xml"
        try:
            image = read_image(path)
            inst = read_monuseg_xml(xml, image.shape[:2])
            write_image(args.out / "images" / f"{path.stem}.png", image)
            write_instance_map(args.out / "labels" / f"{path.stem}.png", inst)
        except DataError as e:
            problems.append(str(e))
    if not images:
        problems.append(f"{args.images}: no images found")
    raise_problems(args.images, problems)
    print(f"{len(images)} images converted -> {args.out}")


def run_convert_pairs(args: argparse.Namespace) -> None:
    others = [
        f"--{k.replace('_', '-')}"
        for k in ("xml_dir", "images", "geojson", "slide", "regions", "level", "mpp")
        if getattr(args, k) is not None
    ]
    if args.folder is None or args.to is None or others:
        raise NudiffError(
            "data convert: a paired folder takes FOLDER --to FORMAT --out DIR"
            + (f", not {' '.join(others)}" if others else "")
        )
    manifest = convert_pairs(args.folder, args.out, args.to)
    print(f"{manifest['n_pairs']} pairs -> {args.out} ({args.to})")


def run_convert_geojson(args: argparse.Namespace) -> None:
    from nudiff.data.qupath import convert_slides, pair_folder

    if args.geojson is None or args.slide is None:
        raise NudiffError("data convert: --geojson and --slide go together")
    if args.geojson.is_dir() != args.slide.is_dir():
        raise NudiffError("data convert: --geojson and --slide must both be files or both folders")
    if args.geojson.is_dir():
        pairs, problems = pair_folder(args.geojson, args.slide)
        raise_problems(args.geojson, problems)
    else:
        pairs = [(args.geojson, args.slide)]
    names = convert_slides(pairs, args.out, args.level, args.mpp, args.regions)
    print(f"{len(names)} regions from {len(pairs)} slide(s) -> {args.out}")


def _add_patches(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "patches",
        help="cut paired folders into overlapping patches with a manifest",
        formatter_class=RAW,
        description=(
            "Cut every image of the paired folders into size x size windows (stride apart,\n"
            "plus a row/column flush with the bottom/right border).\n\n"
            "example:\n  nudiff data patches ../shared/datasets/monuseg/train --out runs/patches "
            "--size 256 --stride 128"
        ),
    )
    p.add_argument("folders", nargs="+", type=Path, metavar="FOLDER")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--stride", type=int, default=128)
    p.set_defaults(func=run_patches)


def run_patches(args: argparse.Namespace) -> None:
    samples = load_folders(args.folders)
    manifest = cut_patches(samples, args.size, args.stride, args.out)
    print(f"{len(manifest['patches'])} patches from {len(samples)} images -> {args.out}")


def _add_subset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "subset",
        help="choose a labeled subset of a patch folder by nuclei fraction",
        formatter_class=RAW,
        description=(
            "Choose patches until they cover FRACTION of the pool's nuclei; writes\n"
            "<out>/frac{f:.2f}_seed{seed}.json for each --fraction.\n\n"
            "example:\n  nudiff data subset runs/patches --fraction 0.1 --fraction 0.2 "
            "--strategy kmeans --seed 1 --out runs/subsets"
        ),
    )
    p.add_argument("patch_dir", type=Path, metavar="PATCH_DIR", help="output of 'data patches'")
    p.add_argument("--fraction", type=float, action="append", required=True)
    p.add_argument("--strategy", choices=sorted(STRATEGIES), default="kmeans")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=run_subset)


def run_subset(args: argparse.Namespace) -> None:
    patches = read_json(args.patch_dir / PATCH_MANIFEST)["patches"]
    cfg = SubsetConfig(fractions=args.fraction, strategy=args.strategy, seed=args.seed)
    for name, info in write_subsets(args.out, patches, cfg, args.patch_dir, True).items():
        print(
            f"{args.out / name}: {info['n_patches']} patches, "
            f"nuclei fraction {info['achieved_fraction']:.3f}"
        )


def _add_export_geojson(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-geojson",
        help="instance maps -> QuPath GeoJSON (one polygon per nucleus)",
        formatter_class=RAW,
        description=(
            "Write <out>/<name>.geojson for every label file, for QuPath (File > Import\n"
            "objects).\n\n"
            "example:\n  nudiff data export-geojson runs/pred/*.png --out runs/geojson"
        ),
    )
    p.add_argument("labels", nargs="+", type=Path, metavar="LABEL")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--classification", default="Nucleus")
    p.set_defaults(func=run_export_geojson)


def run_export_geojson(args: argparse.Namespace) -> None:
    problems = []
    for path in progress_bar(args.labels, desc="exporting", unit="file"):
        try:
            inst = read_instance_map(path)
            write_geojson(args.out / f"{path.stem}.geojson", inst, args.classification)
        except DataError as e:
            problems.append(str(e))
    raise_problems("export-geojson", problems)
    print(f"{len(args.labels) - len(problems)} GeoJSON files -> {args.out}")
