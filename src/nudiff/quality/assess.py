"""All quality measures of a synthetic paired folder against a real one, with their floors.

The real data is split in two halves (seeded; by window or by image, see
:func:`load_windows`). Half A is the reference: every measure compares the synthetic windows
with A, and half B with A (the real-versus-real floor), with as many windows on each side as
there are synthetic pairs. Windows: the synthetic pairs' size (their central crop when larger
than the real images).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nudiff.layout import Cell, RunLayout, fraction_tag
from nudiff.quality import stats
from nudiff.utils import DataError, NudiffError, progress_bar, read_json


@dataclass
class Windows:
    """Equal-sized windows: images uint8 (N, S, S, 3), labels int32 (N, S, S), names (N,);
    unlabeled: per window, the nuclei a real-trained segmenter finds that the label lacks
    (int (N, S, S)), once label fidelity has been measured."""

    images: np.ndarray
    labels: np.ndarray
    names: list[str]
    unlabeled: np.ndarray | None = None


@dataclass
class Assessment:
    """metrics: the flat ``quality.json`` (one number per key); pairs: one dict of per-pair
    scores per synthetic pair; notes: what was skipped and why; sets: the windows compared."""

    metrics: dict[str, float] = field(default_factory=dict)
    pairs: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sets: dict[str, Windows] = field(default_factory=dict)
    distributions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)


def load_windows(
    syn_dir: str | os.PathLike,
    real_dir: str | os.PathLike,
    seed: int = 0,
    max_pairs: int | None = None,
    split: str = "windows",
    progress: bool = True,
) -> dict[str, Windows]:
    """{"synthetic", "real_a", "real_b"}: the synthetic pairs (central crops) and as many
    windows of each half of the real data, all at the smallest side found in either folder.

    split: ``"windows"`` deals non-overlapping windows of all real images into the two halves
    (the floor is sampling noise: two samples of one distribution); ``"images"`` gives each
    half its own images (random crops), so the floor includes the variation between images.
    ``max_pairs``: a seeded random choice of that many synthetic pairs.
    """
    from nudiff.data.dataset import find_pairs, load_folder, load_pair

    syn_pairs = find_pairs(syn_dir)
    if max_pairs is not None and max_pairs < len(syn_pairs):
        keep = np.random.default_rng(seed).choice(len(syn_pairs), max_pairs, replace=False)
        syn_pairs = [syn_pairs[i] for i in sorted(keep)]
    syn = [
        load_pair(p)
        for p in progress_bar(
            syn_pairs, desc="reading synthetic", unit="pair", disable=not progress
        )
    ]
    if len(syn_pairs) < 2:
        raise DataError(syn_dir, f"needs at least 2 synthetic pairs, found {len(syn_pairs)}")
    real = load_folder(real_dir, progress=progress)
    if len(real) < 2:
        raise DataError(real_dir, "needs at least 2 real images (two halves give the floor)")
    size = min(min(s.instance_map.shape) for s in syn + real)
    if size < 16:
        raise DataError(syn_dir, f"windows of {size} px are too small to compare (need >= 16)")
    crops = [stats.centre_crop(s.image, s.instance_map, size) for s in syn]
    n = len(syn)
    out = {
        "synthetic": Windows(
            np.stack([c[0] for c in crops]), np.stack([c[1] for c in crops]), [s.name for s in syn]
        )
    }
    if split == "images":  # each half from its own images: between-image variation counts
        order = np.random.default_rng(seed).permutation(len(real))
        halves = [
            [real[i] for i in order[: len(real) // 2]],
            [real[i] for i in order[len(real) // 2 :]],
        ]
        pairs = [stats.random_windows(h, size, n, seed=seed + k) for k, h in enumerate(halves)]
    else:  # non-overlapping windows of all images, dealt into two halves: sampling noise only
        images, labels = stats.tiled_windows(real, size, 2 * n, seed=seed)
        pairs = [(images[:n], labels[:n]), (images[n:], labels[n:])]
    for key, (images, labels) in zip(("real_a", "real_b"), pairs):
        out[key] = Windows(images, labels, [f"{key}_{i:05d}" for i in range(n)])
    return out


def _with_floor(metrics: dict, prefix: str, value: dict, floor: dict) -> None:
    for k in value:
        metrics[f"{prefix}_{k}"] = value[k]
        metrics[f"{prefix}_{k}_floor"] = floor[k]
    metrics[f"{prefix}_mean"] = float(np.nanmean(list(value.values())))
    metrics[f"{prefix}_mean_floor"] = float(np.nanmean(list(floor.values())))


def structure_and_colour(
    w: dict[str, Windows], metrics: dict, pairs: list[dict]
) -> dict[str, dict]:
    """Nucleus statistics, colour, texture and H-visibility (no network needed); returns the
    distributions per set."""
    a, b, s = w["real_a"], w["real_b"], w["synthetic"]
    st = {k: stats.statistics(v.labels) for k, v in w.items()}
    _with_floor(
        metrics,
        "structure_w1",
        stats.distances(st["real_a"], st["synthetic"], normalise=True),
        stats.distances(st["real_a"], st["real_b"], normalise=True),
    )
    for k in stats.STRUCTURE_STATS:
        metrics[f"mean_{k}"] = (
            float(np.mean(st["synthetic"][k])) if len(st["synthetic"][k]) else float("nan")
        )
        metrics[f"mean_{k}_real"] = (
            float(np.mean(st["real_a"][k])) if len(st["real_a"][k]) else float("nan")
        )
    col = {k: stats.colour_statistics(v.images) for k, v in w.items()}
    _with_floor(
        metrics,
        "colour_w1",
        stats.distances(col["real_a"], col["synthetic"], stats.COLOUR_STATS, normalise=True),
        stats.distances(col["real_a"], col["real_b"], stats.COLOUR_STATS, normalise=True),
    )
    lap = {
        k: np.array([stats.laplacian_variance(stats.grey(i)) for i in v.images])
        for k, v in w.items()
    }
    ref = max(float(lap["real_a"].mean()), 1e-12)
    metrics["laplacian_variance_ratio"] = float(lap["synthetic"].mean()) / ref
    metrics["laplacian_variance_ratio_floor"] = float(lap["real_b"].mean()) / ref
    metrics["laplacian_variance"] = float(lap["synthetic"].mean())
    metrics["laplacian_variance_real"] = ref
    thr = stats.h_threshold(a.images, a.labels)
    # the synthetic windows' own threshold: the same share of their pixels above it (their
    # stain is not the real one's; the real threshold would hide their nuclei)
    share = stats.share_below(a.images, thr)
    thr_s = stats.matched_threshold(s.images, share)
    metrics["h_threshold"], metrics["h_threshold_synthetic"] = thr, thr_s
    visible = [stats.visible_nuclei(i, m, thr_s) for i, m in zip(s.images, s.labels)]
    metrics["visible_fraction"] = stats.agreement(s.images, s.labels, thr_s)["visible_fraction"]
    thr_b = stats.matched_threshold(b.images, share)  # the same rule for the floor
    metrics["visible_fraction_floor"] = stats.agreement(b.images, b.labels, thr_b)[
        "visible_fraction"
    ]
    h_blobs = [stats.h_unlabeled(i, m, thr_s) for i, m in zip(s.images, s.labels)]
    floor_blobs = [stats.h_unlabeled(i, m, thr_b) for i, m in zip(b.images, b.labels)]
    metrics["h_unlabeled_rate"] = _pooled_rate(h_blobs)
    metrics["h_unlabeled_rate_floor"] = _pooled_rate(floor_blobs)
    sd = {k: max(float(np.std(col["real_a"][k])), 1e-12) for k in stats.COLOUR_STATS}
    med = {k: float(np.median(col["real_a"][k])) for k in stats.COLOUR_STATS}
    for i, p in enumerate(pairs):
        p["count"] = float(st["synthetic"]["count"][i])
        p["colour_z"] = float(
            np.mean([abs(col["synthetic"][k][i] - med[k]) / sd[k] for k in stats.COLOUR_STATS])
        )
        p["visible_fraction"] = visible[i][0] / visible[i][1] if visible[i][1] else float("nan")
        p["h_unlabeled_rate"] = h_blobs[i][0] / h_blobs[i][1] if h_blobs[i][1] else 0.0
        p["laplacian_variance_ratio"] = float(lap["synthetic"][i]) / ref
    return {k: st[k] | col[k] | {"laplacian_variance": lap[k]} for k in w}


def _pooled_rate(counts: list[tuple[int, int]]) -> float:
    """sum of the first counts / sum of the second (0 when there is nothing to count)."""
    total = sum(c[1] for c in counts)
    return sum(c[0] for c in counts) / total if total else 0.0


def distinguishability(
    w: dict[str, Windows], metrics: dict, pairs: list[dict], seed: int, epochs: int
) -> None:
    """C2ST: real A vs synthetic, real A vs real B (floor)."""
    from nudiff.quality.c2st import c2st

    r = c2st(w["real_a"].images, w["synthetic"].images, seed=seed, epochs=epochs)
    floor = c2st(w["real_a"].images, w["real_b"].images, seed=seed, epochs=epochs)
    metrics |= {
        "c2st_accuracy": r.accuracy,
        "c2st_accuracy_floor": floor.accuracy,
        "c2st_n_per_class": r.n_per_class,
        "c2st_epochs": epochs,
        "c2st_seed": seed,
    }
    for p, v in zip(pairs, r.p_a):
        p["c2st_p_real"] = float(v)


def segmenter_measures(
    w: dict[str, Windows], metrics: dict, pairs: list[dict], segmenter, seed: int, progress: bool
) -> None:
    """KID on the segmenter's encoder features and label fidelity (real B is the reference)."""
    from nudiff.quality.fidelity import FIDELITY_METRICS, FIDELITY_RATES, load, pair_fidelity
    from nudiff.quality.kid import encoder_features, kid

    model, cfg = load(segmenter)
    feats = {k: encoder_features(model, v.images) for k, v in w.items()}
    metrics["kid"], metrics["kid_sd"] = kid(feats["real_a"], feats["synthetic"], seed=seed)
    metrics["kid_floor"], metrics["kid_floor_sd"] = kid(
        feats["real_a"], feats["real_b"], seed=seed
    )
    unlabeled: list[np.ndarray] = []
    syn = pair_fidelity(
        model, cfg, w["synthetic"].images, w["synthetic"].labels, progress, unlabeled
    )
    w["synthetic"].unlabeled = np.stack(unlabeled) if unlabeled else None
    real = pair_fidelity(model, cfg, w["real_b"].images, w["real_b"].labels, progress)
    for k in (*FIDELITY_METRICS, *FIDELITY_RATES):
        metrics[f"fidelity_{k}"] = float(np.mean([r[k] for r in syn]))
        metrics[f"fidelity_{k}_floor"] = float(np.mean([r[k] for r in real]))
    for p, r in zip(pairs, syn):
        p |= {f"fidelity_{k}": r[k] for k in (*FIDELITY_METRICS, *FIDELITY_RATES)}


