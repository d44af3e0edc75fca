"""Image models painting at half against full resolution, on the same labels (issue 38 §2).

Each image model paints ``-n`` pairs on the same label windows (the labeled subset's own labels
with real nuclei pasted in: ``synthesis.structures: copypaste``, seed fixed, no filter), then
``nudiff quality`` measures the pairs against held-out real images with a real-trained
segmenter: C2ST (at full resolution, and at the model's scale), colour W1, Laplacian ratio,
H-visible nuclei, KID, label fidelity (PQ; unlabeled-nucleus and missed-label rates), each with
its real-vs-real floor. Rows have the form of ``results/image-model/curve.json``. With
``--guidance NAME=S`` a row samples its model at guidance scale S (the lever table of issue 38:
``--results benchmarks/results/image-levers``).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/image_resolution.py \\
        --models half=models/kumar-f0.10/image full=runs/img-s1 \\
        --subset runs/demo/diffusion/f0.10/subset --real runs/demo/data/val \\
        --segmenter runs/demo/cells/f1.00_real_s0 -n 128 --minutes full=31.5

Writes image_resolution.{json,md,png} under --results (default
benchmarks/results/image-resolution); the pairs and quality pages under --out.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from nudiff.utils import read_json, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
# (quality.json key, column): every row's measures, each beside its real-vs-real floor
COLUMNS = (
    ("c2st_accuracy", "C2ST"),
    ("colour_w1_mean", "colour W1"),
    ("laplacian_variance_ratio", "Laplacian ratio"),
    ("visible_fraction", "H-visible"),
    ("h_unlabeled_rate", "H blobs unlabeled"),
    ("kid", "KID"),
    ("fidelity_pq", "fidelity PQ"),
    ("fidelity_unlabeled_rate", "unlabeled rate"),
    ("fidelity_missed_rate", "missed rate"),
)
TARGETS = {
    "C2ST": "≤ 0.80",
    "colour W1": "≤ 0.5",
    "unlabeled-nucleus rates": "≤ 1.5 × real",
}


def _pairs(name: str, model: Path, args: argparse.Namespace) -> Path:
    """The model's pairs on the shared label windows (made unless there)."""
    out = args.out / name / "pairs"
    if (out / "manifest.json").exists():
        return out
    synthesis = yaml.safe_load(args.config.read_text()).get("synthesis", {})
    synthesis.pop("filter", None)  # every pair, the same windows for every model
    if name in args.sizes:  # window side in model pixels (default: the model's patch_size)
        synthesis["size"] = args.sizes[name]
    if name in args.guidance:  # the model's own sampler at another guidance scale
        synthesis["image_sample"] = {
            "sampler": "dpmsolver++",
            "steps": 20,
            "guidance_scale": args.guidance[name],
            "clip_x0": True,
        }
    config = args.out / f"synthesis-{name}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump({"synthesis": synthesis}))
    _run(
        [
            "synthesize",
            "--image-model",
            str(model),
            "--structures",
            "copypaste",
            "--real",
            str(args.subset),
            "-n",
            str(args.n),
            "--seed",
            "0",
            "--config",
            str(config),
            "--out",
            str(out),
        ]
    )
    return out


def _quality(name: str, pairs: Path, args: argparse.Namespace) -> dict:
    out = args.out / name / "quality"
    if not (out / "quality.json").exists():
        _run(
            [
                "quality",
                "--synthetic",
                str(pairs),
                "--real",
                str(args.real),
                "--segmenter",
                str(args.segmenter),
                "--out",
                str(out),
                "--threads",
                str(args.threads),
            ]
        )
    return read_json(out / "quality.json")


def _run(argv: list[str]) -> None:
    subprocess.run([str(Path(sys.executable).with_name("nudiff")), *argv], check=True)


