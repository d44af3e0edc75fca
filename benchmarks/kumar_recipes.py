"""Kumar 10 %: every synthesis recipe tried, its set's quality beside its segmenter gain.

Reads only committed results: for each recipe's ``benchmarks/results/<folder>/``, the
``quality/quality.json`` of its 256 kept pairs (``nudiff quality`` against the 784 Kumar training
patches, the 10 % real s0 segmenter) and its experiment cells, from which the gain of the extra
patches over 10 % real is computed, paired by seed and test image, with its 95 % interval. The
copy-paste arm (the bar) is a row too. Writes ``kumar_recipes.{json,md}`` under --results.

    .venv/bin/python benchmarks/kumar_recipes.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pair_ablation import contrast_columns, segmenter_columns  # sibling scripts

from nudiff.experiment import ResultsLayout, committed_rows, paired_gains
from nudiff.utils import read_json, write_json, write_text

RESULTS = Path(__file__).parent / "results"

# recipe -> (results folder, the arm whose gain over real is read, what it costs beyond the real
# cells at 1 thread beside another job). Measured wall time: structure model 4,000 steps ~70 min,
# image model 1,200 steps 33.5 min, 512 pairs sampled and filtered 13-23 min, 1,024 ~26 min; full
# resolution and 3,000 steps cost more.
RECIPES: dict[str, tuple[str, str, str]] = {
    "copy-paste (no diffusion; the bar)": ("kumar-grid", "real+copypaste", "~1 min (patches)"),
    "grid recipe: epsilon image model, 1,200 steps": (
        "kumar-grid",
        "real+syn",
        "structure + image models ~105 min, pairs ~15 min",
    ),
    "grid recipe + copy-paste (512 extra patches: 256 of each)": (
        "kumar-grid",
        "real+copypaste+syn",
        "as the grid recipe",
    ),
    "grid recipe + reinhard-each stain": ("kumar-grid-each", "real+syn", "as the grid recipe"),
    "real labels (subset structures), grid image model": (
        "kumar-grid-subset",
        "real+syn",
        "image model ~35 min, pairs ~23 min",
    ),
    "real labels + copy-paste (512 extra patches: 256 of each)": (
        "kumar-grid-subset",
        "real+copypaste+syn",
        "as real labels",
    ),
    "real labels, synthetic crops' loss weighted 0.5": (
        "kumar-grid-subset-w05",
        "real+syn",
        "as real labels",
    ),
    "real labels with real nuclei pasted in (copypaste structures), grid image model": (
        "kumar-grid-paste",
        "real+syn",
        "image model ~35 min, pairs ~20 min",
    ),
    "the same, 512 kept pairs (1,024 sampled)": (
        "kumar-grid-paste512",
        "real+syn",
        "image model ~35 min, pairs ~33 min",
    ),
    "image model 3,000 steps": (
        "kumar-grid-img3k",
        "real+syn",
        "structure + image models ~155 min, pairs ~15 min",
    ),
    "zero-terminal-SNR + v image model": ("kumar-grid-zsnr", "real+syn", "as the grid recipe"),
    "zero-terminal-SNR + v, image model at full resolution": (
        "kumar-grid-native",
        "real+syn",
        "structure model ~70 min + image model at full resolution",
    ),
}
# head to head, a − b: (name, results folder, arm, fraction) each
ARMS = {
    "real labels + 3 pasted nuclei": ("kumar-grid-paste", "real+syn", 0.1),
    "real labels": ("kumar-grid-subset", "real+syn", 0.1),
    "sampled pairs": ("kumar-grid", "real+syn", 0.1),
    "sampled pairs + copy-paste": ("kumar-grid", "real+copypaste+syn", 0.1),
    "copy-paste": ("kumar-grid", "real+copypaste", 0.1),
    "100 % real": ("kumar-grid", "real", 1.0),
    "real labels + 3 pasted nuclei, 512 pairs": ("kumar-grid-paste512", "real+syn", 0.1),
}
CONTRASTS = (
    ("real labels", "sampled pairs"),
    ("real labels", "copy-paste"),
    ("real labels", "sampled pairs + copy-paste"),
    ("real labels", "100 % real"),
    ("real labels + 3 pasted nuclei", "real labels"),
    ("real labels + 3 pasted nuclei", "copy-paste"),
    ("real labels + 3 pasted nuclei", "sampled pairs + copy-paste"),
    ("real labels + 3 pasted nuclei", "100 % real"),
    ("real labels + 3 pasted nuclei, 512 pairs", "real labels + 3 pasted nuclei"),
)
# (quality.json key, column header, format)
COLUMNS = (
    ("structure_w1_mean", "structure W1", ".3f"),
    ("colour_w1_mean", "colour W1", ".2f"),
    ("laplacian_variance_ratio", "Laplacian ratio", ".2f"),
    ("c2st_accuracy", "C2ST", ".3f"),
    ("c2st_accuracy_at_scale", "C2ST at its scale", ".3f"),
    ("kid", "KID", ".3f"),
    ("fidelity_aji", "fidelity AJI", ".3f"),
)


def gain(folder: Path, arm: str, fraction: float = 0.1) -> dict:
    """``arm`` − real at ``fraction`` from a results folder's cells (paired by seed and image).
    The real cells are the grid's (``kumar-grid/``): a recipe's folder holds only the seed-0 real
    cell its pair filter used, the same cell (same fingerprint)."""
    real = [
        r for r in committed_rows(folder.parent / "kumar-grid", fraction) if r["arm"] == "real"
    ]
    rows = [r for r in committed_rows(folder, fraction) if r["arm"] != "real"]
    for g in paired_gains(real + rows, arms=(arm,)):
        return {
            "aji": g["aji"],
            "pq": g["pq"],
            "seeds": g["seeds"],
            "aji_ci": [g["ci"]["aji"]["lo"], g["ci"]["aji"]["hi"]],
            "pq_ci": [g["ci"]["pq"]["lo"], g["ci"]["pq"]["hi"]],
        }
    return {}


def arm_rows(results: Path, name: str) -> list[dict]:
    folder, arm, fraction = ARMS[name]
    return [r for r in committed_rows(results / folder, fraction) if r["arm"] == arm]


def contrasts(results: Path) -> list[dict]:
    """Each ``CONTRASTS`` pair over the (test image, seed) pairs both have: AJI and PQ of a − b,
    mean and 95 % interval, and the per-seed AJI differences (``contrast_columns``)."""
    found = (
        contrast_columns(a, b, arm_rows(results, a), arm_rows(results, b), per_seed=True)
        for a, b in CONTRASTS
    )
    return [c for c in found if c is not None]


def collect(results: Path) -> dict[str, dict]:
    out = {}
    for name, (folder, arm, _) in RECIPES.items():
        quality = results / folder / "quality" / "quality.json"
        has_cells = ResultsLayout(results / folder).cells.is_dir()
        row = {
            "folder": folder,
            "arm": arm,
            "quality": read_json(quality) if quality.exists() and arm == "real+syn" else {},
            "gain": gain(results / folder, arm) if has_cells else {},
        }
        if arm == "real+syn" and has_cells:
            row["tstr_aji_ratio"] = segmenter_columns(results / folder).get("tstr_aji_ratio")
        if row["quality"] or row["gain"]:
            out[name] = row
    return out


def _gain_text(g: dict, key: str, prefix: str = "") -> str:
    if not g:
        return "not run"
    lo, hi = g[f"{prefix}{key}_ci"]
    n = len(g["seeds"])
    return f"{g[prefix + key]:+.3f} [{lo:+.3f}, {hi:+.3f}]" + (f" ({n} seeds)" if n > 1 else "")


def markdown(rows: dict[str, dict], heads: list[dict] | None = None) -> str:
    floors = next((r["quality"] for r in rows.values() if r["quality"]), {})
    lines = [
        "# Kumar 10 %: synthesis recipes, their pairs' quality and what they gave the segmenter",
        "",
        "Quality: `nudiff quality` of each recipe's 256 kept pairs against the 784 Kumar training "
        "patches (floor: two halves of those). Gain: 10 % + 256 extra patches (a quarter of each "
        "batch) − 10 % real, 3,000-step segmenters, paired by seed and test image (14 Kumar test "
        "images), 95 % interval; seed 0 unless said. TSTR: AJI of a segmenter trained on the "
        "pairs "
        "alone (`syn-only`) / AJI of 10 % real, same seeds. Cost: wall minutes at 1 thread beside "
        "another "
        "job (the segmenter cells, ~35-60 min each, come on top). (`benchmarks/kumar_recipes.py`)",
        "",
        "| recipe | cost beyond the real cells | "
        + " | ".join(h for _, h, _ in COLUMNS)
        + " | Δ AJI | Δ PQ | TSTR |",
        "|---|---|" + "---|" * (len(COLUMNS) + 3),
        "| real vs real (floor) | – | "
        + " | ".join(
            format(floors[k + "_floor"], f) if k + "_floor" in floors else "–"
            for k, _, f in COLUMNS
        )
        + " | – | – | 1 |",
    ]
    for name, r in rows.items():
        q = r["quality"]
        lines.append(
            f"| {name} | {RECIPES[name][2]} | "
            + " | ".join(format(q[k], f) if k in q else "–" for k, _, f in COLUMNS)
            + f" | {_gain_text(r['gain'], 'aji')} | {_gain_text(r['gain'], 'pq')} | "
            + (format(r["tstr_aji_ratio"], ".2f") if r.get("tstr_aji_ratio") else "–")
            + " |"
        )
    ceiling = next(
        (
            r["quality"]["laplacian_variance_ratio_at_scale"]
            for r in rows.values()
            if "laplacian_variance_ratio_at_scale" in r["quality"]
        ),
        None,
    )
    if ceiling is not None:
        lines += [
            "",
            f"Half-resolution sets: real windows taken to scale 0.5 and back have Laplacian "
            f'ratio {ceiling:.2f} (the most such images can have); "C2ST at its scale" '
            "compares the synthetic images with those resampled real windows.",
        ]
    if heads:
        lines += [
            "",
            "Head to head, a − b, paired by seed and test image (the seeds both have), 95 % "
            "interval:",
            "",
            "| a | b | seeds | Δ AJI | Δ PQ | Δ AJI per seed |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {h['a']} | {h['b']} | {', '.join(map(str, h['seeds']))} | "
            f"{_gain_text(h, 'aji', 'gain_').split(' (')[0]} | "
            f"{_gain_text(h, 'pq', 'gain_').split(' (')[0]} | "
            f"{', '.join(f'{d:+.3f}' for d in h['per_seed_aji'])} |"
            for h in heads
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    rows, heads = collect(args.results), contrasts(args.results)
    write_json(args.results / "kumar_recipes.json", {"recipes": rows, "head_to_head": heads})
    write_text(args.results / "kumar_recipes.md", markdown(rows, heads))
    print(markdown(rows, heads))


if __name__ == "__main__":
    main()
