"""Kumar 10 %: ways of using the same synthetic pairs in the segmenter.

Every variant trains the 10 % ``real+syn`` segmenter of ``configs/kumar-grid.yaml`` (3,000 steps)
with the grid's synthesis recipe and changes one thing in how the segmenter uses the pairs:
the share of each batch that is synthetic (``real_ratio``), pre-training on the pairs then
training on real only (``synthetic_until``), a lower loss weight for synthetic crops
(``synthetic_weight``), the number of kept pairs, or mixing them with the copy-paste patches.
The grid's own ``real+syn`` and ``real+copypaste+syn`` cells are the ``quarter`` and
``copypaste+syn`` rows; ``copypaste-512`` is that row's control (as many extra patches, all
copy-paste); ``copypaste+syn-half`` and its control ``copypaste-512-half`` draw half of each
batch from the extra patches instead of a quarter. The gain of each variant over 10 % real is
paired by seed and test image with the grid's ``real`` cells (the real arm does not depend on
these options).

Each variant is a ``nudiff experiment`` run under ``--out/<variant>`` with ``--set`` overrides;
its finished cells are kept under ``--results/<variant>/cells/`` (commit them: a rerun skips
them). A variant's run folder links the grid run's data, diffusion models, labeled subset, the
real seed-0 segmenter (the pair filter's) and, when it keeps the grid's pairs, the kept pairs
themselves: a variant costs one segmenter per seed (~35 min at 2 threads); ``pairs-*`` sample
their own set first (~5 min for 256 sampled, ~20 min for 1,024).

    python benchmarks/pair_use.py --variants pretrain-750 weight-0.5 --seeds 0
    python benchmarks/pair_use.py --summary-only

Writes ``--results/pair_use.{json,md}``: one row per variant (gain over 10 % real) and the
``CONTRASTS`` head to head.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NamedTuple

from pair_ablation import contrast_columns, gain_columns  # sibling script

from nudiff.experiment import (
    Cell,
    ResultsLayout,
    RunLayout,
    committed_rows,
    load_plan,
    paired_gains,
    run_experiment,
)
from nudiff.utils import NudiffError, read_json, set_threads, write_json, write_text

RESULTS = Path(__file__).parent / "results"
GRID_RESULTS = RESULTS / "kumar-grid"
FRACTION = 0.1


class Variant(NamedTuple):
    what: str  # what the segmenter does with the pairs
    overrides: list[str]  # --set overrides of configs/kumar-grid.yaml
    own_pairs: bool  # samples its own pairs (else links the grid's kept pairs)
    arm: str = "real+syn"


VARIANTS: dict[str, Variant] = {
    "quarter": Variant("a quarter of each batch synthetic (the grid's recipe)", [], False),
    "half": Variant("half of each batch synthetic", ["segment.train.real_ratio=0.5"], False),
    "tenth": Variant("a tenth of each batch synthetic", ["segment.train.real_ratio=0.9"], False),
    "union": Variant(
        "plain union, drawn by area (the paper's; ~70 % synthetic here)",
        ["segment.train.real_ratio=null"],
        False,
    ),
    "pretrain-750": Variant(
        "pre-train: the first 750 steps synthetic only, then real only "
        "(as many real crops as `quarter`)",
        ["segment.train.real_ratio=0", "segment.train.synthetic_until=750"],
        False,
    ),
    "weight-0.5": Variant(
        "a quarter synthetic, their loss weighted 0.5",
        ["segment.train.synthetic_weight=0.5"],
        False,
    ),
    "pairs-128": Variant(
        "128 kept pairs (256 sampled), a quarter of each batch",
        ["experiment.n_synthetic=128"],
        True,
    ),
    "pairs-512": Variant(
        "512 kept pairs (1,024 sampled), a quarter of each batch",
        ["experiment.n_synthetic=512"],
        True,
    ),
    "copypaste+syn": Variant(
        "the 256 pairs and 256 copy-paste patches, a quarter of each batch from the 512",
        [],
        False,
        "real+copypaste+syn",
    ),
    "copypaste-512": Variant(
        "control for `copypaste+syn`: 512 copy-paste patches, no synthetic, a quarter of each "
        "batch",
        ["experiment.n_synthetic=512"],
        False,
        "real+copypaste",
    ),
    "copypaste-256": Variant(
        "no synthetic: the grid's 256 copy-paste patches, a quarter of each batch",
        [],
        False,
        "real+copypaste",
    ),
    "copypaste+syn-half": Variant(
        "the 256 pairs and 256 copy-paste patches, half of each batch from the 512",
        ["segment.train.real_ratio=0.5"],
        False,
        "real+copypaste+syn",
    ),
    "copypaste-512-half": Variant(
        "control for `copypaste+syn-half`: 512 copy-paste patches, no synthetic, "
        "half of each batch",
        ["experiment.n_synthetic=512", "segment.train.real_ratio=0.5"],
        False,
        "real+copypaste",
    ),
}
IN_GRID = ("quarter", "copypaste+syn", "copypaste-256")  # cells of configs/kumar-grid.yaml itself
# pairs of variants compared head to head (a − b, paired by seed and test image)
CONTRASTS = (
    ("copypaste+syn", "copypaste-512"),
    ("copypaste+syn", "copypaste-256"),
    ("copypaste-512", "copypaste-256"),
    ("copypaste+syn-half", "copypaste+syn"),
    ("copypaste+syn-half", "copypaste-512-half"),
)


def link_grid_run(grid_run: Path, run: Path, own_pairs: bool) -> None:
    """Link what a variant shares with the grid run into its run folder (nothing is copied)."""
    rel = RunLayout(Path())  # paths relative to a run folder
    shared = [
        rel.data,
        rel.cell(Cell(FRACTION, "real", 0)),
        rel.model_run(FRACTION, "structure"),
        rel.model_run(FRACTION, "image"),
        rel.subset(FRACTION),
        *(() if own_pairs else (rel.synthetic(FRACTION),)),
    ]
    for rel in shared:
        target, link = grid_run / rel, run / rel
        if link.exists() or link.is_symlink():
            continue
        if not target.exists():
            raise NudiffError(
                f"{target}: missing; run the grid's 10 % real+syn cell first "
                "(nudiff experiment --config configs/kumar-grid.yaml ...)"
            )
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target.resolve(), link)


def run_variant(
    name: str, config: Path, grid_run: Path, out: Path, results: Path, seeds: list[int]
) -> None:
    v = VARIANTS[name]
    run = out / name
    link_grid_run(grid_run, run, v.own_pairs)
    plan = load_plan(
        config,
        [
            *v.overrides,
            "experiment.fractions=[0.1]",
            f"experiment.arms=[{v.arm}]",
            f"experiment.seeds_by_fraction={{0.1: {list(seeds)}}}",
        ],
    )
    run_experiment(plan, run, results_dir=results / name)


def variant_folder(results: Path, name: str) -> Path:
    return GRID_RESULTS if name in IN_GRID else results / name


def variant_rows(results: Path, name: str) -> list[dict]:
    """The committed per-image rows of one variant's cells (empty when none has run)."""
    folder, arm = variant_folder(results, name), VARIANTS[name].arm
    return (
        [r for r in committed_rows(folder, FRACTION) if r["arm"] == arm] if folder.is_dir() else []
    )


