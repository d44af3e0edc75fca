"""Kumar 10 %: which synthetic pairs teach the segmenter (the verdict of issue 38).

Every recipe adds 128 extra patches to the 10 % labeled subset, a quarter of each batch, at the
cheap protocol of ``configs/demo.yaml`` (128-px crops, 3,000 steps; the segmenter-budget study's
chosen setting). All recipes are paired by seed and test image with the same ``real`` cells (the
demo's, committed in ``benchmarks/results/demo-kumar/``; the verdict folders hold copies, same
fingerprint):

- ``method``: NuDiff's own pairs: structures sampled by the shipped v-prediction structure model,
  painted by the shipped image model (scale 0.5); ``configs/verdict-kumar.yaml``;
- ``method-decode``: the same sampled structures decoded as the grids decode them
  (``min_marker 2``, ``semantic_sigma 1``, smooth label upsampling: rounder outlines);
  ``configs/verdict-kumar.yaml`` with those three ``--set`` overrides
  (``benchmarks/results/verdict-kumar-decode/config.yaml``);
- ``method-random``: NuDiff's pairs without the fidelity ranking: 128 sampled, all that pass
  the hard filters kept (``--set synthesis.filter.keep_top=null``,
  ``benchmarks/results/verdict-kumar-random/``). The ranking keeps the half the real segmenter
  reproduces best, which are easier than real patches (fidelity AJI 0.68 against real's 0.53):
  does choosing the easy half cost the segmenter what the pairs could teach?
- ``method-random+copypaste``: the unranked pairs and copy-paste patches together, a quarter
  of each batch from the 256 (``verdict-kumar-random``'s ``real+copypaste+syn`` arm);
- ``method-random-decode``: both levers at once, no ranking and the grids' decode
  (``benchmarks/results/verdict-kumar-random-decode/``);
- ``real-label``: the subset's own labels with up to 3 of its nuclei pasted in, painted by the
  same image model (the demo's ``real+syn``); ``configs/demo.yaml``;
- ``real-label-random``: the real-label recipe without the ranking (128 painted, all kept;
  ``benchmarks/results/verdict-kumar-real-label-random/``);
- ``real-label-full``: the same labels painted by an image model at scale 1 (128-px windows);
  ``configs/verdict-kumar-s1.yaml``;
- ``copypaste``: real nuclei pasted into real subset patches, exact labels, nothing painted
  (the bar diffusion pairs must clear); ``configs/verdict-kumar.yaml``'s ``real+copypaste``;
- ``method-random-stain``: the unranked pairs, each image Reinhard-normalised to one subset
  patch's Lab mean and sd (``--set synthesis.stain=reinhard-each``,
  ``benchmarks/results/verdict-kumar-random-stain/``): is the painting's colour what is left?
- ``copypaste-half``: the same copy-paste patches taken to scale 0.5 and back
  (``--set experiment.copypaste.resample=0.5``,
  ``benchmarks/results/verdict-kumar-copypaste-half/``): real pixels with only a
  half-resolution painter's detail. Is resolution what painted pairs lack?

Each grid runs with ``nudiff experiment --config CONFIG --out runs/... --results FOLDER`` (the
configs' headers); this script only reads the committed cells:

    python benchmarks/verdict.py

Writes ``benchmarks/results/verdict-kumar/verdict.{json,md}``: per recipe the gain over 10 % real
and the share of the 10 % → 100 % gap it closes; then the recipes head to head.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NamedTuple

from pair_ablation import contrast_columns  # sibling script

from nudiff.experiment import committed_rows, paired_gains, paired_interval
from nudiff.utils import read_json, write_json, write_text

RESULTS = Path(__file__).parent / "results"
BASE = RESULTS / "demo-kumar"  # the real cells every recipe is paired with
FRACTION = 0.1


class Recipe(NamedTuple):
    what: str
    folder: str  # results folder under benchmarks/results
    arm: str


RECIPES: dict[str, Recipe] = {
    "method": Recipe(
        "NuDiff's pairs: sampled structures, painted at scale 0.5", "verdict-kumar", "real+syn"
    ),
    "method-decode": Recipe(
        "NuDiff's pairs, the grids' decode (min_marker 2, semantic_sigma 1, smooth labels)",
        "verdict-kumar-decode",
        "real+syn",
    ),
    "method-random": Recipe(
        "NuDiff's pairs, no fidelity ranking (128 sampled, hard filters only)",
        "verdict-kumar-random",
        "real+syn",
    ),
    "method-random+copypaste": Recipe(
        "NuDiff's pairs, no ranking, and 128 copy-paste patches (256 extra in all)",
        "verdict-kumar-random",
        "real+copypaste+syn",
    ),
    "method-random-decode": Recipe(
        "NuDiff's pairs, no fidelity ranking, the grids' decode",
        "verdict-kumar-random-decode",
        "real+syn",
    ),
    "real-label": Recipe(
        "subset labels + 3 pasted nuclei, painted at scale 0.5", "demo-kumar", "real+syn"
    ),
    "real-label-random": Recipe(
        "subset labels + 3 pasted nuclei, painted at scale 0.5, no fidelity ranking",
        "verdict-kumar-real-label-random",
        "real+syn",
    ),
    "real-label-full": Recipe(
        "subset labels + 3 pasted nuclei, painted at scale 1", "verdict-kumar-s1", "real+syn"
    ),
    "copypaste": Recipe(
        "real nuclei pasted into real patches (nothing painted)", "verdict-kumar", "real+copypaste"
    ),
    "method-random-stain": Recipe(
        "NuDiff's pairs, no ranking, each image stain-normalised to one subset patch",
        "verdict-kumar-random-stain",
        "real+syn",
    ),
    "copypaste-half": Recipe(
        "copy-paste patches taken to scale 0.5 and back (real pixels, half the detail)",
        "verdict-kumar-copypaste-half",
        "real+copypaste",
    ),
    "method-random-g1.5": Recipe(
        "NuDiff's pairs, no ranking, painted at guidance s = 1.5 (softer nuclei, nearer colour)",
        "verdict-kumar-random-g1.5",
        "real+syn",
    ),
    "method-random-g3": Recipe(
        "NuDiff's pairs, no ranking, painted at guidance s = 3 (sharper, darker nuclei)",
        "verdict-kumar-random-g3",
        "real+syn",
    ),
    "method-random-512": Recipe(
        "NuDiff's pairs, no ranking, 512 sampled (4x the pairs, same share of each batch)",
        "verdict-kumar-random-512",
        "real+syn",
    ),
}
# head to head (a − b): each diffusion recipe against copy-paste (the bar), and the painted
# recipes against each other (do sampled layouts, or full resolution, change what pairs teach?)
CONTRASTS = (
    ("method", "copypaste"),
    ("method-decode", "copypaste"),
    ("real-label", "copypaste"),
    ("real-label-full", "copypaste"),
    ("method", "real-label"),
    ("method-decode", "method"),
    ("method-random", "method"),
    ("method-random", "copypaste"),
    ("method-random", "real-label"),
    ("method-random-decode", "method-random"),
    ("method-random-decode", "method-decode"),
    ("method-random-decode", "copypaste"),
    ("method-random+copypaste", "copypaste"),
    ("method-random+copypaste", "method-random"),
    ("method-decode", "real-label"),
    ("real-label-random", "real-label"),
    ("method-random", "real-label-random"),
    ("real-label-full", "real-label"),
    ("method-random-stain", "method-random"),
    ("method-random-stain", "copypaste"),
    ("copypaste-half", "copypaste"),
    ("method-random", "copypaste-half"),
    ("real-label", "copypaste-half"),
    ("method-random-g1.5", "method-random"),
    ("method-random-g3", "method-random"),
    ("method-random-g1.5", "copypaste"),
    ("method-random-g3", "copypaste"),
    ("method-random-512", "method-random"),
    ("method-random-512", "copypaste"),
)


def recipe_rows(results: Path, name: str) -> list[dict]:
    """The committed per-image rows of one recipe, its arm renamed to the recipe."""
    r = RECIPES[name]
    folder = results / r.folder
    if not folder.is_dir():
        return []
    rows = [x for x in committed_rows(folder, FRACTION) if x["arm"] == r.arm]
    return [x | {"arm": name} for x in rows]


def _real(results: Path, fraction: float) -> list[dict]:
    base = results / BASE.name
    return [x for x in committed_rows(base, fraction) if x["arm"] == "real"]


def _mean(rows: list[dict], metric: str) -> float:
    return sum(float(r[metric]) for r in rows) / len(rows)


def summarise(results: Path) -> dict[str, dict]:
    real, full = _real(results, FRACTION), _real(results, 1.0)
    out = {}
    for name, recipe in RECIPES.items():
        rows = recipe_rows(results, name)
        for g in paired_gains(real + rows, paper="kumar", arms=(name,)):
            seeds = g["seeds"]
            at = [r for r in real if int(r["seed"]) in seeds]
            top = [r for r in full if int(r["seed"]) in seeds]
            gap = _mean(top, "aji") - _mean(at, "aji") if top else None
            out[name] = {
                "what": recipe.what,
                "results": f"benchmarks/results/{recipe.folder}",
                "arm": recipe.arm,
                "seeds": seeds,
                "aji": _mean([r for r in rows if int(r["seed"]) in seeds], "aji"),
                "pq": _mean([r for r in rows if int(r["seed"]) in seeds], "pq"),
                "gain_aji": g["aji"],
                "gain_pq": g["pq"],
                "gain_aji_ci": [g["ci"]["aji"]["lo"], g["ci"]["aji"]["hi"]],
                "gain_pq_ci": [g["ci"]["pq"]["lo"], g["ci"]["pq"]["hi"]],
                "gap_closed": g["aji"] / gap if gap else None,
                "per_seed_aji": paired_interval(rows, real, ("aji",), by_seed=True)["aji"][
                    "per_seed"
                ],
            }
    return out


def head_to_head(results: Path) -> list[dict]:
    """Each ``CONTRASTS`` pair both of whose recipes ran: a − b over the (test image, seed)
    pairs both have, mean and 95 % interval of AJI and PQ."""
    heads = (
        contrast_columns(a, b, recipe_rows(results, a), recipe_rows(results, b), per_seed=True)
        for a, b in CONTRASTS
    )
    return [h for h in heads if h is not None]


FLOOR = "real vs real"  # the pair-quality table's last row: two halves of the real windows
# (quality.json key, column) of the pair-quality table: images, then labels
QUALITY = (
    ("colour_w1_mean", "colour W1"),
    ("c2st_accuracy", "C2ST"),
    ("kid", "KID"),
    ("laplacian_variance_ratio", "Laplacian ratio"),
    ("structure_w1_mean", "structure W1"),
    ("structure_w1_solidity", "solidity W1"),
    ("mean_solidity", "solidity"),
    ("fidelity_aji", "fidelity AJI"),
    ("fidelity_pq", "fidelity PQ"),
    ("fidelity_missed_rate", "missed rate"),
)


def pair_quality(folders: dict[str, Path]) -> dict[str, dict]:
    """Per recipe the measures of ``nudiff quality`` on its kept pairs (``quality.json`` in
    each folder), with the real-vs-real floors."""
    out, floor = {}, {}
    for name, folder in folders.items():
        q = read_json(folder / "quality.json")
        out[name] = {k: q.get(k) for k, _ in QUALITY}
        floor = {k: q.get(f"{k}_floor", q.get(f"{k}_real")) for k, _ in QUALITY}
    return out | ({FLOOR: floor} if floor else {})


def merged_quality(kept: dict[str, dict], given: dict[str, dict]) -> dict[str, dict]:
    """The rows measured before (``verdict.json``; their `nudiff quality` folders live in runs/,
    gone on a fresh machine) with the ones given now added or replaced; the floor measured
    first is kept (a floor drifts a little between runs) and comes last."""
    rows = {k: v for k, v in (kept | given).items() if k != FLOOR}
    floor = kept.get(FLOOR) or given.get(FLOOR)
    return rows | ({FLOOR: floor} if floor else {})


def quality_markdown(quality: dict[str, dict]) -> str:
    lines = [
        "",
        "The kept pairs against the 14 test images (`nudiff quality`, 128-px windows, the 100 % "
        "real segmenter for KID and fidelity):",
        "",
        "| pairs | " + " | ".join(c for _, c in QUALITY) + " |",
        "|---|" + "---|" * len(QUALITY),
    ]
    for name, q in quality.items():
        cells = ["–" if q[k] is None else f"{q[k]:.3f}" for k, _ in QUALITY]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _ci(row: dict, key: str) -> str:
    lo, hi = row[f"gain_{key}_ci"]
    return f"{row[f'gain_{key}']:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def _seeds(row: dict) -> str:
    return ", ".join(f"{g:+.3f}" for g in row["per_seed_aji"])


def markdown(rows: dict[str, dict], heads: list[dict]) -> str:
    lines = [
        "# Kumar 10 %: which pairs teach (`benchmarks/verdict.py`)",
        "",
        "10 % labeled + 128 extra patches (a quarter of each batch), 128-px crops, 3,000-step "
        "segmenters, scored on Kumar's 14 test images. Gain over 10 % real paired by seed and "
        "test image, 95 % interval; *gap*: the share of the 10 % → 100 % real AJI gap closed.",
        "",
        "| recipe | extra patches | seeds | AJI | PQ | Δ AJI | Δ PQ | gap | Δ AJI per seed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        gap = "–" if r["gap_closed"] is None else f"{r['gap_closed']:.0%}"
        lines.append(
            f"| {name} | {r['what']} | {', '.join(map(str, r['seeds']))} | {r['aji']:.4f} | "
            f"{r['pq']:.4f} | {_ci(r, 'aji')} | {_ci(r, 'pq')} | {gap} | {_seeds(r)} |"
        )
    if heads:
        lines += [
            "",
            "Head to head, paired by seed and test image, 95 % interval:",
            "",
            "| a − b | seeds | (image × seed) pairs | Δ AJI | Δ PQ | Δ AJI per seed |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {h['a']} − {h['b']} | {', '.join(map(str, h['seeds']))} | {h['pairs']} | "
            f"{_ci(h, 'aji')} | {_ci(h, 'pq')} | {_seeds(h)} |"
            for h in heads
        ]
    missing = [n for n in RECIPES if n not in rows]
    if missing:
        lines += ["", "Not run yet: " + ", ".join(f"`{n}`" for n in missing) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--results", type=Path, default=RESULTS, help="benchmarks/results")
    ap.add_argument(
        "--quality",
        nargs="*",
        default=[],
        metavar="RECIPE=DIR",
        help="a `nudiff quality` output folder of a recipe's kept pairs (a table of their "
        "measures is added)",
    )
    args = ap.parse_args()
    rows, heads = summarise(args.results), head_to_head(args.results)
    out = args.results / "verdict-kumar"
    given = pair_quality({k: Path(v) for k, v in (q.split("=", 1) for q in args.quality)})
    before = out / "verdict.json"
    kept = read_json(before).get("pair_quality", {}) if before.exists() else {}
    quality = merged_quality(kept, given)
    md = markdown(rows, heads) + (quality_markdown(quality) if quality else "")
    write_json(
        out / "verdict.json", {"recipes": rows, "head_to_head": heads, "pair_quality": quality}
    )
    write_text(out / "verdict.md", md)
    print(md)


if __name__ == "__main__":
    main()
