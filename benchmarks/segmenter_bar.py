"""The segmenter bar: the CPU configuration trained on MoNuSeg for a time budget.

The bar (the segmenter's stated target): a 1.9 M-parameter U-Net with NP + HV heads, bf16,
batch 8 of 256-px crops, ``HoVerNetLoss``, ~25 min (~3,900 steps on 2 cores) reaches Dice 0.80 /
AJI 0.62 / PQ 0.59 on unseen MoNuSeg images when trained on all training images.

What this script does:

1. Splits the 30 annotated MoNuSeg images: ``--test`` images from ``train/`` (exact XML
   labels) are held out for the final score, ``--val`` more from ``train/`` for model
   selection (0: no selection, the final weights), the rest (both folders) train.
2. Measures the speed of full training steps (sampling, augmentation, forward, backward)
   and of the network alone for ``--measure-seconds`` and turns ``--minutes`` into a number
   of steps (``--steps`` overrides).
3. Trains with ``nudiff.segment.train.train_segmenter`` and scores the held-out images
   (whole 1000-px images, tiled inference, ``nudiff.structure.decode``), mean over images.

    .venv/bin/python benchmarks/segmenter_bar.py --minutes 25
    .venv/bin/python benchmarks/segmenter_bar.py --measure-only --measure-seconds 60

Writes benchmarks/results/segmenter_bar.{json,md} (``--measure-only``: segmenter_speed.*).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from nudiff.config import load_config, to_dict
from nudiff.metrics import METRICS, instance_metrics, mean_metrics
from nudiff.model_folder import read_info
from nudiff.segment.config import SegmentConfig
from nudiff.utils import write_json, write_text

RESULTS = Path(__file__).parent / "results"
BAR = {"dice": 0.80, "aji": 0.62, "pq": 0.59}


def split(samples, n_test: int, n_val: int, seed: int):
    """(train, val, test) by name; test and val come from the exactly-labelled ``train/``."""
    exact = sorted(s.name for s in samples if Path(s.source).name == "train")
    order = [exact[i] for i in np.random.default_rng(seed).permutation(len(exact))]
    test, val = set(order[:n_test]), set(order[n_test : n_test + n_val])

    def pick(names: set[str]) -> list:
        return [s for s in samples if s.name in names]

    return (
        pick(set(exact) - test - val) + [s for s in samples if s.name not in exact],
        pick(val),
        pick(test),
    )


def measure_speed(cfg: SegmentConfig, samples, seconds: float) -> dict:
    """Steps/s of full training steps and of the network alone (same batch, no sampling)."""
    from nudiff.segment.augment import color_augment
    from nudiff.segment.loss import HoVerNetLossParts, structure_targets
    from nudiff.segment.model import build_segmenter, image_to_tensor
    from nudiff.segment.train import choose_items, make_batch, sample_areas
    from nudiff.utils import make_accelerator

    accelerator = make_accelerator(cfg.train.precision)
    model = build_segmenter(cfg).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    model, opt = accelerator.prepare(model, opt)
    loss_fn = HoVerNetLossParts()
    rng = np.random.default_rng(0)
    pools, areas = {"real": samples}, sample_areas(samples)

    def batch():
        items = choose_items(rng, cfg.train.batch_size, areas, None, 1.0)
        images, structures = make_batch(pools, items, cfg, rng)
        x = color_augment(image_to_tensor(images), rng, cfg.augment)
        return x.contiguous(memory_format=torch.channels_last), structure_targets(
            torch.from_numpy(structures)
        )

    def step(x, target):
        with accelerator.autocast():
            pred = model(x)
        loss = sum(loss_fn.parts(pred, target).values())
        opt.zero_grad()
        accelerator.backward(loss)
        opt.step()

    fixed = batch()
    for _ in range(2):  # warm-up
        step(*fixed)
    result = {}
    for mode in ("full", "network"):
        n, data_s, t0 = 0, 0.0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 2:
            td = time.perf_counter()
            x, target = batch() if mode == "full" else fixed
            data_s += time.perf_counter() - td
            step(x, target)
            n += 1
        wall = time.perf_counter() - t0
        result[f"{mode}_steps_per_s"] = n / wall
        if mode == "full":
            result["data_fraction"] = data_s / wall
    return result


def evaluate(run: Path, test) -> dict:
    from nudiff.segment.predict import load_segmenter, predict_with_config

    model, cfg = load_segmenter(run)
    per_image, t0 = {}, time.perf_counter()
    for s in test:
        pred, _ = predict_with_config(model, cfg, s.image)
        per_image[s.name] = instance_metrics(s.instance_map, pred)
    return {
        "per_image": per_image,
        "mean": mean_metrics(per_image),
        "seconds_per_image": (time.perf_counter() - t0) / max(1, len(test)),
    }


def markdown(report: dict) -> str:
    speed = report["speed"]
    lines = [
        "# Segmenter bar (CPU configuration on MoNuSeg)"
        if "metrics" in report
        else "# Segmenter training speed (CPU configuration, MoNuSeg crops)",
        "",
        (
            f"Machine: {report['machine']}; torch threads {report['threads']}; "
            f"load average at start {report['load_average']}."
        ),
        "",
        (
            f"- speed (batch {report['config']['train']['batch_size']} x "
            f"{report['config']['train']['crop_size']} px, "
            f"{report['config']['train']['precision']}): full step "
            f"{speed['full_steps_per_s']:.2f} steps/s "
            f"(data + augmentation {speed['data_fraction']:.0%} of it), network only "
            f"{speed['network_steps_per_s']:.2f} steps/s"
        ),
    ]
    if "metrics" in report:
        m = report["metrics"]["mean"]
        lines += [
            (
                f"- trained {report['steps']} steps in {report['train_minutes']:.1f} min on "
                f"{report['n_train']} images "
                f"(validation: {report['n_val']}, model selection on val PQ); tested on "
                f"{report['n_test']} unseen "
                f"images ({', '.join(report['test_names'])}), "
                f"{report['metrics']['seconds_per_image']:.1f} s/image"
            ),
            (
                "- post-processing chosen on the validation images: "
                f"{(report.get('post_tuning') or {}).get('chosen') or 'defaults'}"
            ),
            "",
            "| | " + " | ".join(METRICS) + " |",
            "|---|" + "---|" * len(METRICS),
            "| this run | " + " | ".join(f"{m[k]:.4f}" for k in METRICS) + " |",
            "| bar | " + " | ".join(f"{BAR[k]:.2f}" if k in BAR else "" for k in METRICS) + " |",
            "",
            "Per image:",
            "",
            "| image | " + " | ".join(METRICS) + " |",
            "|---|" + "---|" * len(METRICS),
        ]
        for name, r in report["metrics"]["per_image"].items():
            lines.append(f"| {name} | " + " | ".join(f"{r[k]:.4f}" for k in METRICS) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/monuseg"))
    ap.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML with a `segment` section (default: CPU defaults)",
    )
    ap.add_argument("--minutes", type=float, default=25.0, help="training budget")
    ap.add_argument(
        "--steps", type=int, default=None, help="fixed number of steps instead of --minutes"
    )
    ap.add_argument("--test", type=int, default=5, help="held-out test images (from train/)")
    ap.add_argument(
        "--val", type=int, default=2, help="validation images for model selection (0: none)"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of the split (and of training)")
    ap.add_argument(
        "--train-seed", type=int, default=None, help="seed of training (default: --seed)"
    )
    ap.add_argument("--measure-seconds", type=float, default=60.0)
    ap.add_argument("--measure-only", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench/segmenter_bar"))
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the json/md reports go")
    ap.add_argument("--name", default="segmenter_bar", help="report file name (without suffix)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from nudiff.data.dataset import load_folders
    from nudiff.segment.train import train_segmenter

    cfg = load_config(SegmentConfig, args.config, section="segment")
    cfg.train.seed = args.seed if args.train_seed is None else args.train_seed
    samples = load_folders([args.data / "train", args.data / "train-recovered"], progress=False)
    train, val, test = split(samples, args.test, args.val, args.seed)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "config": to_dict(cfg),
        "speed": measure_speed(cfg, train, args.measure_seconds),
    }
    print(report["speed"])
    if args.measure_only:
        write_json(args.results / "segmenter_speed.json", report)
        write_text(args.results / "segmenter_speed.md", markdown(report))
        return
    # validation runs every val_every steps: leave ~5% of the budget for it
    cfg.train.steps = args.steps or int(
        args.minutes * 60 * report["speed"]["full_steps_per_s"] * 0.95
    )
    cfg.train.val_every = cfg.train.checkpoint_every = max(1, cfg.train.steps // 5)
    t0 = time.perf_counter()
    run = train_segmenter(
        cfg, args.out, train, None, val or None, resume=(args.out / "checkpoints").exists()
    )
    report |= {
        "steps": cfg.train.steps,
        "train_minutes": (time.perf_counter() - t0) / 60,
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "test_names": [s.name for s in test],
        "config": to_dict(cfg),
        "post_tuning": read_info(run / "model").get("post_tuning"),
    }
    report["metrics"] = evaluate(run, test)
    report["bar"] = BAR
    write_json(args.results / f"{args.name}.json", report)
    write_text(args.results / f"{args.name}.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
