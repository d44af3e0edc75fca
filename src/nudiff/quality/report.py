"""What `nudiff quality` writes: quality.json, quality.md, pairs.csv, histograms, mosaics."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nudiff.quality.stats import STRUCTURE_STATS
from nudiff.utils import write_json, write_text

#: per-pair scores with a mosaic: (key, True when higher is better, what it says)
PAIR_SCORES = (
    (
        "fidelity_pq",
        True,
        "PQ of the real-trained segmenter's prediction against the pair's label",
    ),
    ("fidelity_aji", True, "AJI of the same prediction"),
    (
        "fidelity_unlabeled_rate",
        False,
        "share of the nuclei the segmenter finds in the image that the "
        "label lacks (outlined in magenta)",
    ),
    (
        "fidelity_missed_rate",
        False,
        "share of the label's nuclei the segmenter does not find in the image",
    ),
    ("c2st_p_real", True, "held-out probability, by the C2ST classifier, that the image is real"),
    ("colour_z", False, "mean |z| of the image's colour statistics against the real images"),
    (
        "visible_fraction",
        True,
        "share of the label's nuclei that are haematoxylin-positive in the image",
    ),
    (
        "h_unlabeled_rate",
        False,
        "share of the image's nucleus-sized haematoxylin blobs that have no label",
    ),
)

#: rows of the summary table: (key, measure, better)
TABLE = (
    ("structure_w1_mean", "structure: W1 / real sd, mean of 5 statistics", "lower"),
    *(
        (f"structure_w1_{k}", f"structure: W1 / real sd, {k.replace('_', ' ')}", "lower")
        for k in STRUCTURE_STATS
    ),
    ("colour_w1_mean", "colour: W1 / real sd, mean of HED + Lab mean/std", "lower"),
    ("colour_w1_hed_h_mean", "colour: W1 / real sd, haematoxylin mean", "lower"),
    ("colour_w1_hed_e_mean", "colour: W1 / real sd, eosin mean", "lower"),
    ("colour_w1_lab_l_mean", "colour: W1 / real sd, L* mean", "lower"),
    ("laplacian_variance_ratio", "texture: Laplacian variance / real", "nearer 1"),
    ("visible_fraction", "label: nuclei visible in haematoxylin", "higher"),
    ("h_unlabeled_rate", "label: haematoxylin blobs without a label (share)", "lower"),
    ("c2st_accuracy", "C2ST held-out accuracy (0.5 = indistinguishable)", "lower"),
    ("kid", "KID on the segmenter's encoder features", "lower"),
    ("fidelity_dice", "label fidelity: segmenter Dice vs label", "higher"),
    ("fidelity_aji", "label fidelity: segmenter AJI vs label", "higher"),
    ("fidelity_pq", "label fidelity: segmenter PQ vs label", "higher"),
    (
        "fidelity_unlabeled_rate",
        "label fidelity: nuclei found that the label lacks (share)",
        "lower",
    ),
    ("fidelity_missed_rate", "label fidelity: labeled nuclei not found (share)", "lower"),
)
UNLABELED_COLOUR = (255, 0, 255)  # magenta: a nucleus in the image that the label lacks


def histograms(
    sets: dict[str, dict[str, np.ndarray]],
    path: str | os.PathLike,
    keys: Sequence[str] = STRUCTURE_STATS,
    ncols: int = 5,
) -> Path:
    """Overlaid density histograms of each statistic (one panel per key) for each named set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(
        nrows,
        min(ncols, len(keys)),
        figsize=(2.6 * min(ncols, len(keys)), 2.5 * nrows),
        squeeze=False,
    )
    for ax, k in zip(axes.flat, keys):
        values = [np.asarray(v[k], float) for v in sets.values()]
        values = [v[np.isfinite(v)] for v in values]
        bins = (
            np.histogram_bin_edges(np.concatenate(values), bins=30)
            if any(len(v) for v in values)
            else 10
        )
        for label, v in zip(sets, values):
            ax.hist(v, bins, density=True, alpha=0.45, label=label)
        ax.set_title(k.replace("_", " "), fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def best_worst(
    pairs: list[dict], key: str, higher_is_better: bool, n: int = 8
) -> tuple[list[int], list[int]]:
    """Indices of the ``n`` best and ``n`` worst pairs by ``key`` (NaN scores left out)."""
    scored = [(p[key], i) for i, p in enumerate(pairs) if key in p and np.isfinite(p[key])]
    scored.sort(reverse=higher_is_better)
    return [i for _, i in scored[:n]], [i for _, i in scored[::-1][:n]]


def pair_tiles(
    images: np.ndarray, labels: np.ndarray, idx: list[int], unlabeled: np.ndarray | None = None
) -> list[np.ndarray]:
    """image | label contours (green), with the nuclei the label lacks (``unlabeled``) in
    magenta."""
    from nudiff.pictures import hstack, overlay

    def outlined(i: int) -> np.ndarray:
        picture = overlay(images[i], labels[i], (0, 255, 0))
        return picture if unlabeled is None else overlay(picture, unlabeled[i], UNLABELED_COLOUR)

    return [hstack([images[i], outlined(i)], gap=1) for i in idx]


def write_mosaics(out: Path, assessment, n: int = 8) -> dict[str, tuple[list[int], list[int]]]:
    """``mosaic_<score>.png``: the ``n`` best pairs (top rows) then the ``n`` worst (bottom rows),
    each as image | label contours; returns {score: (best, worst)} indices."""
    from nudiff.data.io import write_image
    from nudiff.pictures import mosaic

    s = assessment.sets["synthetic"]
    chosen = {}
    for key, higher, _ in PAIR_SCORES:
        best, worst = best_worst(assessment.pairs, key, higher, n)
        if not best:
            continue
        tiles = pair_tiles(s.images, s.labels, best, s.unlabeled)
        tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % 4)  # worst start on a new row
        tiles += pair_tiles(s.images, s.labels, worst, s.unlabeled)
        write_image(out / f"mosaic_{key}.png", mosaic(tiles, ncols=4, gap=6))
        chosen[key] = (best, worst)
    return chosen


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def to_markdown(assessment, chosen: dict) -> str:
    m, names = assessment.metrics, assessment.sets["synthetic"].names
    inp = assessment.inputs
    lines = [
        "# Synthetic pair quality (`nudiff quality`)",
        "",
        f"Synthetic: `{inp['synthetic']}` ({m['n_synthetic']} pairs); real: `{inp['real']}`; "
        f"{m['window']}-px windows; seed {m['seed']}; {m['seconds']:.0f} s.",
        "",
        "The floor is the same measure between two halves of the real images (half B against "
        "half A, the reference of every row): how far apart real data already is.",
        "",
        "| measure | synthetic | real vs real (floor) | better |",
        "|---|---|---|---|",
    ]
    for key, label, better in TABLE:
        if key in m:
            lines.append(
                f"| {label} | {_fmt(m[key])} | {_fmt(m.get(key + '_floor'))} | {better} |"
            )
    lines += _at_scale_lines(m) + _tstr_lines(m)
    lines += [
        "",
        "Means, synthetic / real: "
        + ", ".join(
            f"{k.replace('_', ' ')} {_fmt(m[f'mean_{k}'])} / {_fmt(m[f'mean_{k}_real'])}"
            for k in STRUCTURE_STATS
        )
        + ".",
        "",
        "![histograms](histograms.png)",
        "",
    ]
    if assessment.notes:
        lines += [f"- {n}" for n in assessment.notes] + [""]
    lines += [
        "## Best and worst pairs by each per-pair score",
        "",
        "Each mosaic: the 8 best pairs (top two rows), then the 8 worst; image | label contours "
        "(green; in magenta, nuclei the real-trained segmenter finds that the label lacks). "
        "All per-pair scores: `pairs.csv`.",
        "",
    ]
    for key, _, what in PAIR_SCORES:
        if key in chosen:
            best, worst = chosen[key]
            lines += [
                f"### `{key}`: {what}",
                "",
                "best: "
                + ", ".join(f"{names[i]} ({_fmt(assessment.pairs[i][key])})" for i in best),
                "",
                "worst: "
                + ", ".join(f"{names[i]} ({_fmt(assessment.pairs[i][key])})" for i in worst),
                "",
                f"![{key}](mosaic_{key}.png)",
                "",
            ]
    return "\n".join(lines)


