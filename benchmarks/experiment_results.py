"""Commit an experiment run's results: now `nudiff experiment report` (this wrapper keeps the
commands written in results folders' READMEs working).

    .venv/bin/python benchmarks/experiment_results.py --run runs/grid --name grid \\
        --config configs/cpu-grid.yaml

is

    nudiff experiment report --config configs/cpu-grid.yaml --out runs/grid \\
        --results benchmarks/results/grid
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nudiff.experiment import load_plan, publish_report

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--run", type=Path, required=True, help="the experiment's --out folder")
    ap.add_argument("--name", required=True, help="folder under benchmarks/results/")
    ap.add_argument(
        "--config", type=Path, required=True, help="the experiment config the run used"
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="the run's config overrides (repeatable), e.g. synthesis.structures=copypaste",
    )
    args = ap.parse_args()
    for path in publish_report(load_plan(args.config, args.set), args.run, RESULTS / args.name):
        print(path.read_text())


if __name__ == "__main__":
    main()
