"""Keep the synthetic pairs that look real enough: a post-pass over a synthetic folder.

Two checks, each optional (:class:`FilterConfig`, the ``filter`` of ``nudiff.synthesis``):

- **nucleus statistics**: a pair whose nuclei count, mean area, ... (:data:`PAIR_STATS`) lies
  outside the ``real_percentiles`` (e.g. 5-95th) of the same statistic over real windows of
  the pair's size is rejected (``<stat>_outside_real``);
- **label fidelity**: a real-trained segmenter predicts each image; its ``fidelity_metric``
  (PQ, AJI or Dice) against the pair's label must reach ``min_fidelity`` (``low_fidelity``),
  the share of the nuclei it finds that the label lacks must not pass ``max_unlabeled_rate``
  (``unlabeled_nuclei``), and only the best ``keep_top`` fraction of the pairs is kept
  (``not_top_fidelity``).

The kept pairs are copied, byte for byte, into a new paired folder with a manifest that holds
every pair's scores, the reasons of every rejection and their counts.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nudiff.data.dataset import find_pairs, load_folder, load_pair
from nudiff.quality.fidelity import load, pair_fidelity
from nudiff.quality.stats import PAIR_STATS, pair_statistics, tiled_windows
from nudiff.utils import NudiffError, atomic_path, progress_bar, read_json, write_json


@dataclass
class FilterConfig:
    """Rejects degenerate sampled structures, then (optionally) weak pairs; counted in the
    manifest.

    Structures (before an image is sampled):
    min_nuclei: fewer decoded nuclei than this -> rejected (an empty structure teaches nothing).
    max_mean_area / min_mean_area: mean nucleus area (px at the model's scale) outside this
        range -> rejected (implausible blobs or dust); ``None`` disables a bound.
    max_foreground: foreground fraction above this -> rejected.

    Pairs (after; :mod:`nudiff.quality.filter`; all off by default):
    segmenter: run folder of a segmenter trained on real data: scores every pair's label
        fidelity (its prediction against the label, ``fidelity_metric``: pq, aji or dice).
    min_fidelity: pairs scoring below -> rejected.
    keep_top: keep only this best fraction by fidelity; ``ceil(n / keep_top)`` pairs are
        sampled so that ``n`` remain.
    real_percentiles: (lo, hi), e.g. (5, 95): a pair whose ``real_statistics`` (per-window
        count, mean area, mean solidity, ...) fall outside these percentiles of real windows
        of its size -> rejected (needs the real data: ``--real``).
    max_unlabeled_rate: pairs in which more than this share of the nuclei the segmenter finds
        lack a label -> rejected (``unlabeled_nuclei``;
        :func:`nudiff.quality.fidelity.label_agreement`).
    """

    min_nuclei: int = 1
    min_mean_area: float | None = 4.0
    max_mean_area: float | None = 2000.0
    max_foreground: float = 0.9
    segmenter: str | None = None
    fidelity_metric: str = "pq"
    min_fidelity: float | None = None
    keep_top: float | None = None
    real_percentiles: tuple[float, float] | None = None
    real_statistics: tuple[str, ...] = ("count", "mean_area", "mean_solidity")
    max_unlabeled_rate: float | None = None

    def __post_init__(self) -> None:
        if self.fidelity_metric not in ("pq", "aji", "dice"):
            raise NudiffError(
                "synthesis.filter.fidelity_metric must be pq, aji or dice, got "
                f"{self.fidelity_metric!r}"
            )

    @property
    def filters_pairs(self) -> bool:
        """Whether any pair-level check (or scoring) is on."""
        return bool(self.segmenter) or self.real_percentiles is not None

    @property
    def selects_by_segmenter(self) -> bool:
        """Whether the segmenter's scores drop pairs (else it only scores them, for the
        manifest and the mosaic's outlines of unlabeled nuclei)."""
        return any(
            v is not None for v in (self.keep_top, self.min_fidelity, self.max_unlabeled_rate)
        )


def real_bounds(
    real_samples,
    size: int,
    percentiles: tuple[float, float],
    keys,
    max_windows: int = 2000,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """{stat: (lo, hi)} percentiles of :func:`pair_statistics` over non-overlapping ``size``
    windows of the real samples (at most ``max_windows``, a seeded choice)."""
    n = sum(
        (s.instance_map.shape[0] // size) * (s.instance_map.shape[1] // size) for s in real_samples
    )
    _, labels = tiled_windows(real_samples, size, max(1, min(n, max_windows)), seed)
    values = [pair_statistics(m) for m in labels]
    out = {}
    for k in keys:
        v = np.array([x[k] for x in values])
        v = v[np.isfinite(v)]
        out[k] = (
            (float(np.percentile(v, percentiles[0])), float(np.percentile(v, percentiles[1])))
            if len(v)
            else (-math.inf, math.inf)
        )
    return out


def n_to_keep(keep_top: float | None, n_pairs: int) -> int:
    """How many pairs a ``keep_top`` fraction keeps of ``n_pairs`` (all when ``None``).
    Rounded down, so that sampling ``ceil(n / keep_top)`` pairs keeps exactly ``n``."""
    if keep_top is None:
        return n_pairs
    return max(1, int(keep_top * n_pairs + 1e-9)) if n_pairs else 0


def select_pairs(
    scores: dict[str, dict[str, float]],
    cfg,
    bounds: dict[str, tuple[float, float]] | None = None,
    n_keep: int | None = None,
) -> tuple[list[str], dict[str, str]]:
    """(kept keys, {rejected key: reason}) from per-pair ``scores`` (pure).

    ``cfg``: a ``FilterConfig``. Order of the checks: nucleus statistics within ``bounds``
    (NaN passes: a pair without nuclei has no mean area, its count decides), then
    ``min_fidelity``, then the best ``n_keep`` (default: ``cfg.keep_top`` of all pairs) by
    ``fidelity_<metric>``; ties keep the earlier key.
    """
    rejected: dict[str, str] = {}
    survivors = []
    metric = f"fidelity_{cfg.fidelity_metric}"
    for key, s in scores.items():
        outside = [
            k
            for k, (lo, hi) in (bounds or {}).items()
            if np.isfinite(s[k]) and not lo <= s[k] <= hi
        ]
        if outside:
            rejected[key] = f"{outside[0]}_outside_real"
        elif cfg.min_fidelity is not None and s[metric] < cfg.min_fidelity:
            rejected[key] = "low_fidelity"
        elif (
            cfg.max_unlabeled_rate is not None
            and s["fidelity_unlabeled_rate"] > cfg.max_unlabeled_rate
        ):
            rejected[key] = "unlabeled_nuclei"
        else:
            survivors.append(key)
    if n_keep is None:
        n_keep = n_to_keep(cfg.keep_top, len(scores))
    if metric in next(iter(scores.values()), {}):
        survivors.sort(key=lambda k: -scores[k][metric])  # stable: ties keep their order
    for key in survivors[n_keep:]:
        rejected[key] = "not_top_fidelity"
    kept = [k for k in scores if k in set(survivors[:n_keep])]
    return kept, rejected


def check_filter(cfg, real_dir) -> None:
    """One-line errors for a filter that cannot run."""
    if (
        cfg.min_fidelity is not None
        or cfg.keep_top is not None
        or cfg.max_unlabeled_rate is not None
    ) and not cfg.segmenter:
        raise NudiffError(
            "filter: min_fidelity / keep_top / max_unlabeled_rate need a segmenter (--segmenter "
            "SEG_RUN)"
        )
    if cfg.real_percentiles is not None and real_dir is None:
        raise NudiffError("filter: real_percentiles needs the real data (--real REAL_DIR)")
    unknown = sorted(set(cfg.real_statistics) - set(PAIR_STATS))
    if unknown:
        raise NudiffError(f"filter: real_statistics {unknown} unknown; choose from {PAIR_STATS}")
    if cfg.keep_top is not None and not 0 < cfg.keep_top <= 1:
        raise NudiffError(f"filter: keep_top must be in (0, 1], got {cfg.keep_top}")


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _remove_stale(out_dir: Path, previous: dict, kept_names: set[str]) -> None:
    """Delete the files of pairs an earlier filter run kept into ``out_dir`` and this one does
    not."""
    for entry in previous.get("samples", {}).values():
        if entry["name"] not in kept_names:
            for sub in ("images", "labels", "structures"):
                for f in (out_dir / sub).glob(f"{entry['name']}.*"):
                    f.unlink()


def filter_pairs(
    syn_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg,
    real_dir=None,
    n_keep: int | None = None,
    header: dict | None = None,
    progress: bool = True,
) -> dict:
    """Score every pair of ``syn_dir``, copy the kept ones to ``out_dir``; returns the manifest.

    ``cfg``: a :class:`FilterConfig`; ``n_keep`` overrides ``cfg.keep_top``'s
    count; ``header`` replaces the source manifest's header (``nudiff synthesize`` passes its
    own). Pairs are keyed as in the source manifest (sample index), else by name.
    """
    syn_dir, out_dir = Path(syn_dir), Path(out_dir)
    check_filter(cfg, real_dir)
    if out_dir.resolve() == syn_dir.resolve():
        raise NudiffError(f"{out_dir}: the filtered set needs its own folder (not the source's)")
    previous = read_json(out_dir / "manifest.json") if (out_dir / "manifest.json").exists() else {}
    if (out_dir / "images").is_dir() and "filter" not in previous:
        raise NudiffError(f"{out_dir}: holds images but no filter manifest; use a new --out")
    source = read_json(syn_dir / "manifest.json") if (syn_dir / "manifest.json").exists() else {}
    key_of = {v["name"]: k for k, v in source.get("samples", {}).items()}
    pairs = find_pairs(syn_dir)
    samples = [
        load_pair(p)
        for p in progress_bar(pairs, desc="reading", unit="pair", disable=not progress)
    ]
    keys = [key_of.get(s.name, s.name) for s in samples]
    scores = _score_pairs(samples, keys, cfg, progress)
    bounds = None
    if cfg.real_percentiles is not None:
        size = min(min(s.instance_map.shape) for s in samples)
        bounds = real_bounds(
            load_folder(real_dir, progress=progress),
            size,
            cfg.real_percentiles,
            cfg.real_statistics,
        )
    kept, rejected = select_pairs(scores, cfg, bounds, n_keep)
    by_key = dict(zip(keys, pairs))
    _remove_stale(out_dir, previous, {by_key[k].name for k in kept})
    _copy_kept([by_key[k] for k in kept], syn_dir, out_dir)
    all_rejected = dict(source.get("rejected", {})) | rejected
    counts: dict[str, int] = {}
    for reason in all_rejected.values():
        counts[reason] = counts.get(reason, 0) + 1
    base = (
        header
        if header is not None
        else {
            k: v
            for k, v in source.items()
            if k in ("structure_model", "image_model", "config", "scale")
        }
    )
    manifest = base | {
        "source": str(syn_dir),
        "real_dir": str(real_dir) if real_dir else None,
        "filter": asdict(cfg),
        "real_bounds": bounds,
        "n_scored": len(scores),
        "n_accepted": len(kept),
        "n_rejected": len(all_rejected),
        "rejected_by_reason": counts,
        "samples": {
            k: source.get("samples", {}).get(k, {"name": by_key[k].name}) | scores[k] for k in kept
        },
        "rejected": all_rejected,
        "rejected_scores": {k: {"name": by_key[k].name} | scores[k] for k in rejected},
    }
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def _score_pairs(samples, keys: list, cfg, progress: bool) -> dict:
    """{key: the pair's structure statistics (+ its fidelity with a segmenter)}."""
    scores = {k: pair_statistics(s.instance_map) for k, s in zip(keys, samples)}
    if cfg.segmenter:
        model, seg_cfg = load(cfg.segmenter)
        fid = pair_fidelity(
            model, seg_cfg, [s.image for s in samples], [s.instance_map for s in samples], progress
        )
        for k, f in zip(keys, fid):
            scores[k] |= {f"fidelity_{m}": v for m, v in f.items()}
    return scores


def _copy_kept(pairs, syn_dir: Path, out_dir: Path) -> None:
    """Copy each kept pair's image, label and (when there is one) structure to ``out_dir``."""
    for p in pairs:
        _copy(p.image_path, out_dir / "images" / p.image_path.name)
        _copy(p.label_path, out_dir / "labels" / p.label_path.name)
        structure = syn_dir / "structures" / f"{p.name}.npy"
        if structure.exists():
            _copy(structure, out_dir / "structures" / structure.name)
