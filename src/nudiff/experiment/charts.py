"""The experiment report's charts (matplotlib, written atomically): the results per fraction x
arm beside the paired gains, and the per-image scatter of an arm's gain against the label gain."""

from __future__ import annotations

import numpy as np

from nudiff.experiment.tables import metric_label
from nudiff.utils import atomic_path


def per_image_chart_name(entry: dict) -> str:
    """``per_image_f0.10.png``: the file name of one fraction's per-image scatter."""
    return f"per_image_f{entry['fraction']:.2f}.png"


def per_image_chart(entry: dict, path) -> None:
    """Scatter: per test image, what more labels give (x) against what each arm gives (y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    m = metric_label(entry["metric"])
    for k, (arm, v) in enumerate(entry["arms"].items()):
        images = list(v["gains"])
        ax.scatter(
            [entry["label_gain"][i] for i in images],
            [v["gains"][i] for i in images],
            color=f"C{k}",
            label=f"{arm} (r = {v['r']:+.2f}, p = {v['p']:.2f}"
            + ("" if np.isnan(v["r_split"]) else f"; split r = {v['r_split']:+.2f}")
            + ")",
        )
    ax.axhline(0, color="k", lw=0.8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(
        f"Δ {m}: {entry['reference'][0]:.0%} {entry['reference'][1]} − {entry['fraction']:.0%} "
        f"{entry['baseline']}  (what more labels give)"
    )
    ax.set_ylabel(f"Δ {m}: arm − {entry['fraction']:.0%} {entry['baseline']}")
    ax.set_title("Per test image: does an arm help where more labels help?", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def results_chart(summary: list[dict], path, gains: list[dict] | None = None) -> None:
    """Grouped bar chart (Dice, AJI, PQ per fraction x arm) with ± sd error bars; with ``gains``
    (``paired_gains`` entries that carry ``ci``) a second panel: Δ AJI and Δ PQ over the
    baseline with their 95 % intervals, where differences of 0.01 are visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("dice", "aji", "pq")
    labels = [f"{e['fraction']:.0%}\n{e['arm']}" for e in summary]
    x = np.arange(len(summary))
    width = 0.8 / len(metrics)
    gains = [g for g in gains or [] if "ci" in g]
    ncols = 2 if gains else 1
    fig, axes = plt.subplots(
        1,
        ncols,
        figsize=(max(6, 1.3 * len(summary)) + 5 * (ncols - 1), 4),
        squeeze=False,
        gridspec_kw={"width_ratios": [max(6, 1.3 * len(summary)), 5][:ncols]},
    )
    ax = axes[0, 0]
    for i, m in enumerate(metrics):
        ax.bar(
            x + (i - 1) * width,
            [e[m] for e in summary],
            width,
            yerr=[e[m + "_sd"] or 0 for e in summary],
            capsize=3,
            label=m.upper() if m != "dice" else "Dice",
        )
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean over test images")
    ax.legend(ncol=3, loc="lower right")
    ax.set_title(
        "Segmenter per labeled fraction × training data\n(error bars: sd over seeds)", fontsize=10
    )
    if gains:
        ax = axes[0, 1]
        y = np.arange(len(gains))
        for j, (m, colour) in enumerate((("aji", "C1"), ("pq", "C2"))):
            mean = np.array([g["ci"][m]["mean"] for g in gains])
            err = np.array(
                [
                    [g["ci"][m]["mean"] - g["ci"][m]["lo"], g["ci"][m]["hi"] - g["ci"][m]["mean"]]
                    for g in gains
                ]
            ).T
            ax.errorbar(
                mean,
                y + (j - 0.5) * 0.3,
                xerr=np.nan_to_num(err),
                fmt="o",
                color=colour,
                capsize=3,
                label="Δ " + m.upper(),
            )
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(
            y,
            [f"{g['fraction']:.0%} {g['arm']}\n− {g.get('baseline', 'real')}" for g in gains],
            fontsize=8,
        )
        ax.invert_yaxis()
        ax.set_xlabel("difference, 95 % interval over (test image × seed) pairs")
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title("Paired gains", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
