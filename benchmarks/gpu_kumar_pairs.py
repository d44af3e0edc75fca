"""Kumar 10 % pairs from GPU-trained diffusion models: before and after `gpu_kumar_pairs.sh`.

    python benchmarks/gpu_kumar_pairs.py prepare          # .gpu/subset10, .gpu/selection10
    (device) bash benchmarks/gpu_kumar_pairs.sh $OUT      # models + 256 filtered pairs
    python benchmarks/gpu_kumar_pairs.py unpack DIR       # DIR: what came back from $OUT

``prepare`` writes the 10 % subset's 27 patches and the segmenter's model-selection patches
exactly as `nudiff experiment --config configs/kumar-grid.yaml` draws them (the same data
section, so the same subset). ``unpack`` puts the pairs where `nudiff experiment --config
configs/kumar-gpu.yaml --out runs/kumar-gpu` looks for them (``diffusion/f0.10/synthetic``), the
logs, sample grids and mosaics under ``benchmarks/results/kumar-grid-gpu/device/``, and copies
the grid's committed 10 % real cells into ``benchmarks/results/kumar-grid-gpu/cells`` after
checking that their fingerprints hold under the GPU config (same data and segmenter), so the
GPU pairs are compared with the very cells the CPU recipes were.
"""

from __future__ import annotations

import argparse
import shutil
import tarfile
from pathlib import Path

from nudiff.experiment import cell_fingerprint, cells_of, load_plan, write_subset_folder
from nudiff.utils import read_json, write_json

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "configs" / "kumar-grid.yaml"
GPU = ROOT / "configs" / "kumar-gpu.yaml"
RESULTS = ROOT / "benchmarks" / "results"


def prepare(data_out: Path, dest: Path) -> None:
    from nudiff.data.prepare import load_subset
    from nudiff.data.prepare import prepare as prepare_data

    plan = load_plan(GRID)
    plan.data.fractions = sorted(set(plan.experiment.fractions))  # as run_experiment does
    plan.data.seed = plan.experiment.subset_seed
    if not (data_out / "manifest.json").exists():
        prepare_data([ROOT / d for d in plan.experiment.data], data_out, plan.data)
    real = load_subset(data_out, 0.1, plan.experiment.subset_seed)
    selection = real[:: max(1, len(real) // plan.experiment.selection_patches)]
    write_subset_folder(real, dest / "subset10")
    write_subset_folder(selection, dest / "selection10")
    print(f"{len(real)} subset patches, {len(selection)} selection patches in {dest}")


def unpack(came_back: Path, run: Path, results: Path) -> None:
    target = run / "diffusion" / "f0.10"
    target.mkdir(parents=True, exist_ok=True)
    for tar in sorted(came_back.glob("*.tar")):
        dest = results / "device" if tar.name == "logs.tar" else target
        with tarfile.open(tar) as t:
            t.extractall(dest, filter="data")
        print(f"{tar.name} -> {dest}")
    if (came_back / "run.log").exists():
        shutil.copy(came_back / "run.log", results / "device" / "run.log")
    grid, gpu = load_plan(GRID), load_plan(GPU)
    cells = results / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    for cell in cells_of(gpu.experiment):
        if cell.arm != "real":
            continue
        src = RESULTS / "kumar-grid" / "cells" / f"{cell.name}.json"
        saved = read_json(src)
        assert saved["fingerprint"] == cell_fingerprint(grid, cell) == cell_fingerprint(gpu, cell), cell
        write_json(cells / src.name, saved)
        print(f"{src.name}: the grid's cell, same fingerprint under {GPU.name}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare")
    a.add_argument("--data", type=Path, default=ROOT / "runs" / "kumar-prep")
    a.add_argument("--dest", type=Path, default=ROOT / ".gpu")
    b = sub.add_parser("unpack")
    b.add_argument("came_back", type=Path)
    b.add_argument("--run", type=Path, default=ROOT / "runs" / "kumar-gpu")
    b.add_argument("--results", type=Path, default=RESULTS / "kumar-grid-gpu")
    args = p.parse_args()
    if args.cmd == "prepare":
        prepare(args.data, args.dest)
    else:
        unpack(args.came_back, args.run, args.results)


if __name__ == "__main__":
    main()