def summarise(results: Path) -> dict[str, dict]:
    real = [r for r in committed_rows(GRID_RESULTS, FRACTION) if r["arm"] == "real"]
    out = {}
    for name, (what, overrides, _, arm) in VARIANTS.items():
        folder = variant_folder(results, name)
        syn = variant_rows(results, name)
        for g in paired_gains(real + syn, arms=(arm,)):
            cells = [
                read_json(ResultsLayout(folder).cell(Cell(FRACTION, arm, s))) for s in g["seeds"]
            ]
            out[name] = {
                "what": what,
                "overrides": overrides,
                "seeds": g["seeds"],
                "aji": sum(c["mean"]["aji"] for c in cells) / len(cells),
                "pq": sum(c["mean"]["pq"] for c in cells) / len(cells),
                **gain_columns(g),
                "minutes": round(
                    sum(sum(c.get("minutes", {}).values()) for c in cells) / len(cells), 1
                ),
            }
    return out


def contrasts(results: Path) -> list[dict]:
    """Each ``CONTRASTS`` pair whose variants share seeds: a − b over the (test image, seed)
    pairs both have, mean and 95 % interval of AJI and PQ."""
    heads = (
        contrast_columns(a, b, variant_rows(results, a), variant_rows(results, b))
        for a, b in CONTRASTS
    )
    return [h for h in heads if h is not None]


