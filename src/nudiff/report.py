"""Pictures people would rather look at than read: overlays, structure panels, mosaics.

All functions are pure: they take arrays and return an RGB uint8 (H, W, 3) picture; write it
with :func:`nudiff.data.io.write_image`.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from skimage.segmentation import find_boundaries


def instance_colours(n: int, seed: int = 0) -> np.ndarray:
    """(n + 1, 3) uint8 bright colours; row 0 (background) is black."""
    rng = np.random.default_rng(seed)
    hsv = np.stack([rng.random(n), np.full(n, 0.9), np.full(n, 1.0)], axis=1)
    from skimage.color import hsv2rgb

    rgb = (hsv2rgb(hsv[None])[0] * 255).astype(np.uint8)
    return np.concatenate([np.zeros((1, 3), np.uint8), rgb])


def overlay(image: np.ndarray, instance_map: np.ndarray, colour: tuple[int, int, int] | None = None) -> np.ndarray:
    """Instance contours drawn on the image. image uint8 (H, W, 3); instance_map int (H, W).

    Each nucleus gets its own colour unless ``colour`` is given (e.g. (0, 255, 0)).
    """
    out = np.asarray(image, np.uint8).copy()
    inst = np.asarray(instance_map)
    edges = find_boundaries(inst, mode="inner") & (inst > 0)
    if colour is not None:
        out[edges] = colour
    else:
        out[edges] = instance_colours(int(inst.max()))[inst[edges]]
    return out


def label_picture(instance_map: np.ndarray) -> np.ndarray:
    """Instance map as a picture: each nucleus filled with its own colour, black background."""
    inst = np.asarray(instance_map)
    return instance_colours(int(inst.max()))[inst]


def structure_picture(structure: np.ndarray) -> np.ndarray:
    """The 3 structure channels side by side: semantic (grey), h and v (blue -1 .. red +1).

    structure float (3, H, W), semantic in [0, 1] (or [-1, 1]), h/v in [-1, 1].
    Returns uint8 (H, 3W + 8, 3).
    """
    s = np.asarray(structure, np.float32)
    sem = s[0] if s[0].min() >= 0 else (s[0] + 1) / 2
    grey = (np.clip(sem, 0, 1) * 255).astype(np.uint8)
    cmap = colormaps["coolwarm"]
    panels = [np.repeat(grey[..., None], 3, axis=2)]
    for ch in (1, 2):
        panels.append((cmap((np.clip(s[ch], -1, 1) + 1) / 2)[..., :3] * 255).astype(np.uint8))
    return hstack(panels, gap=4)


def structure_rgb(structure: np.ndarray) -> np.ndarray:
    """Compact RGB rendering of a structure: (semantic, (h+1)/2, (v+1)/2) -> uint8 (H, W, 3)."""
    s = np.asarray(structure, np.float32)
    sem = s[0] if s[0].min() >= 0 else (s[0] + 1) / 2
    rgb = np.stack([sem, (s[1] + 1) / 2, (s[2] + 1) / 2], axis=-1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def hstack(pictures: list[np.ndarray], gap: int = 4, fill: int = 255) -> np.ndarray:
    """Side by side with a white gap; pictures are padded at the bottom to the tallest."""
    h = max(p.shape[0] for p in pictures)
    cols = []
    for i, p in enumerate(pictures):
        p = _rgb(p)
        if p.shape[0] < h:
            p = np.concatenate([p, np.full((h - p.shape[0],) + p.shape[1:], fill, np.uint8)])
        cols.append(p)
        if i < len(pictures) - 1:
            cols.append(np.full((h, gap, 3), fill, np.uint8))
    return np.concatenate(cols, axis=1)


def mosaic(tiles: list[np.ndarray], ncols: int = 8, gap: int = 2, fill: int = 255) -> np.ndarray:
    """Tiles (all the same size) in a grid, row-major."""
    if not tiles:
        raise ValueError("mosaic needs at least one tile")
    tiles = [_rgb(t) for t in tiles]
    th, tw = tiles[0].shape[:2]
    ncols = min(ncols, len(tiles))
    nrows = -(-len(tiles) // ncols)
    out = np.full((nrows * (th + gap) - gap, ncols * (tw + gap) - gap, 3), fill, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        out[r * (th + gap): r * (th + gap) + th, c * (tw + gap): c * (tw + gap) + tw] = t[:th, :tw]
    return out


def _rgb(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p)
    if p.ndim == 2:
        p = np.repeat(p[..., None], 3, axis=2)
    if p.dtype != np.uint8:
        p = (np.clip(p, 0, 1) * 255).astype(np.uint8)
    return p


# --- the experiment report ------------------------------------------------------------------

# NuDiff Table 1, HoVer-Net (Dice, AJI): "real" = labeled, "real+syn" = augmented
PAPER_TABLE1 = {
    (0.1, "real"): (0.7969, 0.6344), (0.1, "real+syn"): (0.8291, 0.6785),
    (0.2, "real"): (0.8118, 0.6501), (0.2, "real+syn"): (0.8219, 0.6657),
    (0.5, "real"): (0.8182, 0.6603), (0.5, "real+syn"): (0.8291, 0.6764),
    (1.0, "real"): (0.8206, 0.6652), (1.0, "real+syn"): (0.8336, 0.6810),
}
PAPER_TABLE1_KUMAR = {
    (0.1, "real"): (0.8040, 0.5939), (0.1, "real+syn"): (0.8049, 0.6161),
    (0.2, "real"): (0.8078, 0.6098), (0.2, "real+syn"): (0.8192, 0.6255),
    (0.5, "real"): (0.8175, 0.6201), (0.5, "real+syn"): (0.8158, 0.6307),
    (1.0, "real"): (0.8150, 0.6183), (1.0, "real+syn"): (0.8210, 0.6301),
}
PAPER_TABLES = {"monuseg": PAPER_TABLE1, "kumar": PAPER_TABLE1_KUMAR}
REPORT_METRICS = ("dice", "aji", "aji_plus", "pq")


def _per_seed_means(rows: list[dict]) -> dict:
    """{(fraction, arm): {seed: {metric: mean over that cell's test images}}}."""
    by_cell: dict = {}
    for r in rows:
        by_cell.setdefault((float(r["fraction"]), r["arm"]), {}).setdefault(int(r["seed"]), []).append(r)
    return {cell: {seed: {m: float(np.mean([float(r[m]) for r in rs])) for m in REPORT_METRICS}
                   for seed, rs in seeds.items()} for cell, seeds in by_cell.items()}


def summarise_results(rows: list[dict]) -> list[dict]:
    """Per (fraction, arm): mean over test images per seed, then mean ± sd over seeds."""
    out = []
    for (fraction, arm), seeds in sorted(_per_seed_means(rows).items()):
        entry = {"fraction": fraction, "arm": arm, "n_seeds": len(seeds)}
        for m in REPORT_METRICS:
            entry[m], entry[m + "_sd"] = _mean_sd([means[m] for means in seeds.values()])
        out.append(entry)
    return out


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample sd (``None`` for a single value)."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else None


def _cells_table(header: str, entries: list[dict], spec: str, n_seeds, paper) -> str:
    """Markdown: one row per entry, metrics as mean ± sd formatted with ``spec``, then the
    paper's (Dice, AJI) pair (``paper(e)``, ``None``: dashes)."""
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        ref = paper(e)
        pd, pa = (format(ref[0], spec), format(ref[1], spec)) if ref else ("–", "–")
        cols = [format(e[m], spec) + (f" ± {e[m + '_sd']:.4f}" if e[m + "_sd"] is not None else "")
                for m in REPORT_METRICS]
        lines.append(f"| {e['fraction']:.0%} | {e['arm']} | {n_seeds(e)} | " + " | ".join(cols) + f" | {pd} | {pa} |")
    return "\n".join(lines) + "\n"


def results_markdown(summary: list[dict], paper: str = "monuseg") -> str:
    table = PAPER_TABLES[paper]
    return _cells_table(
        "| labeled | training data | seeds | Dice | AJI | AJI+ | PQ | paper Dice | paper AJI |",
        summary, ".4f", lambda e: e["n_seeds"],
        lambda e: table.get((round(e["fraction"], 2), e["arm"])))


def paired_gains(rows: list[dict], paper: str = "monuseg", baseline: str = "real",
                 arms: tuple[str, ...] | None = None) -> list[dict]:
    """Per fraction and arm (``arms``, default every other arm): (arm - ``baseline``) over the
    seeds both have, paired by seed (per-seed means over test images), mean ± sd; ``ci``: the 95 %
    interval of the difference over (test image × seed) pairs (``paired_interval``); the paper's
    Dice/AJI gain beside it (over real only: the paper has no other baseline)."""
    table = PAPER_TABLES[paper] if baseline == "real" else {}
    cells = _per_seed_means(rows)
    out = []
    for (fraction, arm), arm_seeds in sorted(cells.items()):
        real = cells.get((fraction, baseline), {})
        seeds = sorted(set(arm_seeds) & set(real))
        if arm == baseline or (arms is not None and arm not in arms) or not seeds:
            continue
        entry = {"fraction": fraction, "arm": arm, "seeds": seeds}
        for m in REPORT_METRICS:
            entry[m], entry[m + "_sd"] = _mean_sd([arm_seeds[s][m] - real[s][m] for s in seeds])
        at = [r for r in rows if float(r["fraction"]) == fraction and int(r["seed"]) in seeds]
        entry["ci"] = paired_interval([r for r in at if r["arm"] == arm],
                                      [r for r in at if r["arm"] == baseline], ("aji", "pq"))
        entry["baseline"] = baseline
        ref, base = table.get((round(fraction, 2), arm)), table.get((round(fraction, 2), "real"))
        entry["paper"] = [ref[0] - base[0], ref[1] - base[1]] if ref and base else None
        out.append(entry)
    return out


def paired_interval(rows_a: list[dict], rows_b: list[dict], metrics=REPORT_METRICS,
                    confidence: float = 0.95) -> dict:
    """Differences a − b over the (test image, seed) pairs both have: per metric the mean and
    a Student-t ``confidence`` interval ``{"mean", "lo", "hi"}``; ``"n"``: the number of pairs.

    Pairs share a test image across seeds, so the interval treats them as independent, which
    they are not quite; it says whether a gain is distinguishable from the pair-to-pair noise.
    """
    from scipy.stats import t

    b = {(r["image"], int(r["seed"])): r for r in rows_b}
    pairs = [(r, b[(r["image"], int(r["seed"]))]) for r in rows_a if (r["image"], int(r["seed"])) in b]
    out: dict = {"n": len(pairs)}
    for m in metrics:
        d = np.array([float(x[m]) - float(y[m]) for x, y in pairs])
        if len(d) < 2:
            out[m] = {"mean": float(d.mean()) if len(d) else float("nan"), "lo": float("nan"), "hi": float("nan")}
            continue
        half = t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        out[m] = {"mean": float(d.mean()), "lo": float(d.mean() - half), "hi": float(d.mean() + half)}
    return out


def gains_markdown(gains: list[dict]) -> str:
    base = gains[0].get("baseline", "real") if gains else "real"
    table = _cells_table(
        f"| labeled | arm − {base} (paired by seed) | seeds | Δ Dice | Δ AJI | Δ AJI+ | Δ PQ | paper Δ Dice | paper Δ AJI |",
        gains, "+.4f", lambda e: len(e["seeds"]), lambda e: e["paper"])
    with_ci = [e for e in gains if "ci" in e]
    return table + ("\n" + _interval_table(f"arm − {base}", with_ci) if with_ci else "")


def _interval_table(column: str, entries: list[dict]) -> str:
    """Markdown: per entry its fraction, arm, number of pairs and ``_interval_cells``."""
    lines = [f"| labeled | {column} | (image × seed) pairs | Δ AJI, 95 % interval | Δ PQ, 95 % interval |",
             "|---|---|---|---|---|"]
    lines += [f"| {e['fraction']:.0%} | {e['arm']} | {e['ci']['n']} | {_interval_cells(e['ci'])} |" for e in entries]
    return "\n".join(lines) + "\n"


def gaps_to_full(rows: list[dict], full: float = 1.0) -> list[dict]:
    """Per fraction below ``full`` and arm: arm − ``full`` real over the (test image, seed)
    pairs both have (``paired_interval`` of AJI and PQ): what all the labels still add, i.e. how
    close an arm comes to them. Seeds the ``full`` cell lacks are left out."""
    top = [r for r in rows if float(r["fraction"]) == full and r["arm"] == "real"]
    out = []
    for fraction, arm in sorted({(float(r["fraction"]), r["arm"]) for r in rows}):
        if fraction >= full:
            continue
        ci = paired_interval([r for r in rows if float(r["fraction"]) == fraction and r["arm"] == arm],
                             top, ("aji", "pq"))
        if ci["n"]:
            out.append({"fraction": fraction, "arm": arm, "full": full, "ci": ci})
    return out


def gaps_markdown(entries: list[dict]) -> str:
    full = entries[0]["full"] if entries else 1.0
    return _interval_table(f"arm − {full:.0%} real", entries)


def _interval_cells(ci: dict) -> str:
    """The Δ AJI and Δ PQ cells of a ``paired_interval``: mean [lo, hi]."""
    return " | ".join(f"{ci[m]['mean']:+.4f} [{ci[m]['lo']:+.4f}, {ci[m]['hi']:+.4f}]" for m in ("aji", "pq"))


def _per_group(rows: list[dict], groups: dict[str, str], entries) -> list[dict]:
    """``entries(rows)`` within each group of test images, each entry tagged with its group."""
    return [e | {"group": g} for g in sorted(set(groups.values()))
            for e in entries([r for r in rows if groups.get(r["image"]) == g])]


def group_summary(rows: list[dict], groups: dict[str, str]) -> list[dict]:
    """``summarise_results`` within each group of test images (``groups``: image -> group,
    e.g. Kumar's same-organ and different-organ test images)."""
    return _per_group(rows, groups, summarise_results)


def group_gains(rows: list[dict], groups: dict[str, str], paper: str = "monuseg", baseline: str = "real",
                arms: tuple[str, ...] | None = None) -> list[dict]:
    """``paired_gains`` over ``baseline`` within each group of test images (``"group"`` added)."""
    return _per_group(rows, groups, lambda rs: paired_gains(rs, paper, baseline, arms))


def group_gains_markdown(entries: list[dict]) -> str:
    base = entries[0].get("baseline", "real") if entries else "real"
    lines = [f"| labeled | arm − {base} | test images | (image × seed) pairs | Δ AJI, 95 % interval | Δ PQ, 95 % interval |",
             "|---|---|---|---|---|---|"]
    for e in sorted(entries, key=lambda e: (e["fraction"], e["arm"], e["group"])):
        lines.append(f"| {e['fraction']:.0%} | {e['arm']} | {e['group']} | {e['ci']['n']} | {_interval_cells(e['ci'])} |")
    return "\n".join(lines) + "\n"


def group_markdown(entries: list[dict]) -> str:
    lines = ["| labeled | training data | test images | seeds | Dice | AJI | PQ |", "|---|---|---|---|---|---|---|"]
    for e in sorted(entries, key=lambda e: (e["fraction"], e["arm"], e["group"])):
        cols = [f"{e[m]:.4f}" + (f" ± {e[m + '_sd']:.4f}" if e[m + "_sd"] is not None else "")
                for m in ("dice", "aji", "pq")]
        lines.append(f"| {e['fraction']:.0%} | {e['arm']} | {e['group']} | {e['n_seeds']} | " + " | ".join(cols) + " |")
    return "\n".join(lines) + "\n"


def _pearson(x: list[float], y: list[float]) -> tuple[float, float]:
    """Pearson (r, p); NaN when either side is constant or has fewer than 3 values."""
    from scipy.stats import pearsonr

    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan"), float("nan")
    r, p = pearsonr(x, y)
    return float(r), float(p)


def per_image_gains(rows: list[dict], fraction: float, baseline: str = "real",
                    reference: tuple[float, str] = (1.0, "real"), metric: str = "aji") -> dict:
    """Where extra data helps, image by image. Per test image: ``label_gain``, the mean over
    seeds of ``reference`` minus the mean of ``baseline`` at ``fraction`` (what more labels
    give); per other arm at ``fraction``, its gain over ``baseline`` (paired by seed, mean over
    seeds) and the Pearson r (with p) between the two over images: r > 0 means the arm helps
    where more labels help.

    Both gains subtract the same baseline, so its noise alone correlates them a little;
    ``r_split`` removes that: the label gain over baseline seed *k* against the arm's gain at
    the other seeds, r averaged over *k* (NaN with a single shared seed). ``{}`` when fewer
    than 3 images have both cells."""

    def by_image(f: float, arm: str) -> dict:
        out: dict = {}
        for r in rows:
            if float(r["fraction"]) == f and r["arm"] == arm:
                out.setdefault(r["image"], {})[int(r["seed"])] = float(r[metric])
        return out

    def gain(cells: dict, image: str, seeds) -> float:
        return float(np.mean([cells[image][s] - base[image][s] for s in seeds]))

    base, ref = by_image(fraction, baseline), by_image(*reference)
    images = sorted(set(base) & set(ref))
    if len(images) < 3:
        return {}
    ref_mean = {i: float(np.mean(list(ref[i].values()))) for i in images}
    label_gain = {i: ref_mean[i] - float(np.mean(list(base[i].values()))) for i in images}
    arms = {}
    for arm in sorted({r["arm"] for r in rows if float(r["fraction"]) == fraction} - {baseline}):
        cells = by_image(fraction, arm)
        shared = {i: set(cells.get(i, {})) & set(base[i]) for i in images}
        gains = {i: gain(cells, i, shared[i]) for i in images if shared[i]}
        if len(gains) < 3:
            continue
        r, p = _pearson([label_gain[i] for i in gains], list(gains.values()))
        seeds = sorted(set().union(*shared.values()))
        splits = []
        for k in seeds:
            held = [i for i in gains if k in base[i] and shared[i] - {k}]
            splits.append(_pearson([ref_mean[i] - base[i][k] for i in held],
                                   [gain(cells, i, shared[i] - {k}) for i in held])[0])
        r_split = float(np.nanmean(splits)) if any(np.isfinite(splits)) else float("nan")
        arms[arm] = {"gains": gains, "r": r, "p": p, "r_split": r_split, "seeds": seeds}
    return {"fraction": fraction, "baseline": baseline, "reference": list(reference), "metric": metric,
            "label_gain": label_gain, "arms": arms}


def _metric_label(metric: str) -> str:
    return metric.upper().replace("_PLUS", "+")


def per_image_markdown(entry: dict) -> str:
    """One row per test image, sorted by what more labels give; last row: Pearson r (p)."""
    m, arms = _metric_label(entry["metric"]), entry["arms"]
    ref = f"{entry['reference'][0]:.0%} {entry['reference'][1]}"
    base = f"{entry['fraction']:.0%} {entry['baseline']}"
    seeds = lambda n: f"{n} seed" + ("s" if n > 1 else "")  # noqa: E731
    lines = [f"| test image | Δ {m}: {ref} − {base} | "
             + " | ".join(f"Δ {m}: {a} − {base} ({seeds(len(v['seeds']))})" for a, v in arms.items()) + " |",
             "|---" * (len(arms) + 2) + "|"]
    for image, g in sorted(entry["label_gain"].items(), key=lambda kv: -kv[1]):
        cols = [f"{v['gains'][image]:+.3f}" if image in v["gains"] else "–" for v in arms.values()]
        lines.append(f"| {image} | {g:+.3f} | " + " | ".join(cols) + " |")
    lines.append("| Pearson r with the label gain (p) | | "
                 + " | ".join(f"{v['r']:+.2f} ({v['p']:.2f})" for v in arms.values()) + " |")
    lines.append("| r, baseline seeds split (label gain over one seed, arm gain over the others) | | "
                 + " | ".join("–" if np.isnan(v["r_split"]) else f"{v['r_split']:+.2f}" for v in arms.values()) + " |")
    return "\n".join(lines) + "\n"


def per_image_chart_name(entry: dict) -> str:
    """``per_image_f0.10.png``: the file name of one fraction's per-image scatter."""
    return f"per_image_f{entry['fraction']:.2f}.png"


def per_image_chart(entry: dict, path) -> None:
    """Scatter: per test image, what more labels give (x) against what each arm gives (y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nudiff.utils import atomic_path

    fig, ax = plt.subplots(figsize=(6, 4.5))
    m = _metric_label(entry["metric"])
    for k, (arm, v) in enumerate(entry["arms"].items()):
        images = list(v["gains"])
        ax.scatter([entry["label_gain"][i] for i in images], [v["gains"][i] for i in images],
                   color=f"C{k}", label=f"{arm} (r = {v['r']:+.2f}, p = {v['p']:.2f}"
                   + ("" if np.isnan(v["r_split"]) else f"; split r = {v['r_split']:+.2f}") + ")")
    ax.axhline(0, color="k", lw=0.8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(f"Δ {m}: {entry['reference'][0]:.0%} {entry['reference'][1]} − {entry['fraction']:.0%} "
                  f"{entry['baseline']}  (what more labels give)")
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

    from nudiff.utils import atomic_path

    metrics = ("dice", "aji", "pq")
    labels = [f"{e['fraction']:.0%}\n{e['arm']}" for e in summary]
    x = np.arange(len(summary))
    width = 0.8 / len(metrics)
    gains = [g for g in gains or [] if "ci" in g]
    ncols = 2 if gains else 1
    fig, axes = plt.subplots(1, ncols, figsize=(max(6, 1.3 * len(summary)) + 5 * (ncols - 1), 4),
                             squeeze=False, gridspec_kw={"width_ratios": [max(6, 1.3 * len(summary)), 5][:ncols]})
    ax = axes[0, 0]
    for i, m in enumerate(metrics):
        ax.bar(x + (i - 1) * width, [e[m] for e in summary], width,
               yerr=[e[m + "_sd"] or 0 for e in summary], capsize=3, label=m.upper() if m != "dice" else "Dice")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean over test images")
    ax.legend(ncol=3, loc="lower right")
    ax.set_title("Segmenter per labeled fraction × training data\n(error bars: sd over seeds)", fontsize=10)
    if gains:
        ax = axes[0, 1]
        y = np.arange(len(gains))
        for j, (m, colour) in enumerate((("aji", "C1"), ("pq", "C2"))):
            mean = np.array([g["ci"][m]["mean"] for g in gains])
            err = np.array([[g["ci"][m]["mean"] - g["ci"][m]["lo"], g["ci"][m]["hi"] - g["ci"][m]["mean"]]
                            for g in gains]).T
            ax.errorbar(mean, y + (j - 0.5) * 0.3, xerr=np.nan_to_num(err), fmt="o", color=colour,
                        capsize=3, label="Δ " + m.upper())
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(y, [f"{g['fraction']:.0%} {g['arm']}\n− {g.get('baseline', 'real')}" for g in gains],
                      fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("difference, 95 % interval over (test image × seed) pairs")
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title("Paired gains", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_experiment_report(out, rows: list[dict], cfg=None, groups: dict[str, str] | None = None) -> None:
    """report/table.md, report/summary.json, report/chart.png and report/index.html; ``groups``
    ({test image: group}) defaults to the run's prepared ``data/`` folder's."""
    import html
    import shutil
    from pathlib import Path

    from nudiff.utils import write_json, write_text

    out = Path(out)
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    paper = getattr(cfg, "paper", "monuseg")
    summary = summarise_results(rows)
    table = results_markdown(summary, paper)
    gains = paired_gains(rows, paper)
    # the reviewer's question: does diffusion beat copy-paste (same real subset, same steps)?
    with_pairs = ("real+syn", "real+copypaste+syn")
    versus_copypaste = paired_gains(rows, paper, baseline="real+copypaste", arms=with_pairs)
    gaps = gaps_to_full(rows)  # how close each arm comes to all the labels
    from nudiff.data.prepare import load_groups

    groups = load_groups(out / "data") if groups is None else groups
    by_group = group_summary(rows, groups) if groups else []
    gains_by_group = group_gains(rows, groups, paper) if groups else []
    versus_copypaste_by_group = group_gains(rows, groups, paper, "real+copypaste", with_pairs) if groups else []
    fractions = sorted({float(r["fraction"]) for r in rows if float(r["fraction"]) < 1.0})
    # one per-image view per labeled fraction below 100 % that has arms beside its baseline
    per_image = [e for e in (per_image_gains(rows, f) for f in fractions) if e.get("arms")]
    # (HTML title, markdown) of each section that has rows, in the order of both outputs
    sections = [(title, md) for title, md in [
        ("Gain over real-only at the same fraction, paired by seed", gains_markdown(gains) if gains else ""),
        ("Diffusion versus copy-paste, paired by seed",
         gains_markdown(versus_copypaste) if versus_copypaste else ""),
        ("Against 100 % labels, paired by test image and seed", gaps_markdown(gaps) if gaps else ""),
        ("By group of test images", group_markdown(by_group) if by_group else ""),
        ("Gain over real-only by group of test images",
         group_gains_markdown(gains_by_group) if gains_by_group else ""),
        ("Diffusion versus copy-paste by group of test images",
         group_gains_markdown(versus_copypaste_by_group) if versus_copypaste_by_group else ""),
    ] if md]
    write_text(rep / "table.md", table + "".join("\n" + md for _, md in sections)
               + "".join("\n" + per_image_markdown(e) for e in per_image))
    write_json(rep / "summary.json", {"cells": summary, "gains": gains, "versus_copypaste": versus_copypaste, "gaps_to_full": gaps,
                                      "groups": by_group, "group_gains": gains_by_group,
                                      "group_versus_copypaste": versus_copypaste_by_group,
                                      "per_image": per_image})
    if summary:
        results_chart(summary, rep / "chart.png", gains + versus_copypaste)
    for e in per_image:
        per_image_chart(e, rep / per_image_chart_name(e))
    pictures = []
    for mosaic_path in sorted((out / "diffusion").glob("f*/synthetic/mosaic.png")):
        target = rep / f"mosaic_{mosaic_path.parts[-3]}.png"
        shutil.copyfile(mosaic_path, target)
        pictures.append((f"Synthetic pairs (top) beside real validation patches (bottom), {mosaic_path.parts[-3]}",
                         target.name))
    for mosaic_path in sorted((out / "copypaste").glob("f*/mosaic.png")):
        target = rep / f"copypaste_{mosaic_path.parts[-2]}.png"
        shutil.copyfile(mosaic_path, target)
        pictures.append((f"Copy-paste patches (image, then labels), {mosaic_path.parts[-2]}", target.name))
    for cell_dir in sorted((out / "cells").glob("*")):
        overlays = sorted((cell_dir / "pred" / "overlays").glob("*.png"))[:1]
        for o in overlays:
            target = rep / f"overlay_{cell_dir.name}_{o.name}"
            shutil.copyfile(o, target)
            pictures.append((f"Prediction overlay, {cell_dir.name}: {o.stem}", target.name))
    body = [
        "<h1>nudiff experiment</h1>",
        "<p>Mean over test images, then mean ± sd over segmenter seeds. Paper: NuDiff Table 1 "
        "(HoVer-Net, MoNuSeg official test set — a different test set and a far larger budget).</p>",
        _markdown_table_html(table),
        *(f"<h3>{html.escape(title)}</h3>" + _markdown_table_html(md) for title, md in sections),
        '<img src="chart.png" style="max-width:100%">' if summary else "<p>No finished cells yet.</p>",
        *(f"<h3>Per test image, {e['fraction']:.0%} labeled: what each arm gives against what more labels give</h3>"
          + _markdown_table_html(per_image_markdown(e)) + f'<img src="{per_image_chart_name(e)}">' for e in per_image),
    ]
    for caption, name in pictures:
        body.append(f"<h3>{html.escape(caption)}</h3><img src=\"{html.escape(name)}\" style=\"max-width:100%\">")
    write_text(rep / "index.html", "<!doctype html><meta charset=utf-8><title>nudiff report</title>"
               "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{padding:2px 8px;"
               "border-bottom:1px solid #ddd}</style>\n" + "\n".join(body) + "\n")


def _markdown_table_html(md: str) -> str:
    """Markdown tables (separated by blank lines) -> HTML tables."""
    import html

    out = []
    for block in md.strip().split("\n\n"):
        rows = [r.strip().strip("|").split("|") for r in block.strip().splitlines()]
        head, body = rows[0], rows[2:]
        out += ["<table>", "<tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>"]
        for r in body:
            out.append("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>")
        out.append("</table>")
    return "\n".join(out)
