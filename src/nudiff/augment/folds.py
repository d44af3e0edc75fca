"""`nudiff augment --folds K`: k-fold evaluation for a folder of very few labeled images.

Holding a quarter of four images out scores on one image and trains on three. With ``K`` folds
every image is held out exactly once: fold ``i`` runs the whole chain (:func:`augment`) on the
other images with fold ``i``'s images as its ``--test`` folder, and the report pools the
held-out images of all folds (each image scored once, by the segmenters that never saw it):
real-only against real + pairs, paired by image, with its 95 % interval. Then the chain runs
once more on **all** images; its segmenters and pairs are what the command hands back (their
in-sample scores are not reported). Cost: ``K + 1`` chains.

Layout of ``OUT``::

    folds/fold1/split/{train,test}/  links to the user's files (fold 1's training / held-out)
    folds/fold1/                     fold 1's own augment output (segmenters, pairs, report)
    final/                           the chain on all images
    segmenter/, segmenter-real-only/, pairs/   copied from final/
    report/table.md, report/folds.json         the pooled k-fold answer
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from nudiff.augment.checks import check_labeled_folder
from nudiff.augment.pipeline import AUGMENTED, REAL, AugmentLayout, copy_tree
from nudiff.data.dataset import Pair, find_pairs
from nudiff.utils import DataError, read_json, write_json, write_text


def fold_of(names: list[str], k: int, seed: int = 0) -> dict[str, int]:
    """Each image name -> its fold (1..k): a seeded shuffle dealt round-robin, so fold sizes
    differ by at most one and the assignment does not depend on the order of ``names``."""
    if k < 2:
        raise ValueError(f"k-fold needs at least 2 folds, got {k}")
    order = sorted(names)
    np.random.default_rng(seed).shuffle(order)
    return {name: 1 + i % k for i, name in enumerate(order)}


def _link(pair: Pair, folder: Path) -> None:
    for src, sub in ((pair.image_path, "images"), (pair.label_path, "labels")):
        dst = folder / sub / src.name
        if not dst.is_symlink():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src.resolve(), dst)


def write_fold_split(pairs: list[Pair], folds: dict[str, int], fold: int, folder: Path) -> None:
    """``folder/train`` and ``folder/test``: links to the pairs outside / inside ``fold``."""
    for pair in pairs:
        _link(pair, folder / ("test" if folds[pair.name] == fold else "train"))


def check_folds(data: str | os.PathLike, k: int, n: int) -> None:
    """One line when ``k`` folds cannot be made of ``data``'s ``n`` images."""
    if k < 2 or k > n:
        raise DataError(data, f"--folds {k}: needs 2 to {n} folds (one per image at most)")


def fold_rows(layout: AugmentLayout, fold: int) -> list[dict]:
    """Per-image rows (arm, image, metrics) of one fold's two cells; seed = the fold."""
    rows = []
    for cell in (REAL, AUGMENTED):
        metrics = read_json(layout.run.metrics(cell))["per_image"]
        rows += [{"arm": cell.arm, "seed": fold, "image": i} | m for i, m in metrics.items()]
    return rows


def pooled(rows: list[dict]) -> dict:
    """real + pairs − real-only over every held-out image of every fold, paired by image."""
    from nudiff.experiment import paired_interval

    real = [r for r in rows if r["arm"] == REAL.arm]
    both = [r for r in rows if r["arm"] == AUGMENTED.arm]
    means = {
        arm: {m: float(np.mean([r[m] for r in rs])) for m in ("dice", "aji", "pq")}
        for arm, rs in ((REAL.arm, real), (AUGMENTED.arm, both))
    }
    return {
        "images": len(real),
        "means": means,
        "gain": paired_interval(both, real, ("dice", "aji", "pq")),
    }


def folds_markdown(answer: dict, k: int) -> str:
    g, m = answer["gain"], answer["means"]
    lines = [
        f"{k}-fold: every image held out once ({answer['images']} images), scored by the "
        "segmenters of the fold that did not train on it.",
        "",
        "| training data | Dice | AJI | PQ | gain over real-only (AJI, 95 % interval) |",
        "|---|---|---|---|---|",
        f"| real only | {m['real']['dice']:.4f} | {m['real']['aji']:.4f} | "
        f"{m['real']['pq']:.4f} | – |",
        f"| real + pairs | {m['real+syn']['dice']:.4f} | {m['real+syn']['aji']:.4f} | "
        f"{m['real+syn']['pq']:.4f} | {g['aji']['mean']:+.4f} "
        f"[{g['aji']['lo']:+.4f}, {g['aji']['hi']:+.4f}] |",
        "",
        "The segmenters handed back (`segmenter/`, `segmenter-real-only/`) were trained on all "
        "images (`final/`); the folds' reports are in `folds/fold*/report/`.",
    ]
    return "\n".join(lines) + "\n"


def augment_folds(data: str | os.PathLike, out: str | os.PathLike, k: int, **chain) -> Path:
    """Run (or resume) the ``k`` folds, the pooled report and the final chain on all images;
    ``chain``: :func:`nudiff.augment.augment`'s other arguments (``from_model``, ``config``,
    ``overrides``, ``pair_format``). Returns the report's table."""
    from nudiff.augment.pipeline import augment

    out, pairs = Path(out), find_pairs(data)
    check_folds(data, k, len(pairs))
    folds = fold_of([p.name for p in pairs], k)
    roots = [out / "folds" / f"fold{fold}" for fold in range(1, k + 1)]
    fresh = not out.exists()
    try:  # every fold's training images checked before any chain runs
        for fold, root in enumerate(roots, start=1):
            write_fold_split(pairs, folds, fold, root / "split")
            check_labeled_folder(root / "split" / "train", 0)
    except DataError:
        if fresh:  # only the links were written: a bad folder leaves nothing behind
            shutil.rmtree(out)
        raise
    rows = []
    for fold, root in enumerate(roots, start=1):
        layout = augment(root / "split" / "train", root, test=root / "split" / "test", **chain)
        rows += fold_rows(layout, fold)
    answer = pooled(rows)
    report = out / "report"
    write_json(report / "folds.json", {"k": k, "folds": folds, **answer})
    write_text(report / "table.md", folds_markdown(answer, k))
    # the deliverables: all images trained on (scored on fold 1's, in-sample: not reported)
    final = augment(data, out / "final", test=out / "folds" / "fold1" / "split" / "test", **chain)
    top = AugmentLayout(out)
    for src, dst in (
        (final.segmenter, top.segmenter),
        (final.segmenter_real_only, top.segmenter_real_only),
        (final.pairs, top.pairs),
    ):
        copy_tree(src, dst)
    return report / "table.md"
