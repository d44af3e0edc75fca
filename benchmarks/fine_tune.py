"""`nudiff augment`: fine-tune the shipped image model, or train one from scratch? (issue 36)

A researcher's case the shipped Kumar 10 % models have not seen: organs outside Kumar's training
set. Of Kumar's 6 other-organ test images (bladder, colon, stomach), ``--user`` (default the
first two by name: one colon, one bladder) are the user's labeled images; the other four (one
bladder, one colon, two stomach) are the ``--test`` folder. Each setting runs the whole
``nudiff augment`` chain (``configs/augment.yaml``: 512 pairs painted on the user's labels, the
256 the real-only segmenter reproduces best kept, 128-px x 3,000-step segmenters):

- ``scratch``: the image model trained on the user's images from scratch (1,000 steps);
- ``fine-N``: ``--from models/kumar-f0.10``, fine-tuned for N steps (warm-up 50).

The real-only segmenter and the prepared data are the same in every setting (same images,
config and seed): the settings after the first link the first one's instead of retraining them.
Per setting: the minutes of the image model, the pairs and the real + pairs segmenter; the
pairs' realism against the test images (``nudiff quality``: C2ST, colour W1, Laplacian ratio,
H-visible nuclei, KID, each beside its real-vs-real floor); and the segmenter's gain over
real-only on the 4 test images (one seed: paired by image, 95 % interval).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/fine_tune.py --settings scratch fine-250

Writes ``fine_tune.{json,md}`` under --results (default benchmarks/results/fine-tune); the runs
under --out (default runs/fine-tune).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from nudiff.data.dataset import find_pairs
from nudiff.experiment import Cell, RunLayout, paired_interval
from nudiff.utils import read_json, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
KUMAR = ROOT.parent / "shared" / "datasets" / "monuseg"
SHIPPED = ROOT / "models" / "kumar-f0.10"
REAL, AUGMENTED = Cell(1.0, "real", 0), Cell(1.0, "real+syn", 0)
QUALITY = (
    ("c2st_accuracy", "C2ST"),
    ("colour_w1_mean", "colour W1"),
    ("laplacian_variance_ratio", "Laplacian ratio"),
    ("visible_fraction", "H-visible"),
    ("kid", "KID"),
)


SETTINGS = ("scratch", "fine-250", "fine-1000")


def _order(name: str) -> tuple[int, int]:
    return (0, 0) if name == "scratch" else (1, int(name.removeprefix("fine-")))


def settings_args(name: str) -> list[str]:
    """``nudiff augment`` options of a setting (``scratch`` | ``fine-N``)."""
    if name == "scratch":
        return ["--scratch"]
    steps = int(name.removeprefix("fine-"))
    return [
        "--from",
        str(SHIPPED),
        "--set",
        f"image.train.steps={steps}",
        "--set",
        f"image.train.warmup_steps={min(50, steps // 4)}",
    ]


def write_folders(out: Path, user: list[str]) -> tuple[Path, Path]:
    """``out/user`` and ``out/test``: links to the other-organ images and their labels."""
    split = read_json(KUMAR / "kumar_split.json")
    names = sorted(split["test_different_organ"])
    for name in names:
        source = KUMAR / split["folder"][name]
        pair = next(p for p in find_pairs(source) if p.name == name)
        for src, sub in ((pair.image_path, "images"), (pair.label_path, "labels")):
            dst = out / ("user" if name in user else "test") / sub / src.name
            if not dst.is_symlink():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(src.resolve(), dst)
    return out / "user", out / "test"


def share_real_cell(first: Path, run: Path) -> None:
    """Link the first setting's prepared data and real-only cell into another setting's run."""
    for rel in (Path("data"), RunLayout(Path()).cell(REAL)):
        target, link = first / "run" / rel, run / "run" / rel
        if target.exists() and not (link.exists() or link.is_symlink()):
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target.resolve(), link)


def _nudiff(argv: list[str]) -> None:
    subprocess.run([str(Path(sys.executable).with_name("nudiff")), *argv], check=True)


def run_setting(name: str, user: Path, test: Path, out: Path, first: Path | None) -> Path:
    folder = out / name
    if first is not None:
        if not (first / "segmenter-real-only").is_dir():
            raise SystemExit(
                f"{first}: run the scratch setting first (its real-only cell is shared)"
            )
        share_real_cell(first, folder)
    _nudiff(
        ["augment", str(user), "--test", str(test), "--out", str(folder), *settings_args(name)]
    )
    return folder


def quality(folder: Path, test: Path) -> dict:
    q = folder / "quality"
    if not (q / "quality.json").exists():
        _nudiff(
            [
                "quality",
                "--synthetic",
                str(folder / "pairs"),
                "--real",
                str(test),
                "--segmenter",
                str(folder / "segmenter-real-only"),
                "--out",
                str(q),
            ]
        )
    return read_json(q / "quality.json")


def row(name: str, folder: Path, test: Path) -> dict:
    run = RunLayout(folder / "run")
    timings = read_json(run.root / "timings.json")
    rows = {}
    for cell in (REAL, AUGMENTED):
        metrics = read_json(run.metrics(cell))["per_image"]
        rows[cell.arm] = [{"seed": 0, "image": i} | m for i, m in metrics.items()]
    gain = paired_interval(rows["real+syn"], rows["real"], ("aji", "pq"))
    q = quality(folder, test)
    minutes = {
        "image_model": timings.get("f1.00/train_image", 0.0) / 60,
        "pairs": timings.get("f1.00/synthesize", 0.0) / 60,
        "segmenter": sum(v for k, v in timings.items() if "real+syn" in k) / 60,
    }
    return {
        "setting": name,
        "minutes": {k: round(v, 1) for k, v in minutes.items()},
        "aji_real": _mean(rows["real"], "aji"),
        "aji": _mean(rows["real+syn"], "aji"),
        "gain": {m: gain[m] for m in ("aji", "pq")},
        "quality": {k: q.get(k) for k, _ in QUALITY},
        "floors": {k: q.get(f"{k}_floor") for k, _ in QUALITY},
    }


def _mean(rows: list[dict], metric: str) -> float:
    return sum(float(r[metric]) for r in rows) / len(rows)


def markdown(rows: list[dict], user: list[str]) -> str:
    lines = [
        "# `nudiff augment`: fine-tune the shipped image model or train from scratch",
        "",
        f"User's labels: {', '.join(user)} (organs the shipped Kumar models have not seen); "
        "scored on the other 4 other-organ test images. Minutes: native-bf16 2-core CPU, "
        "2 threads. Gain: real + pairs − real-only, paired by test image (4 images, one seed), "
        "95 % interval. Realism: `nudiff quality` of the kept pairs against the 4 test images.",
        "",
        "| setting | image model min | pairs min | segmenter min | AJI real-only | AJI real + "
        "pairs | Δ AJI | Δ PQ | " + " | ".join(c for _, c in QUALITY) + " |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(QUALITY),
    ]
    for r in rows:
        g, m = r["gain"], r["minutes"]
        cis = [
            f"{g[k]['mean']:+.4f} [{g[k]['lo']:+.4f}, {g[k]['hi']:+.4f}]" for k in ("aji", "pq")
        ]
        qs = [_fmt(r["quality"][k]) for k, _ in QUALITY]
        lines.append(
            f"| {r['setting']} | {m['image_model']} | {m['pairs']} | {m['segmenter']} | "
            f"{r['aji_real']:.4f} | {r['aji']:.4f} | {cis[0]} | {cis[1]} | "
            + " | ".join(qs)
            + " |"
        )
    if rows:
        floors = [_fmt(rows[0]["floors"][k]) for k, _ in QUALITY]
        lines.append("| real vs real |  |  |  |  |  |  |  | " + " | ".join(floors) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS))
    ap.add_argument("--user", nargs="+", default=None, help="the user's image names")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "fine-tune")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks/results/fine-tune")
    args = ap.parse_args()
    names = sorted(read_json(KUMAR / "kumar_split.json")["test_different_organ"])
    user_names = args.user or names[:2]
    user, test = write_folders(args.out, user_names)
    first = args.out / "scratch"  # whose real-only cell the others link (run first)
    for name in args.settings:
        run_setting(name, user, test, args.out, None if name == "scratch" else first)
        rows = [  # every setting finished so far, in the default order
            row(n, args.out / n, test)
            for n in sorted({*args.settings, *SETTINGS}, key=_order)
            if (args.out / n / "segmenter").is_dir()
        ]
        write_json(args.results / "fine_tune.json", {"user": user_names, "rows": rows})
        write_text(args.results / "fine_tune.md", markdown(rows, user_names))
        print(markdown(rows, user_names))


if __name__ == "__main__":
    main()
