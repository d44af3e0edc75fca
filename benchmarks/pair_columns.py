"""The same pairs of several synthetic folders side by side: one row per pair, one column per
folder, then the label's outlines on the first folder's image.

For levers that repaint the same labels (guidance, stain, checkpoints): folders synthesized
with the same seed hold the same labels under the same names, so a row shows what the lever
changed and nothing else. A folder whose label differs from the first's is an error.

    python benchmarks/pair_columns.py --folders s1.5=runs/g15/diffusion/f0.10/synthetic \\
        s2=runs/verdict-random/diffusion/f0.10/synthetic s3=runs/g3/diffusion/f0.10/synthetic \\
        --n 6 --out benchmarks/results/verdict-kumar-random-g1.5/guidance_pairs.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from nudiff.data.formats import detect_pair_format, pair_names, read_pair
from nudiff.data.io import write_image
from nudiff.pictures import mosaic, overlay
from nudiff.utils import DataError


def columns(folders: dict[str, Path], n: int) -> np.ndarray:
    """Rows of [image of each folder..., outlines], for the first ``n`` pairs by name."""
    formats = {name: detect_pair_format(folder) for name, folder in folders.items()}
    first_name, first = next(iter(folders.items()))
    tiles = []
    for pair in pair_names(first, formats[first_name])[:n]:
        images, label = [], None
        for name, folder in folders.items():
            image, inst, _ = read_pair(folder, pair, formats[name])
            label = inst if label is None else label  # the first folder's
            if not np.array_equal(inst, label):
                raise DataError(
                    folder,
                    f"pair {pair}: its label is not {first_name}'s (synthesize with the same "
                    "seed and structures)",
                )
            images.append(image)
        tiles += [*images, overlay(images[0], label, (0, 255, 0))]
    return mosaic(tiles, ncols=len(folders) + 1, gap=4)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--folders", nargs="+", required=True, metavar="NAME=DIR")
    ap.add_argument("--n", type=int, default=6, help="pairs (rows)")
    ap.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = ap.parse_args()
    folders = {k: Path(v) for k, v in (f.split("=", 1) for f in args.folders)}
    write_image(args.out, columns(folders, args.n))
    print(f"{args.out}: columns {', '.join(folders)}, outlines on {next(iter(folders))}")


if __name__ == "__main__":
    main()
