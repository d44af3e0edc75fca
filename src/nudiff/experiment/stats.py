"""The experiment's numbers, from per-image rows: summaries, paired gains and intervals.

A row is one (cell, test image): ``fraction``, ``arm``, ``seed``, ``image`` and the metrics
(``results.csv``, or a results folder's :func:`~nudiff.experiment.store.committed_rows`). Cells
are compared paired by seed (per-seed means over test images) and by (test image, seed) pair.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, t

# NuDiff Table 1, HoVer-Net (Dice, AJI): "real" = labeled, "real+syn" = augmented
PAPER_TABLE1 = {
    (0.1, "real"): (0.7969, 0.6344),
    (0.1, "real+syn"): (0.8291, 0.6785),
    (0.2, "real"): (0.8118, 0.6501),
    (0.2, "real+syn"): (0.8219, 0.6657),
    (0.5, "real"): (0.8182, 0.6603),
    (0.5, "real+syn"): (0.8291, 0.6764),
    (1.0, "real"): (0.8206, 0.6652),
    (1.0, "real+syn"): (0.8336, 0.6810),
}
PAPER_TABLE1_KUMAR = {
    (0.1, "real"): (0.8040, 0.5939),
    (0.1, "real+syn"): (0.8049, 0.6161),
    (0.2, "real"): (0.8078, 0.6098),
    (0.2, "real+syn"): (0.8192, 0.6255),
    (0.5, "real"): (0.8175, 0.6201),
    (0.5, "real+syn"): (0.8158, 0.6307),
    (1.0, "real"): (0.8150, 0.6183),
    (1.0, "real+syn"): (0.8210, 0.6301),
}
PAPER_TABLES = {
    "monuseg": PAPER_TABLE1,
    "kumar": PAPER_TABLE1_KUMAR,
    "none": {},
}  # none: a user's own data
REPORT_METRICS = ("dice", "aji", "aji_plus", "pq")


def _per_seed_means(rows: list[dict]) -> dict:
    """{(fraction, arm): {seed: {metric: mean over that cell's test images}}}."""
    by_cell: dict = {}
    for r in rows:
        by_cell.setdefault((float(r["fraction"]), r["arm"]), {}).setdefault(
            int(r["seed"]), []
        ).append(r)
    return {
        cell: {
            seed: {m: float(np.mean([float(r[m]) for r in rs])) for m in REPORT_METRICS}
            for seed, rs in seeds.items()
        }
        for cell, seeds in by_cell.items()
    }


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


def paired_gains(
    rows: list[dict],
    paper: str = "monuseg",
    baseline: str = "real",
    arms: tuple[str, ...] | None = None,
) -> list[dict]:
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
        entry["ci"] = paired_interval(
            [r for r in at if r["arm"] == arm],
            [r for r in at if r["arm"] == baseline],
            ("aji", "pq"),
        )
        entry["baseline"] = baseline
        ref, base = table.get((round(fraction, 2), arm)), table.get((round(fraction, 2), "real"))
        entry["paper"] = [ref[0] - base[0], ref[1] - base[1]] if ref and base else None
        out.append(entry)
    return out


def paired_interval(
    rows_a: list[dict],
    rows_b: list[dict],
    metrics=REPORT_METRICS,
    confidence: float = 0.95,
    by_seed: bool = False,
) -> dict:
    """Differences a − b over the (test image, seed) pairs both have: per metric the mean and
    a Student-t ``confidence`` interval ``{"mean", "lo", "hi"}``; ``"n"``: the number of pairs.
    With ``by_seed`` also ``"seeds"``, the seeds of those pairs (sorted), and per metric
    ``"per_seed"``, the mean difference over each seed's pairs (in that order): a head to head
    of two arms of any folders, e.g. ``benchmarks/kumar_recipes.py``'s.

    Pairs share a test image across seeds, so the interval treats them as independent, which
    they are not quite; it says whether a gain is distinguishable from the pair-to-pair noise.
    """
    b = {(r["image"], int(r["seed"])): r for r in rows_b}
    pairs = [
        (r, b[(r["image"], int(r["seed"]))]) for r in rows_a if (r["image"], int(r["seed"])) in b
    ]
    out: dict = {"n": len(pairs)}
    seed_of = np.array([int(x["seed"]) for x, _ in pairs])
    seeds = sorted(set(seed_of.tolist()))
    if by_seed:
        out["seeds"] = seeds
    for m in metrics:
        d = np.array([float(x[m]) - float(y[m]) for x, y in pairs])
        if len(d) < 2:
            out[m] = {
                "mean": float(d.mean()) if len(d) else float("nan"),
                "lo": float("nan"),
                "hi": float("nan"),
            }
        else:
            half = t.ppf(0.5 + confidence / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
            out[m] = {
                "mean": float(d.mean()),
                "lo": float(d.mean() - half),
                "hi": float(d.mean() + half),
            }
        if by_seed:
            out[m]["per_seed"] = [float(d[seed_of == k].mean()) for k in seeds]
    return out


def answer(rows: list[dict], paper: str = "monuseg", full: float = 1.0) -> list[dict]:
    """The main job's answer, one entry per cell (fraction, arm): Dice / AJI / PQ (mean over
    test images and seeds); below ``full``, for arms other than real, the AJI gain over real at
    the same fraction with its 95 % interval (:func:`paired_gains`) and, where ``full`` real
    is there too, the share of the real ``fraction`` → real ``full`` AJI gap that the arm
    closes, over the seeds all three have; the paper's (Dice, AJI). Empty for fewer than two
    cells."""
    summary = {(e["fraction"], e["arm"]): e for e in summarise_results(rows)}
    if len(summary) < 2:
        return []
    gains = {(g["fraction"], g["arm"]): g for g in paired_gains(rows, paper)}
    means = _per_seed_means(rows)
    out = []
    for (fraction, arm), e in sorted(summary.items(), key=lambda kv: (kv[0][0] == full, kv[0])):
        entry = {
            "fraction": fraction,
            "arm": arm,
            "n_seeds": e["n_seeds"],
            **{m: e[m] for m in ("dice", "aji", "pq")},
            "paper": PAPER_TABLES[paper].get((round(fraction, 2), arm)),
        }
        if (g := gains.get((fraction, arm))) is not None:
            entry["gain_aji"] = g["ci"]["aji"]
            real, top, arm_means = (
                means[(fraction, "real")],
                means.get((full, "real"), {}),
                means[(fraction, arm)],
            )
            seeds = sorted(set(real) & set(top) & set(arm_means)) if fraction < full else []
            if seeds:
                gap = np.mean([top[s]["aji"] - real[s]["aji"] for s in seeds])
                gain = np.mean([arm_means[s]["aji"] - real[s]["aji"] for s in seeds])
                entry["share_of_gap"] = float(gain / gap) if gap > 0 else None
        out.append(entry)
    return out


def gaps_to_full(rows: list[dict], full: float = 1.0) -> list[dict]:
    """Per fraction below ``full`` and arm: arm − ``full`` real over the (test image, seed)
    pairs both have (``paired_interval`` of AJI and PQ): what all the labels still add, i.e. how
    close an arm comes to them. Seeds the ``full`` cell lacks are left out."""
    top = [r for r in rows if float(r["fraction"]) == full and r["arm"] == "real"]
    out = []
    for fraction, arm in sorted({(float(r["fraction"]), r["arm"]) for r in rows}):
        if fraction >= full:
            continue
        ci = paired_interval(
            [r for r in rows if float(r["fraction"]) == fraction and r["arm"] == arm],
            top,
            ("aji", "pq"),
        )
        if ci["n"]:
            out.append({"fraction": fraction, "arm": arm, "full": full, "ci": ci})
    return out


def _per_group(rows: list[dict], groups: dict[str, str], entries) -> list[dict]:
    """``entries(rows)`` within each group of test images, each entry tagged with its group."""
    return [
        e | {"group": g}
        for g in sorted(set(groups.values()))
        for e in entries([r for r in rows if groups.get(r["image"]) == g])
    ]


def group_summary(rows: list[dict], groups: dict[str, str]) -> list[dict]:
    """``summarise_results`` within each group of test images (``groups``: image -> group,
    e.g. Kumar's same-organ and different-organ test images)."""
    return _per_group(rows, groups, summarise_results)


def group_gains(
    rows: list[dict],
    groups: dict[str, str],
    paper: str = "monuseg",
    baseline: str = "real",
    arms: tuple[str, ...] | None = None,
) -> list[dict]:
    """``paired_gains`` over ``baseline`` within each group of test images (``"group"`` added)."""
    return _per_group(rows, groups, lambda rs: paired_gains(rs, paper, baseline, arms))


def _pearson(x: list[float], y: list[float]) -> tuple[float, float]:
    """Pearson (r, p); NaN when either side is constant or has fewer than 3 values."""
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan"), float("nan")
    r, p = pearsonr(x, y)
    return float(r), float(p)


def per_image_gains(
    rows: list[dict],
    fraction: float,
    baseline: str = "real",
    reference: tuple[float, str] = (1.0, "real"),
    metric: str = "aji",
) -> dict:
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
            splits.append(
                _pearson(
                    [ref_mean[i] - base[i][k] for i in held],
                    [gain(cells, i, shared[i] - {k}) for i in held],
                )[0]
            )
        r_split = float(np.nanmean(splits)) if any(np.isfinite(splits)) else float("nan")
        arms[arm] = {"gains": gains, "r": r, "p": p, "r_split": r_split, "seeds": seeds}
    return {
        "fraction": fraction,
        "baseline": baseline,
        "reference": list(reference),
        "metric": metric,
        "label_gain": label_gain,
        "arms": arms,
    }
