"""The default CPU configuration end to end, timed: train both diffusion models with
configs/cpu.yaml on the 10 % subset, synthesize 256 pairs, plus an fp32 twin of the structure
model's first steps (same LR schedule) to compare its loss curve with bf16.

    .venv/bin/python benchmarks/cpu_config.py --data runs/demo/data \
--out runs/cpu [--ab-steps 1000]

Needs a prepared data folder (`nudiff data prepare ...`). Resumable: finished stages are skipped.
Writes benchmarks/results/cpu_config.{json,md} and bf16_vs_fp32_loss.png.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from nudiff.utils import read_json, write_json, write_text

RESULTS = Path(__file__).parent / "results"
NUDIFF = [sys.executable, "-m", "nudiff.cli"]


def run(cmd: list[str], done: Path, timings: dict, key: str, path: Path) -> None:
    if done.exists() and key in timings:
        return
    t = time.time()
    print(">>", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    timings[key] = round(time.time() - t, 1)
    write_json(path, timings)


def losses(log: Path, until: int) -> tuple[np.ndarray, np.ndarray]:
    rows = [r for r in csv.DictReader(log.open()) if int(r["step"]) <= until]
    return np.array([int(r["step"]) for r in rows]), np.array([float(r["loss"]) for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("runs/demo/data"))
    ap.add_argument("--out", type=Path, default=Path("runs/cpu"))
    ap.add_argument("--config", type=Path, default=Path("configs/cpu.yaml"))
    ap.add_argument("--ab-steps", type=int, default=1000)
    ap.add_argument("-n", type=int, default=256)
    args = ap.parse_args()
    out = args.out
    tpath = out / "timings.json"
    timings = read_json(tpath) if tpath.exists() else {}
    common = ["--config", str(args.config), "--data", str(args.data), "--fraction", "0.1"]
    for kind in ("structure", "image"):
        run(
            NUDIFF
            + ["train", kind, *common, "--out", str(out / kind)]
            + (["--resume"] if (out / kind / "checkpoints").exists() else []),
            out / kind / "model",
            timings,
            f"train_{kind}_s",
            tpath,
        )
    run(
        NUDIFF
        + [
            "synthesize",
            "--structure-model",
            str(out / "structure"),
            "--image-model",
            str(out / "image"),
            "--config",
            str(args.config),
            "-n",
            str(args.n),
            "--seed",
            "0",
            "--out",
            str(out / "synthetic"),
            "--real",
            str(args.data / "val"),
        ],
        out / "synthetic" / "mosaic.png",
        timings,
        "synthesize_s",
        tpath,
    )
    run(
        NUDIFF
        + [
            "train",
            "structure",
            *common,
            "--out",
            str(out / "structure_fp32"),
            "--precision",
            "no",
            "--stop-at-step",
            str(args.ab_steps),
        ]
        + (["--resume"] if (out / "structure_fp32" / "checkpoints").exists() else []),
        out / "structure_fp32" / "model",
        timings,
        f"train_structure_fp32_{args.ab_steps}_steps_s",
        tpath,
    )

    s_bf, l_bf = losses(out / "structure" / "train_log.csv", args.ab_steps)
    s_fp, l_fp = losses(out / "structure_fp32" / "train_log.csv", args.ab_steps)
    tail = slice(-max(1, len(l_bf) // 5), None)  # last 20 % of the compared window
    result = {
        "config": str(args.config),
        "timings_s": timings,
        "n_pairs": args.n,
        "synthesis_manifest": {
            k: v
            for k, v in read_json(out / "synthetic" / "manifest.json").items()
            if k not in ("samples", "rejected")
        },
        "ab_steps": args.ab_steps,
        "loss_last20pct_bf16": float(np.mean(l_bf[tail])),
        "loss_last20pct_fp32": float(np.mean(l_fp[tail])),
        "fp32_s_per_step": timings[f"train_structure_fp32_{args.ab_steps}_steps_s"]
        / args.ab_steps,
    }
    write_json(RESULTS / "cpu_config.json", result)
    _plot(s_bf, l_bf, s_fp, l_fp, RESULTS / "bf16_vs_fp32_loss.png")
    m = result["synthesis_manifest"]
    write_text(
        RESULTS / "cpu_config.md",
        "\n".join(
            [
                "# configs/cpu.yaml end to end on this 2-core CPU (10 % subset)",
                "",
                "| stage | minutes |",
                "|---|---|",
                *[f"| {k} | {v / 60:.1f} |" for k, v in timings.items()],
                "",
                f"Synthesis: {m['n_accepted']} pairs accepted, {m['n_rejected']} structures "
                f"rejected {m['rejected_by_reason']}.",
                "",
                f"bf16 vs fp32 (structure model, first {args.ab_steps} steps of the same "
                "schedule): mean loss over the "
                f"last 20 % of the window {result['loss_last20pct_bf16']:.4f} (bf16) vs "
                f"{result['loss_last20pct_fp32']:.4f} (fp32).",
                "",
                "![loss](bf16_vs_fp32_loss.png)",
                "",
            ]
        ),
    )


def _plot(s_bf, l_bf, s_fp, l_fp, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def smooth(x, k=10):
        return np.convolve(x, np.ones(k) / k, mode="valid") if len(x) > k else x

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(s_bf[: len(smooth(l_bf))], smooth(l_bf), label="bf16 autocast")
    ax.plot(s_fp[: len(smooth(l_fp))], smooth(l_fp), label="fp32")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (eps MSE, smoothed)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Structure model, configs/cpu.yaml")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