def tstr(experiment: str | os.PathLike) -> dict[str, float]:
    """Train-on-synthetic, test-on-real: AJI / PQ of each ``syn-only`` cell of a ``nudiff
    experiment`` run beside its ``real`` cell (same fraction and seed) and their ratio."""
    run = RunLayout(Path(experiment))
    if not run.cells.is_dir():
        raise DataError(run.cells, "folder not found: not a `nudiff experiment` run")
    out: dict[str, float] = {}
    for cell in run.finished_cells(arm="syn-only"):
        frac, seed = fraction_tag(cell.fraction), f"s{cell.seed}"
        real_path = run.metrics(Cell(cell.fraction, "real", cell.seed))
        syn_mean = read_json(run.metrics(cell))["mean"]
        real_mean = read_json(real_path)["mean"] if real_path.exists() else None
        for m in ("aji", "pq"):
            key = f"tstr_{frac}_{seed}_{m}"
            out[key] = float(syn_mean[m])
            if real_mean is not None:
                out[f"{key}_real"] = float(real_mean[m])
                out[f"{key}_ratio"] = float(syn_mean[m]) / max(float(real_mean[m]), 1e-12)
    return out


def synthesis_scale(syn_dir: str | os.PathLike) -> float:
    """The diffusion scale a synthetic folder was sampled at (its ``manifest.json``'s
    ``scale``, as ``nudiff synthesize`` writes it); 1.0 when the folder has no manifest."""
    path = Path(syn_dir) / "manifest.json"
    if not path.exists():
        return 1.0
    scale = read_json(path).get("scale", 1.0)
    if not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise DataError(path, f"'scale' must be a number in (0, 1], got {scale!r}")
    return float(scale)