def _at_scale_lines(m: dict) -> list[str]:
    """The paragraph on what sampling at a lower scale costs (when the pairs were upsampled)."""
    if "laplacian_variance_ratio_at_scale" not in m:
        return []
    return [
        "",
        f"The pairs were sampled at scale {m['synthesis_scale']:g} and upsampled. The same "
        "done to real windows gives the most such images can reach: Laplacian ratio "
        f"{_fmt(m['laplacian_variance_ratio_at_scale'])} (synthetic "
        f"{_fmt(m['laplacian_variance_ratio'])}). "
        f"C2ST against real windows at that scale: {_fmt(m['c2st_accuracy_at_scale'])} "
        f"(at full resolution {_fmt(m['c2st_accuracy'])}; real against its own resampled "
        f"windows: {_fmt(m['c2st_accuracy_resampling'])}, what resolution alone gives away).",
    ]


def _tstr_lines(m: dict) -> list[str]:
    """The train-on-synthetic, test-on-real table (when there are ``syn-only`` cells)."""
    tstr = sorted(k for k in m if k.startswith("tstr_") and k.count("_") == 3)
    if not tstr:
        return []
    return [
        "",
        "## Train on synthetic, test on real (`syn-only` cells)",
        "",
        "| cell | syn-only | real | ratio |",
        "|---|---|---|---|",
    ] + [
        f"| {k[5:]} | {_fmt(m[k])} | {_fmt(m.get(k + '_real'))} | {_fmt(m.get(k + '_ratio'))} |"
        for k in tstr
    ]


def pairs_csv(pairs: list[dict]) -> str:
    keys = sorted({k for p in pairs for k in p} - {"name"})
    rows = ["name," + ",".join(keys)]
    rows += [p["name"] + "," + ",".join(_fmt(p.get(k)) for k in keys) for p in pairs]
    return "\n".join(rows) + "\n"


def write_report(out: str | os.PathLike, assessment) -> Path:
    """quality.json, quality.md, pairs.csv, histograms.png and the mosaics into ``out``."""
    out = Path(out)
    labels = {"real_a": "real A (reference)", "real_b": "real B", "synthetic": "synthetic"}
    data = {labels[k]: v for k, v in assessment.distributions.items()}
    keys = (
        *STRUCTURE_STATS,
        "hed_h_mean",
        "hed_e_mean",
        "lab_l_mean",
        "lab_a_mean",
        "laplacian_variance",
    )
    histograms(data, out / "histograms.png", keys)
    chosen = write_mosaics(out, assessment)
    write_json(out / "quality.json", assessment.metrics)
    write_text(out / "pairs.csv", pairs_csv(assessment.pairs))
    write_text(out / "quality.md", to_markdown(assessment, chosen))
    return out / "quality.md"
