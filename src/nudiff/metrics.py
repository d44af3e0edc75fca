"""Instance segmentation metrics with HoVer-Net's definitions (vqdang/hover_net stats_utils).

All functions take two instance maps of the same shape (H, W) of non-negative integers,
0 = background; ids need not be contiguous (they are relabelled first, as ``remap_label``).

- ``dice``: binary foreground Dice (``get_dice_1``).
- ``aji``: Aggregated Jaccard Index (Kumar et al. 2017, ``get_fast_aji``): each GT nucleus is
  matched to the prediction of highest IoU (a prediction may serve several GT nuclei);
  intersections and unions of the matches are summed; every GT nucleus with no overlapping
  prediction and every prediction matched to no GT nucleus adds its area to the union.
- ``aji_plus``: AJI with a one-to-one (Hungarian, max IoU) matching (``get_fast_aji_plus``).
- ``dq``, ``sq``, ``pq``: panoptic quality with matches at IoU > 0.5 (``get_fast_pq``):
  DQ = TP / (TP + FP/2 + FN/2), SQ = mean IoU of the matches, PQ = DQ * SQ.

Conventions where HoVer-Net divides by zero: when both maps are empty every metric is 1.0
(nothing to find, nothing found); when exactly one is empty every metric is 0.0.
A dataset score is the **mean over images** of the per-image metrics (HoVer-Net's
``compute_stats``), not a metric of the pooled pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

METRICS = ("dice", "aji", "aji_plus", "dq", "sq", "pq")


def _relabel(x: np.ndarray) -> tuple[np.ndarray, int]:
    ids, inv = np.unique(x, return_inverse=True)
    inv = inv.reshape(x.shape)
    if ids[0] != 0:  # no background present
        return inv + 1, ids.size
    return inv, ids.size - 1


def _pairwise(true: np.ndarray, pred: np.ndarray):
    """Areas and the dense (n_true, n_pred) intersection / union matrices (ids 1..n)."""
    t, nt = _relabel(np.asarray(true))
    p, np_ = _relabel(np.asarray(pred))
    t = t.ravel().astype(np.int64)
    p = p.ravel().astype(np.int64)
    area_t = np.bincount(t, minlength=nt + 1)[1:]
    area_p = np.bincount(p, minlength=np_ + 1)[1:]
    both = (t > 0) & (p > 0)
    inter = (
        np.bincount((t[both] - 1) * max(np_, 1) + (p[both] - 1), minlength=nt * np_)
        .reshape(nt, np_)
        .astype(np.float64)
    )
    union = area_t[:, None] + area_p[None, :] - inter
    return area_t, area_p, inter, union


def _iou(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    return inter / (union + 1.0e-6)


def dice(true: np.ndarray, pred: np.ndarray) -> float:
    t = np.asarray(true) > 0
    p = np.asarray(pred) > 0
    denom = t.sum() + p.sum()
    if denom == 0:
        return 1.0
    return float(2.0 * (t & p).sum() / denom)


def _aji_from(area_t, area_p, inter, union, one_to_one: bool) -> float:
    nt, np_ = inter.shape
    if nt == 0 and np_ == 0:
        return 1.0
    if nt == 0 or np_ == 0:
        return 0.0
    iou = _iou(inter, union)
    if one_to_one:
        rows, cols = linear_sum_assignment(-iou)
        keep = iou[rows, cols] > 0.0
        rows, cols = rows[keep], cols[keep]
    else:
        cols = iou.argmax(axis=1)
        rows = np.nonzero(iou[np.arange(nt), cols] > 0.0)[0]
        cols = cols[rows]
    total_inter = inter[rows, cols].sum()
    total_union = union[rows, cols].sum()
    unpaired_t = np.ones(nt, bool)
    unpaired_t[rows] = False
    unpaired_p = np.ones(np_, bool)
    unpaired_p[cols] = False
    total_union += area_t[unpaired_t].sum() + area_p[unpaired_p].sum()
    return float(total_inter / total_union)


def _pq_from(inter, union, match_iou: float = 0.5) -> tuple[float, float, float]:
    nt, np_ = inter.shape
    if nt == 0 and np_ == 0:
        return 1.0, 1.0, 1.0
    iou = _iou(inter, union)
    # IoU > 0.5 makes the matching unique, so no assignment is needed
    rows, cols = np.nonzero(iou > match_iou)
    tp = rows.size
    fp = np_ - tp
    fn = nt - tp
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = float(iou[rows, cols].sum() / (tp + 1.0e-6)) if tp else 0.0
    return float(dq), sq, float(dq * sq)


def aji(true: np.ndarray, pred: np.ndarray) -> float:
    return _aji_from(*_pairwise(true, pred), one_to_one=False)


def aji_plus(true: np.ndarray, pred: np.ndarray) -> float:
    return _aji_from(*_pairwise(true, pred), one_to_one=True)


def panoptic_quality(true: np.ndarray, pred: np.ndarray, match_iou: float = 0.5):
    """(DQ, SQ, PQ) with matches at IoU > ``match_iou`` (>= 0.5 keeps matches unique)."""
    if match_iou < 0.5:
        raise ValueError("match_iou must be >= 0.5 for a unique matching")
    _, _, inter, union = _pairwise(true, pred)
    return _pq_from(inter, union, match_iou)


def instance_metrics(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """All six metrics of one image, computing the pairwise overlaps once."""
    true = np.asarray(true)
    pred = np.asarray(pred)
    if true.shape != pred.shape:
        raise ValueError(f"shape mismatch: ground truth {true.shape} vs prediction {pred.shape}")
    area_t, area_p, inter, union = _pairwise(true, pred)
    dq, sq, pq = _pq_from(inter, union)
    return {
        "dice": dice(true, pred),
        "aji": _aji_from(area_t, area_p, inter, union, one_to_one=False),
        "aji_plus": _aji_from(area_t, area_p, inter, union, one_to_one=True),
        "dq": dq,
        "sq": sq,
        "pq": pq,
    }


def mean_metrics(per_image: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean over images of each metric (HoVer-Net's image-wise average)."""
    if not per_image:
        return {m: float("nan") for m in METRICS}
    return {m: float(np.mean([r[m] for r in per_image.values()])) for m in METRICS}