def resolution_ceiling(
    w: dict[str, Windows], metrics: dict, scale: float, seed: int, epochs: int
) -> None:
    """For pairs sampled below full resolution and upsampled, the real windows taken to the same
    scale: the most texture such images can have (``laplacian_variance_ratio_at_scale``) and
    whether a classifier still tells synthetic from real once resolution is equal
    (``c2st_accuracy_at_scale``; ``c2st_accuracy_resampling``: real vs its own resampled
    windows, what resolution alone gives away). Runs after :func:`structure_and_colour`, whose
    ``laplacian_variance_real`` is the reference."""
    from nudiff.data.resize import at_scale
    from nudiff.quality.c2st import c2st

    metrics["synthesis_scale"] = scale
    if scale >= 1:
        return
    a, b = at_scale(w["real_a"].images, scale), at_scale(w["real_b"].images, scale)
    # the same reference as laplacian_variance_ratio (real A's mean, from structure_and_colour)
    metrics["laplacian_variance_ratio_at_scale"] = (
        float(np.mean([stats.laplacian_variance(stats.grey(i)) for i in b]))
        / metrics["laplacian_variance_real"]
    )
    metrics["c2st_accuracy_at_scale"] = c2st(
        a, w["synthetic"].images, seed=seed, epochs=epochs
    ).accuracy
    metrics["c2st_accuracy_resampling"] = c2st(
        w["real_a"].images, b, seed=seed, epochs=epochs
    ).accuracy


