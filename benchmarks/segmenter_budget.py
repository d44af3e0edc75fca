"""The cheapest segmenter protocol at which labels matter: minutes per cell against the
100 % − 10 % gap on Kumar's 14 test images.

A *setting* is a named list of ``--set`` overrides of ``configs/kumar-grid.yaml``'s segmenter
(crop size, steps, learning rate, ...). For each, the ``real`` cells at 10 % and 100 % run seed
by seed (10 % then 100 % of seed 0, then of seed 1, ...), each committed to
``--results/<setting>/cells/`` as it finishes (commit them: a rerun skips what is there, so a
stopped run loses at most the cell it was training). The settings of the committed learning
curve and Kumar grid (256-px crops) are read from their own folders.

    python benchmarks/segmenter_budget.py --run c128-s3000 --seeds 0 1   # cells, one at a time
    python benchmarks/segmenter_budget.py --probe                        \
# s/step, threads, precision
    python benchmarks/segmenter_budget.py --summary                      # JSON, table, chart

``--probe`` times training steps on this machine (crop sizes, widths, batch, bf16 against fp32,
one cell at 2 threads against two side by side at 1 thread each) into ``probe.json``; minutes of
the reference settings, whose cells ran on other machines, are projected from it. Writes
``--results/budget.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from nudiff.experiment import (
    Cell,
    committed_records,
    load_plan,
    paired_interval,
    record_rows,
    run_experiment,
)
from nudiff.utils import atomic_path, machine, read_json, set_threads, write_json, write_text

CONFIG = Path("configs/kumar-grid.yaml")
RESULTS = Path("benchmarks/results/segmenter-budget")
LOW, HIGH = 0.1, 1.0
METRICS = ("dice", "aji", "pq")
TARGET_GAP, TARGET_MINUTES = 0.03, 10.0

# name -> the segment overrides of configs/kumar-grid.yaml (kept: a committed cell's fingerprint
# depends on them; add new settings, never edit one whose cells are committed)
SETTINGS: dict[str, list[str]] = {
    "c128-s3000": ["segment.train.crop_size=128"],
    # half the width (base 8: 0.5 M parameters), bf16 inference, fewer validation passes
    "c128-w8-s4000": [
        "segment.train.crop_size=128",
        "segment.model.base=8",
        "segment.train.steps=4000",
        "segment.train.val_every=1000",
        "segment.train.checkpoint_every=1000",
        "segment.infer.precision=bf16",
    ],
    "c256-w8-s1300": [
        "segment.model.base=8",
        "segment.train.steps=1300",
        "segment.train.val_every=650",
        "segment.train.checkpoint_every=650",
        "segment.infer.precision=bf16",
    ],
    # a higher peak learning rate, 10 % fewer steps to fit 10 minutes
    "c128-s2700-lr3e-3": [
        "segment.train.crop_size=128",
        "segment.train.steps=2700",
        "segment.train.lr=0.003",
        "segment.train.val_every=900",
        "segment.train.checkpoint_every=900",
        "segment.infer.precision=bf16",
    ],
}
# committed 256-px settings, read where they are (seed 0 only but the grid's 3 seeds)
REFERENCES: dict[str, Path] = {
    "c256-s700": Path("benchmarks/results/learning_curve/steps700"),
    "c256-s1500": Path("benchmarks/results/learning_curve/steps1500"),
    "c256-s3000": Path("benchmarks/results/kumar-grid"),
}
# cells that trained while other work shared the 2 cores (tests, a helper): their minutes are
# not the setting's; the table uses the others, or the projection
LOADED = {
    ("c128-s3000", "f0.10_real_s0"),
    ("c128-s2700-lr3e-3", "f0.10_real_s0"),
    ("c128-s3000", "f0.10_real_s1"),
    ("c128-s3000", "f1.00_real_s1"),
    ("c128-s3000", "f0.10_real_s2"),  # demo-kumar's seed-2 cell (same fingerprint), beside others
}
GRID = [
    "experiment.arms=[real]",
    f"experiment.fractions=[{LOW}, {HIGH}]",
    "experiment.seeds_by_fraction={}",
]


# --- cells ---------------------------------------------------------------------------------


def run_setting(name: str, seeds: list[int], out: Path, data: list[Path], results: Path) -> None:
    """The setting's cells, seed by seed, each committed as it finishes."""
    plan = load_plan(CONFIG, SETTINGS[name] + GRID + [f"experiment.seeds={seeds}"])
    for seed in seeds:
        for fraction in (LOW, HIGH):
            run_experiment(
                plan,
                out / name,
                data_dirs=data,
                results_dir=results / name,
                cells=[Cell(fraction, "real", seed)],
            )


