"""Learning curve: 10 % vs 100 % labels at several segmenter budgets, same test images.

For each budget (optimizer steps) the experiment of ``--config`` runs with the ``real`` arm
at the given fractions only; every finished cell's per-image metrics are kept under
``--results/steps<N>/cells/`` (commit them: a rerun skips what is there). The summary says,
per budget, the mean over test images of each fraction and the paired gap 100 % − 10 % per
seed, with a 95 % interval over (image × seed) pairs, and picks the **data-bound budget**: the
smallest with a gap ≥ ``--target-gap`` AJI, else the one with the largest gap.

    python benchmarks/learning_curve.py --config configs/kumar-grid.yaml \\
        --steps 3000 700 1500 --out runs/learning_curve --threads 1

Writes ``--results/learning_curve.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from nudiff.experiment import (
    RunLayout,
    committed_records,
    load_plan,
    paired_interval,
    record_rows,
    run_experiment,
)
from nudiff.utils import atomic_path, set_threads, write_json, write_text

METRICS = ("dice", "aji", "pq")


def run_budget(
    config: Path,
    steps: int,
    fractions: list[float],
    seeds: list[int],
    out: Path,
    results: Path,
    data: Path | None,
) -> None:
    """Run (or resume) the budget's cells; their metrics land in ``results/steps<steps>/cells``."""
    plan = load_plan(config)
    plan.experiment.fractions, plan.experiment.arms = fractions, ["real"]
    plan.experiment.seeds, plan.experiment.seeds_by_fraction = seeds, {}
    plan.segment.train.steps = steps
    plan.segment.train.val_every = plan.segment.train.checkpoint_every = min(500, steps // 2)
    run = RunLayout(out / f"steps{steps}")
    if data is not None and not run.data.exists():
        run.root.mkdir(parents=True, exist_ok=True)
        os.symlink(data.resolve(), run.data)
    run_experiment(plan, run.root, results_dir=results / f"steps{steps}")


def summarise(rows: list[dict], low: float, high: float) -> list[dict]:
    out = []
    for steps in sorted({r["steps"] for r in rows}):
        at = [r for r in rows if r["steps"] == steps]
        entry = {"steps": steps}
        for f in (low, high):
            for m in METRICS:
                entry[f"{m}_{f:.2f}"] = float(
                    np.mean([float(r[m]) for r in at if r["fraction"] == f])
                )
        gap = paired_interval(
            [r for r in at if r["fraction"] == high],
            [r for r in at if r["fraction"] == low],
            METRICS,
        )
        entry |= {f"gap_{m}": gap[m] for m in METRICS} | {"n_pairs": gap["n"]}
        out.append(entry)
    return out


def choose(summary: list[dict], target: float) -> dict:
    ok = [e for e in summary if e["gap_aji"]["mean"] >= target]
    best = (
        min(ok, key=lambda e: e["steps"])
        if ok
        else max(summary, key=lambda e: e["gap_aji"]["mean"])
    )
    return {
        "steps": best["steps"],
        "reason": f"the smallest of the budgets measured ({sorted(e['steps'] for e in summary)}) "
        f"with a 100 % − 10 % AJI gap ≥ {target}"
        if ok
        else f"no budget reached a gap of {target}: the largest gap",
    }


def interval(g: dict) -> str:
    return f"{g['mean']:+.4f} [{g['lo']:+.4f}, {g['hi']:+.4f}]"


def markdown(summary: list[dict], chosen: dict, low: float, high: float, n_test: int) -> str:
    lines = [
        f"# Learning curve: {low:.0%} vs {high:.0%} labels by segmenter budget ({n_test} test "
        "images)",
        "",
        "Mean over test images (seed 0 unless more seeds ran); gap = paired difference "
        f"{high:.0%} − {low:.0%} over (test image × seed) pairs, mean [95 % interval].",
        "",
        f"| steps | Dice {low:.0%} | Dice {high:.0%} | AJI {low:.0%} | AJI {high:.0%} | PQ "
        f"{low:.0%} | PQ {high:.0%} | gap AJI | gap PQ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        lines.append(
            f"| {e['steps']} | "
            + " | ".join(f"{e[f'{m}_{f:.2f}']:.4f}" for m in METRICS for f in (low, high))
            + f" | {interval(e['gap_aji'])} | {interval(e['gap_pq'])} |"
        )
    lines += ["", f"**Chosen budget: {chosen['steps']} steps** ({chosen['reason']}).", ""]
    return "\n".join(lines)


def plot(summary: list[dict], low: float, high: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [e["steps"] for e in summary]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, m in zip(axes, ("aji", "pq")):
        for f, style in ((low, "o--"), (high, "s-")):
            ax.plot(steps, [e[f"{m}_{f:.2f}"] for e in summary], style, label=f"{f:.0%} labeled")
        ax.set_xlabel("segmenter optimizer steps")
        ax.set_ylabel(f"{m.upper()} (mean over test images)")
        ax.legend()
    fig.suptitle("Learning curve: where do labels matter?")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", type=Path, default=Path("configs/kumar-grid.yaml"))
    ap.add_argument("--steps", type=int, nargs="+", default=[3000, 700, 1500])
    ap.add_argument("--fractions", type=float, nargs=2, default=[0.1, 1.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", type=Path, default=Path("runs/learning_curve"))
    ap.add_argument(
        "--data", type=Path, default=None, help="an already prepared data folder to reuse"
    )
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/learning_curve"))
    ap.add_argument("--target-gap", type=float, default=0.03)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--summary-only", action="store_true", help="only rebuild the summary from --results"
    )
    args = ap.parse_args()
    set_threads(args.threads)
    low, high = args.fractions
    # the summary covers every budget committed so far, not only this call's: a run of one new
    # budget keeps the others; it is rewritten after each budget, so a stopped run leaves one
    for steps in [] if args.summary_only else args.steps:
        run_budget(args.config, steps, [low, high], args.seeds, args.out, args.results, args.data)
        write_summary(all_committed_rows(args.results), low, high, args)
    if args.summary_only:
        write_summary(all_committed_rows(args.results), low, high, args)


def all_committed_rows(results: Path) -> list[dict]:
    """The committed per-image rows of every budget's results folder, each with its ``steps``."""
    return [
        row | {"steps": cell["segment_steps"]}
        for folder in sorted(results.glob("steps*"))
        for cell in committed_records(folder)
        for row in record_rows(cell)
    ]


def write_summary(rows: list[dict], low: float, high: float, args) -> None:
    complete = [
        r for r in rows if {x["fraction"] for x in rows if x["steps"] == r["steps"]} == {low, high}
    ]
    if not complete:
        return
    summary = summarise(complete, low, high)
    chosen = choose(summary, args.target_gap)
    n_test = len({r["image"] for r in complete})
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(
        args.results / "learning_curve.json",
        {
            "summary": summary,
            "chosen": chosen,
            "target_gap": args.target_gap,
            "n_test_images": n_test,
        },
    )
    write_text(args.results / "learning_curve.md", markdown(summary, chosen, low, high, n_test))
    plot(summary, low, high, args.results / "learning_curve.png")


if __name__ == "__main__":
    main()
