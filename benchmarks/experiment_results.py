"""Commit an experiment run's results: report table/chart/mosaics, results.csv, timings.

Rebuilds the report from the run's cells (so a partly finished grid can be committed too) and
from the cells already committed in ``benchmarks/results/<name>/cells/`` (a run folder on a fresh
machine holds only this session's cells; the committed ones, same fingerprint, count too, and
the committed timings are kept under this run's; the per-group tables take their groups from the
run's ``data/`` folder, or from the config's split file where that folder is not), then copies
into ``benchmarks/results/<name>/``:

    table.md        mean ± sd per cell, the paper's Table 1 beside; paired gains over real-only
    summary.json    the same numbers; chart.png; mosaic_f*.png (synthetic pairs beside real);
                    per_image_f0.10.png (per test image: each arm's gain against 100 % − 10 %; one per fraction)
    results.csv     one row per cell and test image
    timings.json    seconds per stage; timings.md the same, summed, in minutes

    .venv/bin/python benchmarks/experiment_results.py --run runs/grid --name grid \\
        --config configs/cpu-grid.yaml
    .venv/bin/python benchmarks/experiment_results.py --run runs/kumar-paste --name kumar-grid-paste \\
        --config configs/kumar-grid.yaml --set synthesis.structures=copypaste \\
        --set 'experiment.arms=[real, real+syn, real+copypaste, syn-only]'
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from nudiff.data.prepare import load_groups, split_groups
from nudiff.experiment import _committed, cells_of, collect_results, load_plan
from nudiff.report import write_experiment_report
from nudiff.utils import read_json, write_json, write_text

RESULTS = Path(__file__).parent / "results"


def timings_markdown(timings: dict[str, float], n_cells_done: int, n_cells: int) -> str:
    groups: dict[str, float] = {}
    for key, seconds in timings.items():
        stage = key.split("/")[-1] if "/" in key else key
        group = "segmenter " + stage if key.startswith("cells/") else ("diffusion " + stage if "/" in key else stage)
        groups[group] = groups.get(group, 0.0) + seconds
    lines = [f"Cells finished: {n_cells_done} of {n_cells}.", "", "| stage | minutes |", "|---|---|"]
    lines += [f"| {k} | {v / 60:.1f} |" for k, v in sorted(groups.items())]
    lines.append(f"| **total** | **{sum(timings.values()) / 60:.1f}** |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="the experiment's --out folder")
    ap.add_argument("--name", required=True, help="folder under benchmarks/results/")
    ap.add_argument("--config", type=Path, required=True, help="the experiment config the run used")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="the run's config overrides (repeatable), e.g. synthesis.structures=copypaste")
    args = ap.parse_args()
    plan = load_plan(args.config, args.set)
    cells = cells_of(plan.experiment)
    dest = RESULTS / args.name
    dest.mkdir(parents=True, exist_ok=True)
    for c in cells:  # committed metrics -> the run's cell folder (refused if another config made them)
        _committed(dest, plan, c, args.run / "cells" / c.name)
    timings = read_json(dest / "timings.json") if (dest / "timings.json").exists() else {}
    if (args.run / "timings.json").exists():
        timings |= read_json(args.run / "timings.json")
    write_json(args.run / "timings.json", timings)
    rows = collect_results(args.run, cells)
    groups = load_groups(args.run / "data")
    split = getattr(plan.data, "split", None)
    if not groups and split:
        print(f"{args.run / 'data'}: no prepared folder; groups read from {split}")
        groups = split_groups(split)
    write_experiment_report(args.run, rows, plan.experiment, groups=groups)
    rep = args.run / "report"
    for f in [rep / "table.md", rep / "summary.json", rep / "chart.png", *sorted(rep.glob("per_image_f*.png")),
              *sorted(rep.glob("mosaic_*.png")),
              args.run / "results.csv", args.run / "timings.json"]:
        if f.exists():
            shutil.copyfile(f, dest / f.name)
    print((dest / "table.md").read_text())
    if not timings:  # cells taken from other folders only: no time of this run's to report
        (dest / "timings.json").unlink(missing_ok=True)
        return
    done = sum((args.run / "cells" / c.name / "metrics.json").exists() for c in cells)
    write_text(dest / "timings.md", timings_markdown(timings, done, len(cells)))
    print((dest / "timings.md").read_text())


if __name__ == "__main__":
    main()