def _ci(row: dict, key: str) -> str:
    lo, hi = row[f"gain_{key}_ci"]
    return f"{row[f'gain_{key}']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def markdown(rows: dict[str, dict], heads: list[dict]) -> str:
    lines = [
        "# Kumar 10 %: ways of using the same synthetic pairs (`benchmarks/pair_use.py`)",
        "",
        "10 % real + the grid recipe's synthetic pairs, 3,000-step segmenters; one option "
        "changed per row (the `copypaste*` rows add copy-paste patches: the grid's, with or "
        "without "
        "the pairs, and controls with as many extra patches as `copypaste+syn`, all copy-paste). "
        "Gain over 10 % real (the grid's `real` cells), paired by seed and "
        "test image (14 Kumar test images), 95 % interval. Minutes: the cell's training and "
        "prediction, averaged over its seeds.",
        "",
        "| variant | what the segmenter does with the pairs | seeds | AJI | PQ | Δ AJI | Δ PQ | "
        "minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        seeds = ", ".join(map(str, r["seeds"]))
        lines.append(
            f"| {name} | {r['what']} | {seeds} | {r['aji']:.4f} | {r['pq']:.4f} | "
            f"{_ci(r, 'aji')} | {_ci(r, 'pq')} | {r['minutes']} |"
        )
    if heads:
        lines += [
            "",
            "Head to head, paired by seed and test image (the seeds both variants have), 95 % "
            "interval:",
            "",
            "| a − b | seeds | (image × seed) pairs | Δ AJI | Δ PQ |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {h['a']} − {h['b']} | {', '.join(map(str, h['seeds']))} | {h['pairs']} | "
            f"{_ci(h, 'aji')} | {_ci(h, 'pq')} |"
            for h in heads
        ]
    missing = [n for n in VARIANTS if n not in rows]
    if missing:
        lines += ["", "Not run yet: " + ", ".join(f"`{n}`" for n in missing) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--variants", nargs="+", default=[], choices=[v for v in VARIANTS if v not in IN_GRID]
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--config", type=Path, default=Path("configs/kumar-grid.yaml"))
    ap.add_argument(
        "--grid-run",
        type=Path,
        default=Path("runs/kumar"),
        help="the Kumar grid's run folder (its 10 %% models, pairs and real s0 segmenter)",
    )
    ap.add_argument("--out", type=Path, default=Path("runs/pair_use"))
    ap.add_argument("--results", type=Path, default=RESULTS / "pair_use")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--summary-only", action="store_true", help="only rebuild the table from --results"
    )
    args = ap.parse_args()
    set_threads(args.threads)
    if not args.summary_only:
        for name in args.variants:
            run_variant(name, args.config, args.grid_run, args.out, args.results, args.seeds)
    rows, heads = summarise(args.results), contrasts(args.results)
    write_json(args.results / "pair_use.json", {"variants": rows, "contrasts": heads})
    write_text(args.results / "pair_use.md", markdown(rows, heads))
    print(markdown(rows, heads))


if __name__ == "__main__":
    main()