# --- speed probe -----------------------------------------------------------------------------

PROBES = [  # (crop, batch, base, precision, threads)
    (256, 8, 16, "bf16", 2),
    (192, 8, 16, "bf16", 2),
    (128, 8, 16, "bf16", 2),
    (128, 16, 16, "bf16", 2),
    (256, 8, 8, "bf16", 2),
    (128, 8, 8, "bf16", 2),
    (128, 8, 8, "no", 2),
    (256, 8, 8, "no", 2),
    (256, 8, 16, "no", 2),
    (128, 8, 16, "no", 2),
    (256, 8, 16, "bf16", 1),
    (128, 8, 16, "bf16", 1),
]


def step_seconds(
    data: Path, crop: int, batch: int, base: int, precision: str, steps: int = 60
) -> float:
    """Seconds per training step (median of the logged windows after the first) on the 100 %
    subset's patches, at the threads already set."""
    from nudiff.data.prepare import load_subset
    from nudiff.segment.config import SegmentConfig, SegmenterNetConfig, SegmentTrainConfig
    from nudiff.segment.train import train_segmenter

    real = load_subset(data, HIGH, 0)
    cfg = SegmentConfig(
        model=SegmenterNetConfig(base=base),
        train=SegmentTrainConfig(
            steps=steps,
            batch_size=batch,
            crop_size=crop,
            precision=precision,
            real_ratio=0.75,
            log_every=20,
            warmup_steps=10,
            val_every=10**6,
            checkpoint_every=10**6,
            tune_post=False,
        ),
    )
    with tempfile.TemporaryDirectory() as tmp:
        train_segmenter(cfg, tmp, real, progress=False)
        with open(Path(tmp) / "train_log.csv") as f:
            rates = [float(r["steps_per_s"]) for r in csv.DictReader(f) if r.get("steps_per_s")]
    return float(np.median([1 / r for r in rates[1:]]))


