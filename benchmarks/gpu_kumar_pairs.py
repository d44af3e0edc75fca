"""Kumar 10 % pairs from a GPU-trained image model: before and after `gpu_kumar_pairs.sh`.

    # here, on CPU, side by side (~70 and ~57 min at 1 thread): the grid's 10 % structure model
    # and the 10 % real s0 cell (the pair filter's segmenter)
    nudiff train structure --config configs/kumar-gpu.yaml --data runs/kumar-prep --fraction 0.1 \
        --out runs/kumar-gpu/diffusion/f0.10/structure --threads 1 &
    nudiff experiment --config configs/kumar-gpu.yaml --out runs/kumar-gpu \
        --set 'experiment.arms=[real]' --set 'experiment.seeds=[0]' --threads 1
    python benchmarks/gpu_kumar_pairs.py prepare \
--structure runs/kumar-gpu/diffusion/f0.10/structure \
        --seg runs/kumar-gpu/cells/f0.10_real_s0 \
           # .gpu/{subset10,selection10,structure,seg}
    (device) bash benchmarks/gpu_kumar_pairs.sh $OUT      # image model + 256 filtered pairs
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

from nudiff.experiment import (
    ResultsLayout,
    RunLayout,
    cell_fingerprint,
    cells_of,
    load_plan,
    write_subset_folder,
)
from nudiff.utils import read_json, write_json

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "configs" / "kumar-grid.yaml"
GPU = ROOT / "configs" / "kumar-gpu.yaml"
RESULTS = ROOT / "benchmarks" / "results"


def copy_model(run: Path, dest: Path) -> None:
    """A run folder's ``model/`` (and ``config.yaml``), without its checkpoints: what travels."""
    if not (run / "model").is_dir():
        raise SystemExit(f"{run}: no model/ here (train it first)")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(run / "model", dest / "model")
    if (run / "config.yaml").exists():
        shutil.copy(run / "config.yaml", dest / "config.yaml")
    print(f"{run}/model -> {dest}/model")


def prepare(
    data_out: Path, dest: Path, structure: Path | None = None, seg: Path | None = None
) -> None:
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
    for run, name in ((structure, "structure"), (seg, "seg")):
        if run is not None:
            copy_model(run, dest / name)


def unpack(came_back: Path, run: Path, results: Path) -> None:
    target = RunLayout(run).diffusion(0.1)
    target.mkdir(parents=True, exist_ok=True)
    for tar in sorted(came_back.glob("*.tar")):
        dest = results / "device" if tar.name == "logs.tar" else target
        with tarfile.open(tar) as t:
            t.extractall(dest, filter="data")
        print(f"{tar.name} -> {dest}")
    if (came_back / "run.log").exists():
        shutil.copy(came_back / "run.log", results / "device" / "run.log")
    grid, gpu = load_plan(GRID), load_plan(GPU)
    grid_results, here = ResultsLayout(RESULTS / "kumar-grid"), ResultsLayout(results)
    here.cells.mkdir(parents=True, exist_ok=True)
    for cell in cells_of(gpu.experiment):
        if cell.arm != "real":
            continue
        src = grid_results.cell(cell)
        saved = read_json(src)
        if not saved["fingerprint"] == cell_fingerprint(grid, cell) == cell_fingerprint(gpu, cell):
            raise SystemExit(
                f"{src}: its fingerprint does not hold under {GPU.name}: the real cells differ"
            )
        write_json(here.cell(cell), saved)
        print(f"{src.name}: the grid's cell, same fingerprint under {GPU.name}")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare")
    a.add_argument("--data", type=Path, default=ROOT / "runs" / "kumar-prep")
    a.add_argument("--dest", type=Path, default=ROOT / ".gpu")
    a.add_argument("--structure", type=Path, default=None, help="a trained structure run to carry")
    a.add_argument("--seg", type=Path, default=None, help="the filter's segmenter run to carry")
    b = sub.add_parser("unpack")
    b.add_argument("came_back", type=Path)
    b.add_argument("--run", type=Path, default=ROOT / "runs" / "kumar-gpu")
    b.add_argument("--results", type=Path, default=RESULTS / "kumar-grid-gpu")
    args = p.parse_args()
    if args.cmd == "prepare":
        prepare(args.data, args.dest, args.structure, args.seg)
    else:
        unpack(args.came_back, args.run, args.results)


if __name__ == "__main__":
    main()