def _row(
    name: str, model: Path, quality: dict, minutes: dict[str, float], guidance: float | None
) -> dict:
    folder = model / "model" if (model / "model").is_dir() else model
    config = yaml.safe_load((folder / "config.yaml").read_text())
    sample = config["config"].get("sample", {})
    return {
        "setting": name,
        "model": str(model),
        "guidance_scale": guidance if guidance is not None else sample.get("guidance_scale"),
        "scale": config["config"]["data"]["scale"],
        "window_px": quality.get("window"),
        "steps": config["info"].get("step"),
        "minutes": minutes.get(name),
        "c2st_accuracy_at_scale": quality.get("c2st_accuracy_at_scale"),
        **{k: quality.get(k) for k, _ in COLUMNS},
        "floors": {k: quality.get(f"{k}_floor") for k, _ in COLUMNS},
    }


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _markdown(rows: list[dict], args: argparse.Namespace) -> str:
    """One row per model, then the real-vs-real floor at each window size the rows used."""
    head = ["image model", "scale", "window px", "steps", "guidance", "train min"]
    head.append("C2ST at its scale")
    lines = [
        "| " + " | ".join(head + [c for _, c in COLUMNS]) + " |",
        "|" + "---|" * (len(head) + len(COLUMNS)),
    ]
    for r in rows:
        cells = [
            r["setting"],
            str(r["scale"]),
            str(r["window_px"]),
            str(r["steps"]),
            str(r.get("guidance_scale")),
            _fmt(r["minutes"]),
            _fmt(r["c2st_accuracy_at_scale"]),
        ]
        lines.append("| " + " | ".join(cells + [_fmt(r[k]) for k, _ in COLUMNS]) + " |")
    for window in sorted({r["window_px"] for r in rows}):
        floors = next(r["floors"] for r in rows if r["window_px"] == window)
        cells = [f"real vs real ({window}-px windows)", "", str(window), "", "", "", ""]
        lines.append("| " + " | ".join(cells + [_fmt(floors[k]) for k, _ in COLUMNS]) + " |")
    targets = ", ".join(f"{k} {v}" for k, v in TARGETS.items())
    return (
        f"{args.n} pairs per model on the same label windows (copy-paste labels of "
        f"`{args.subset}`, seed 0, no filter) against `{args.real}`; segmenter "
        f"`{args.segmenter}`. Targets (issue 38): {targets}.\n\n" + "\n".join(lines) + "\n"
    )


def _picture(names: list[str], args: argparse.Namespace, k: int = 4) -> None:
    """The first ``k`` pairs' images of every model, one row each (same labels per column)."""
    from nudiff.data.io import read_image, write_image

    rows = []
    for name in names:
        images = sorted((args.out / name / "pairs" / "images").glob("*.png"))[:k]
        tiles = [read_image(p)[:128, :128] for p in images]
        side = 128
        tiles = [
            np.pad(
                t, ((0, side - t.shape[0]), (0, side - t.shape[1]), (0, 0)), constant_values=255
            )
            for t in tiles
        ]
        rows.append(np.concatenate(tiles, axis=1))
    write_image(args.results / "image_resolution.png", np.concatenate(rows, axis=0))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", required=True, help="NAME=RUN_OR_MODEL_DIR ...")
    p.add_argument("--subset", type=Path, required=True, help="the labeled subset (paired folder)")
    p.add_argument("--real", type=Path, required=True, help="held-out real images (paired folder)")
    p.add_argument("--segmenter", type=Path, required=True, help="a real-trained segmenter run")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    p.add_argument("-n", type=int, default=128)
    p.add_argument("--minutes", nargs="*", default=[], help="NAME=training minutes")
    p.add_argument(
        "--sizes", nargs="*", default=[], help="NAME=window side in model pixels (synthesis.size)"
    )
    p.add_argument(
        "--guidance", nargs="*", default=[], help="NAME=guidance scale s (default: the model's)"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "image-resolution")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks/results/image-resolution")
    args = p.parse_args(argv)
    models = dict(m.split("=", 1) for m in args.models)
    minutes = {k: float(v) for k, v in (m.split("=", 1) for m in args.minutes)}
    args.sizes = {k: int(v) for k, v in (m.split("=", 1) for m in args.sizes)}
    args.guidance = {k: float(v) for k, v in (m.split("=", 1) for m in args.guidance)}
    rows = []
    for name, model in models.items():
        quality = _quality(name, _pairs(name, Path(model), args), args)
        rows.append(_row(name, Path(model), quality, minutes, args.guidance.get(name)))
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / "image_resolution.json", {"entries": rows})
    write_text(args.results / "image_resolution.md", _markdown(rows, args))
    _picture(list(models), args)
    print((args.results / "image_resolution.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