def probe(data: Path, results: Path) -> dict:
    """Step times of :data:`PROBES`, then two 1-thread processes side by side (256 px)."""
    rows = []
    for crop, batch, base, precision, threads in PROBES:
        set_threads(threads)
        s = step_seconds(data, crop, batch, base, precision)
        rows.append(
            {
                "crop": crop,
                "batch": batch,
                "base": base,
                "precision": precision,
                "threads": threads,
                "s_per_step": round(s, 4),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    side = []
    for crop in (256, 128):
        cmd = [sys.executable, __file__, "--one-step-time", str(crop), "--data", str(data)]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        times = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        side.append(
            {
                "crop": crop,
                "threads": 1,
                "processes": 2,
                "s_per_step": [round(x, 4) for x in times],
            }
        )
        print(json.dumps(side[-1]), flush=True)
    out = {"machine": machine(), "rows": rows, "side_by_side": side}
    write_json(results / "probe.json", out)
    return out


# --- summary ---------------------------------------------------------------------------------


def setting_folders(results: Path) -> dict[str, Path]:
    own = (
        {p.name: p for p in sorted(results.iterdir()) if (p / "cells").is_dir()}
        if results.is_dir()
        else {}
    )
    return REFERENCES | own


def describe(folder: Path) -> dict:
    """The segmenter setting a folder's cells ran (its ``config.yaml``)."""
    t, m = (s := load_plan(folder / "config.yaml").segment).train, s.model
    return {
        "crop": t.crop_size,
        "batch": t.batch_size,
        "steps": t.steps,
        "lr": t.lr,
        "base": m.base,
        "depth": m.depth,
        "val_every": t.val_every,
    }


def projected_minutes(setting: dict, speed: dict, overhead: float) -> float | None:
    """Steps × this machine's measured s/step (2 threads, bf16) + the measured overhead."""
    for r in speed["rows"]:
        if (r["crop"], r["batch"], r["base"], r["precision"], r["threads"]) == (
            setting["crop"],
            setting["batch"],
            setting["base"],
            "bf16",
            2,
        ):
            return setting["steps"] * r["s_per_step"] / 60 + overhead
    return None


def summarise(results: Path) -> list[dict]:
    speed = read_json(results / "probe.json") if (results / "probe.json").exists() else None
    entries = []
    for name, folder in setting_folders(results).items():
        records = [
            r
            for r in committed_records(folder)
            if r["arm"] == "real" and r["fraction"] in (LOW, HIGH)
        ]
        seeds = sorted(
            {r["seed"] for r in records if r["fraction"] == LOW}
            & {r["seed"] for r in records if r["fraction"] == HIGH}
        )
        if not seeds:
            continue
        records = [r for r in records if r["seed"] in seeds]
        rows = [row for r in records for row in record_rows(r)]
        gap = paired_interval(
            [r for r in rows if r["fraction"] == HIGH],
            [r for r in rows if r["fraction"] == LOW],
            METRICS,
            by_seed=True,
        )
        here = [
            r
            for r in records
            if r.get("machine") == machine()
            and r.get("threads") == 2
            and (name, r["cell"]) not in LOADED
        ]
        entry = {
            "setting": name,
            "folder": str(folder),
            **describe(folder),
            "seeds": seeds,
            "gap": {m: gap[m] for m in METRICS},
            "n_pairs": gap["n"],
        }
        for f in (LOW, HIGH):
            entry[f"aji_{f:.2f}"] = float(
                np.mean([r["mean"]["aji"] for r in records if r["fraction"] == f])
            )
        if here:  # measured: train (steps, validation, post-processing search) + predict
            entry["minutes_measured"] = float(np.mean([sum(r["minutes"].values()) for r in here]))
            entry["cells_measured"] = len(here)
        entries.append(entry)
    if speed:  # what a cell spends beside its steps on this machine, from its quiet cells
        overheads = [
            e["minutes_measured"] - p
            for e in entries
            if "minutes_measured" in e and (p := projected_minutes(e, speed, 0.0)) is not None
        ]
        overhead = float(np.mean(overheads)) if overheads else 0.0
        for e in entries:
            if (p := projected_minutes(e, speed, overhead)) is not None:
                e["minutes_projected"] = p
    for e in entries:  # measured where a quiet cell ran here, else projected
        if "minutes_measured" in e:
            e["minutes"], e["minutes_source"] = (
                e["minutes_measured"],
                f"measured ({e['cells_measured']} cells)",
            )
        elif "minutes_projected" in e:
            e["minutes"], e["minutes_source"] = e["minutes_projected"], "projected from probe.json"
    return sorted(entries, key=lambda e: e.get("minutes", float("inf")))


def choose(entries: list[dict]) -> dict:
    """The cheapest setting meeting the target, else the largest gap per minute on record."""
    ok = [
        e
        for e in entries
        if e.get("minutes", 1e9) <= TARGET_MINUTES
        and len(e["seeds"]) >= 2
        and e["gap"]["aji"]["mean"] >= TARGET_GAP
        and e["gap"]["aji"]["lo"] > 0
    ]
    if ok:
        best = min(ok, key=lambda e: e["minutes"])
        return {"setting": best["setting"], "meets_target": True}
    resolved = [e for e in entries if e["gap"]["aji"]["lo"] > 0 and "minutes" in e]
    best = (
        min(resolved, key=lambda e: e["minutes"])
        if resolved
        else max(entries, key=lambda e: e["gap"]["aji"]["mean"])
    )
    return {"setting": best["setting"], "meets_target": False}


def fmt(g: dict) -> str:
    return f"{g['mean']:+.4f} [{g['lo']:+.4f}, {g['hi']:+.4f}]"


def markdown(entries: list[dict], chosen: dict, speed: dict | None) -> str:
    lines = [
        "# Segmenter budget: minutes per cell against the 100 % − 10 % gap "
        "(Kumar, 14 test images)",
        "",
        f"Target: a cell in ≤ {TARGET_MINUTES:g} min on a native-bf16 2-core CPU with a gap "
        f"≥ {TARGET_GAP} AJI, interval above 0, ≥ 2 seeds. Gap: 100 % − 10 % real, paired by "
        "(test image, seed), mean [95 % interval]. Minutes: train (steps, validation, "
        "post-processing search) + predict 14 images.",
        "",
        "| setting | crop | width | steps | lr | seeds | min / cell, measured | projected | AJI "
        "10 % | AJI 100 % | gap AJI | gap PQ |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        measured = f"{e['minutes_measured']:.1f}" if "minutes_measured" in e else "–"
        projected = f"{e['minutes_projected']:.1f}" if "minutes_projected" in e else "–"
        lines.append(
            f"| {e['setting']} | {e['crop']} | {e['base']} | {e['steps']} | {e['lr']:g} | "
            f"{','.join(map(str, e['seeds']))} | {measured} | {projected} | {e['aji_0.10']:.4f} | "
            f"{e['aji_1.00']:.4f} | {fmt(e['gap']['aji'])} | {fmt(e['gap']['pq'])} |"
        )
    lines += [
        "",
        "Measured: mean over this setting's cells that ran here (2 threads) with the cores to "
        "themselves. Projected: steps × this machine's step time (probe.json) + the overhead "
        "(validation, post-processing search, prediction) measured on those cells; the 256-px "
        "cells ran on other machines. Width: the U-Net's first level (16: 1.9 M parameters).",
        "",
        f"**Chosen: {chosen['setting']}** ("
        + (
            "meets the target"
            if chosen["meets_target"]
            else "no setting meets the whole target: the cheapest with its interval above 0"
        )
        + ").",
    ]
    if speed:
        lines += [
            "",
            f"## Step times ({speed['machine']})",
            "",
            "| crop | batch | base | precision | threads | s / step |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['crop']} | {r['batch']} | {r['base']} | "
            f"{'fp32' if r['precision'] == 'no' else r['precision']} "
            f"| {r['threads']} | {r['s_per_step']:.3f} |"
            for r in speed["rows"]
        ]
        for s in speed["side_by_side"]:
            lines.append(
                f"| {s['crop']} | 8 | 16 | bf16 | 2 processes × 1 | "
                + " and ".join(f"{x:.3f}" for x in s["s_per_step"])
                + " |"
            )
    return "\n".join(lines) + "\n"


def plot(entries: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, e in enumerate(e for e in entries if "minutes" in e):
        g = e["gap"]["aji"]
        projected = "projected" in e["minutes_source"]
        ax.errorbar(
            e["minutes"],
            g["mean"],
            yerr=[[g["mean"] - g["lo"]], [g["hi"] - g["mean"]]],
            fmt="s" if projected else "o",
            mfc="white" if projected else None,
            capsize=3,
        )
        ax.annotate(
            f"{e['setting']} ({len(e['seeds'])} seed{'s' * (len(e['seeds']) > 1)})",
            (e["minutes"], g["mean"]),
            textcoords="offset points",
            xytext=(6, 10 * (i % 3) - 8),
            fontsize=7,
        )
    ax.axhline(TARGET_GAP, ls="--", c="grey", lw=0.8)
    ax.axvline(TARGET_MINUTES, ls="--", c="grey", lw=0.8)
    ax.axhline(0, c="black", lw=0.5)
    ax.set_xlabel("minutes per cell (native-bf16 2-core CPU; open squares: projected)")
    ax.set_ylabel("AJI gap 100 % − 10 % (95 % interval)")
    ax.set_title("Segmenter budget: where labels matter for the fewest minutes")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_summary(results: Path) -> None:
    entries = summarise(results)
    if not entries:
        return
    speed = read_json(results / "probe.json") if (results / "probe.json").exists() else None
    chosen = choose(entries)
    write_json(
        results / "budget.json",
        {
            "target": {"gap_aji": TARGET_GAP, "minutes": TARGET_MINUTES},
            "chosen": chosen,
            "settings": entries,
        },
    )
    write_text(results / "budget.md", markdown(entries, chosen, speed))
    plot(entries, results / "budget.png")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--run",
        nargs="+",
        default=[],
        choices=sorted(SETTINGS),
        metavar="SETTING",
        help=f"run these settings' cells ({', '.join(SETTINGS)})",
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--probe", action="store_true", help="time training steps on this machine")
    ap.add_argument("--summary", action="store_true", help="rebuild budget.{json,md,png}")
    ap.add_argument("--out", type=Path, default=Path("runs/budget"))
    ap.add_argument(
        "--data",
        type=Path,
        nargs="+",
        default=[
            Path("../shared/datasets/monuseg/train"),
            Path("../shared/datasets/monuseg/train-recovered"),
        ],
    )
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one-step-time", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    prepared = args.out / "data"
    if args.one_step_time:  # one process of the side-by-side probe
        set_threads(1)
        print(step_seconds(prepared, args.one_step_time, 8, 16, "bf16"))
        return
    set_threads(args.threads)
    if args.probe:
        probe(prepared, args.results)
    for name in args.run:
        if not (args.out / name / "data").exists() and prepared.exists():
            (args.out / name).mkdir(parents=True, exist_ok=True)
            os.symlink(prepared.resolve(), args.out / name / "data")  # one prepared folder for all
        run_setting(name, args.seeds, args.out, args.data, args.results)
        write_summary(args.results)
    if args.summary or args.probe:
        write_summary(args.results)


if __name__ == "__main__":
    main()