def evaluate_maps(pairs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """{name: (gt, pred)} -> {"per_image": {name: metrics}, "mean": metrics, "n_images": N}."""
    per_image = {name: instance_metrics(gt, pred) for name, (gt, pred) in sorted(pairs.items())}
    return {"per_image": per_image, "mean": mean_metrics(per_image), "n_images": len(per_image)}


def evaluate_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
) -> dict:
    """Evaluate every prediction in ``pred_dir`` against the same-named map in ``gt_dir``.

    Files pair by stem (``a.png`` with ``a.tif``); ``gt_dir`` may be a test folder holding
    ``labels/``. Every GT image needs a prediction: a missing one is an error naming it.
    Writes ``metrics.csv`` and ``metrics.json`` to ``out_dir`` when given.
    """
    from nudiff.data.io import read_instance_map
    from nudiff.utils import DataError, write_json, write_text

    gt_dir = Path(gt_dir)
    if (gt_dir / "labels").is_dir():
        gt_dir = gt_dir / "labels"
    gt_files = _label_files(gt_dir)
    pred_files = _label_files(Path(pred_dir))
    if not gt_files:
        raise DataError(gt_dir, "no instance maps found")
    missing = sorted(set(gt_files) - set(pred_files))
    if missing:
        raise DataError(
            pred_dir, f"no prediction for {len(missing)} ground-truth image(s): {missing[:5]}"
        )
    results = {}
    for name, gt_path in sorted(gt_files.items()):
        gt = read_instance_map(gt_path)
        pred = read_instance_map(pred_files[name])
        if gt.shape != pred.shape:
            raise DataError(
                pred_files[name], f"shape {pred.shape} differs from ground truth {gt.shape}"
            )
        results[name] = instance_metrics(gt, pred)
    report = {"per_image": results, "mean": mean_metrics(results), "n_images": len(results)}
    if out_dir is not None:
        out = Path(out_dir)
        write_json(out / "metrics.json", report)
        write_text(out / "metrics.csv", metrics_csv(results))
    return report


LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".mat")


def _label_files(folder: Path) -> dict[str, Path]:
    from nudiff.utils import DataError

    if not folder.is_dir():
        raise DataError(folder, "folder not found")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in LABEL_SUFFIXES}


def metrics_csv(per_image: dict[str, dict[str, float]]) -> str:
    lines = ["image," + ",".join(METRICS)]
    for name, r in per_image.items():
        lines.append(name + "," + ",".join(f"{r[m]:.6f}" for m in METRICS))
    mean = mean_metrics(per_image)
    lines.append("mean," + ",".join(f"{mean[m]:.6f}" for m in METRICS))
    return "\n".join(lines) + "\n"


def format_table(report: dict) -> str:
    """A fixed-width text table of per-image metrics and their mean."""
    header = f"{'image':<32}" + "".join(f"{m:>9}" for m in METRICS)
    rows = [header, "-" * len(header)]
    for name, r in report["per_image"].items():
        rows.append(f"{name[:32]:<32}" + "".join(f"{r[m]:>9.4f}" for m in METRICS))
    rows.append("-" * len(header))
    rows.append(f"{'mean':<32}" + "".join(f"{report['mean'][m]:>9.4f}" for m in METRICS))
    return "\n".join(rows)