def assess(
    syn_dir: str | os.PathLike,
    real_dir: str | os.PathLike,
    segmenter: str | os.PathLike | None = None,
    experiment: str | os.PathLike | None = None,
    seed: int = 0,
    c2st_epochs: int = 15,
    max_pairs: int | None = None,
    split: str = "windows",
    progress: bool = True,
) -> Assessment:
    """Every measure of :mod:`nudiff.quality` on two paired folders (see the module doc)."""
    t0 = time.time()

    def stage(msg: str) -> None:
        if progress:
            print(f"[quality {time.time() - t0:5.0f} s] {msg}", file=sys.stderr, flush=True)

    out = Assessment(
        inputs={
            "synthetic": str(syn_dir),
            "real": str(real_dir),
            "segmenter": str(segmenter) if segmenter else "",
            "experiment": str(experiment or ""),
        }
    )
    w = out.sets = load_windows(syn_dir, real_dir, seed, max_pairs, split, progress)
    s = w["synthetic"]
    out.metrics |= {
        "n_synthetic": len(s.names),
        "window": int(s.images.shape[1]),
        "seed": seed,
        "split_by_image": int(split == "images"),
    }
    out.pairs = [{"name": n} for n in s.names]
    stage(
        f"{len(s.names)} synthetic pairs, {s.images.shape[1]}-px windows; nucleus, colour, "
        "texture statistics"
    )
    out.distributions = structure_and_colour(w, out.metrics, out.pairs)
    stage("distinguishability (C2ST)")
    t = time.time()
    distinguishability(w, out.metrics, out.pairs, seed, c2st_epochs)
    out.metrics["seconds_c2st"] = round(time.time() - t, 1)
    scale = synthesis_scale(syn_dir)
    if scale < 1:
        stage(f"the real windows at the synthesis scale {scale:g} (texture ceiling, C2ST)")
    resolution_ceiling(w, out.metrics, scale, seed, c2st_epochs)
    if segmenter is not None:
        stage("segmenter features (KID) and label fidelity")
        segmenter_measures(w, out.metrics, out.pairs, segmenter, seed, progress)
    else:
        out.notes.append("KID and label fidelity: absent (no --segmenter given)")
    if experiment is not None:
        scores = tstr(experiment)
        out.metrics |= scores
        if not scores:
            out.notes.append(f"TSTR: no syn-only cell in {experiment}/cells")
    else:
        out.notes.append("TSTR: absent (no --experiment given)")
    out.metrics["seconds"] = round(time.time() - t0, 1)
    return out


def check_dirs(*dirs: str | os.PathLike | None) -> None:
    """One-line error for a folder that does not exist (before minutes of work)."""
    for d in dirs:
        if d is not None and not Path(d).is_dir():
            raise NudiffError(f"{d}: folder not found")
