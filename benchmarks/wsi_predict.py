"""Whole-slide prediction: seam check, throughput and peak memory on synthetic slides.

A synthetic slide is a mosaic of MoNuSeg training images (1000 px, ~0.25 µm/px) on white
glass (a 512-px border), written as a tiled pyramidal TIFF (3 levels) with tifffile.

1. **Seam check**: ``nudiff segment predict --slide --roi <mosaic>`` (1024-px tiles, 128-px
   margin) stitched back into one instance map, against ``predict_with_config`` on the same
   mosaic as one image. Instances are matched at IoU > 0.5 (DQ = 2 TP / (n_tiled + n_whole));
   the goal is >= 99 %.
2. **Throughput and memory**: whole-slide runs (tissue mask on) of the small and of a larger
   mosaic, each in its own process (``wsi.json``: seconds, tissue megapixels, peak RSS):
   megapixels of tissue per minute, and whether peak memory stays flat as the slide grows.
   Then a rerun of the large slide (resume: every tile is already saved).
3. A picture: the small slide's low-resolution overlay beside a full-resolution crop across a
   tile corner (tile borders in yellow).

    .venv/bin/python benchmarks/wsi_predict.py --model runs/wsi/seg --out runs/wsi/bench

Writes benchmarks/results/wsi_predict.{json,md} and wsi_predict_region.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from nudiff.utils import write_json, write_text

RESULTS = Path(__file__).parent / "results"
BORDER = 512
MPP = 0.25


def mosaic(images: list[Path], cols: int, rows: int) -> np.ndarray:
    """MoNuSeg images tiled cols x rows (cycled), on white glass: uint8 (H, W, 3)."""
    from nudiff.data.io import read_image

    tiles = [read_image(images[i % len(images)]) for i in range(cols * rows)]
    h, w = tiles[0].shape[:2]
    out = np.full((rows * h + 2 * BORDER, cols * w + 2 * BORDER, 3), 240, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[BORDER + r * h : BORDER + (r + 1) * h, BORDER + c * w : BORDER + (c + 1) * w] = t[
            :h, :w
        ]
    return out


def predict(model: Path, slide: Path, out: Path, threads: int, *extra: str) -> dict:
    """``nudiff segment predict --slide`` in its own process; its wsi.json plus wall time."""
    cmd = [
        sys.executable,
        "-m",
        "nudiff.cli",
        "segment",
        "predict",
        "--model",
        str(model),
        "--slide",
        str(slide),
        "--out",
        str(out),
        "--threads",
        str(threads),
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    summary = json.loads((out / "wsi.json").read_text())
    summary["wall_seconds"] = round(time.perf_counter() - start, 1)
    return summary


def one_image(model: Path, slide: Path, roi: tuple[int, ...], save: Path, threads: int) -> dict:
    """The ROI predicted as one image, in its own process; instance map saved to ``save``."""
    cmd = [
        sys.executable,
        __file__,
        "--one-image",
        str(slide),
        "--roi",
        ",".join(map(str, roi)),
        "--model",
        str(model),
        "--save",
        str(save),
        "--threads",
        str(threads),
    ]
    done = subprocess.run(
        cmd,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _one_image_child(args: argparse.Namespace) -> None:
    from nudiff.data.slide import open_slide
    from nudiff.segment.predict import load_segmenter, predict_with_config
    from nudiff.segment.wsi import peak_rss_mib
    from nudiff.utils import set_threads

    set_threads(args.threads)
    model, cfg = load_segmenter(args.model)
    with open_slide(args.one_image) as view:
        image = view.read(*map(int, args.roi.split(",")))
    start = time.perf_counter()
    inst = predict_with_config(model, cfg, image)[0]
    seconds = time.perf_counter() - start
    np.save(args.save, inst)
    print(json.dumps({"seconds": round(seconds, 1), "peak_rss_mib": peak_rss_mib()}))


def match(whole: np.ndarray, tiled: np.ndarray) -> dict:
    """Instances matched at IoU > 0.5: counts, DQ (F1 of the matching), SQ (mean IoU)."""
    from nudiff.metrics import panoptic_quality

    n_whole, n_tiled = len(np.unique(whole)) - 1, len(np.unique(tiled)) - 1
    _, dq, sq = panoptic_quality(whole, tiled)
    tp = round(dq * (n_whole + n_tiled) / 2)
    return {
        "n_whole": n_whole,
        "n_tiled": n_tiled,
        "matched": tp,
        "dq": round(dq, 5),
        "sq": round(sq, 5),
        "matched_of_whole": round(tp / max(1, n_whole), 5),
        "matched_of_tiled": round(tp / max(1, n_tiled), 5),
    }


def picture(
    slide_img: np.ndarray, tiled: np.ndarray, overview: Path, roi, tile: int
) -> np.ndarray:
    """Overview overlay (left) and a 640-px crop across a tile corner with tile borders."""
    from nudiff.pictures import overlay

    x0, y0 = roi[0], roi[1]
    cx, cy = tile, tile  # a tile corner, in region coordinates
    half = 320
    crop_img = slide_img[y0 + cy - half : y0 + cy + half, x0 + cx - half : x0 + cx + half]
    crop = overlay(crop_img, tiled[cy - half : cy + half, cx - half : cx + half])
    crop[half, :] = crop[:, half] = (255, 220, 0)
    ov = Image.open(overview).convert("RGB")
    ov = np.asarray(ov.resize((round(ov.width * 640 / ov.height), 640), Image.Resampling.BOX))
    gap = np.full((640, 8, 3), 255, np.uint8)
    return np.concatenate([ov, gap, crop], axis=1)


def save_small_png(path: Path, image: np.ndarray, colours: int = 128) -> None:
    """RGB uint8 (H, W, 3) as an adaptive-palette PNG (a committed picture stays < 1 MB)."""
    from nudiff.utils import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(image).quantize(colours, dither=Image.Dither.NONE).save(tmp, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", type=Path, required=True, help="a trained segmenter run")
    ap.add_argument("--data", type=Path, default=Path("../shared/datasets/monuseg/train/images"))
    ap.add_argument("--out", type=Path, default=Path("runs/wsi/bench"))
    ap.add_argument("--small", default="3x2", help="mosaic COLSxROWS of the seam check")
    ap.add_argument("--large", default="5x4", help="mosaic of the memory check")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one-image", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--roi", help=argparse.SUPPRESS)
    ap.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_image:
        return _one_image_child(args)
    from nudiff.data.slide import write_pyramid
    from nudiff.segment.wsi import stitch_instance_map

    images = sorted(args.data.glob("*.png"))
    for old in ("seam", "whole_small", "whole_large"):  # timings need a fresh start
        shutil.rmtree(args.out / old, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    slides = {}
    for name, spec in (("small", args.small), ("large", args.large)):
        cols, rows = map(int, spec.split("x"))
        img = mosaic(images, cols, rows)
        path = write_pyramid(args.out / f"{name}.tif", img, mpp=MPP, levels=3)
        roi = (BORDER, BORDER, cols * 1000, rows * 1000)
        slides[name] = (path, img, roi)
        print(f"{name}: {img.shape[1]} x {img.shape[0]} px, mosaic {spec}", flush=True)

    # 1. seam check on the small mosaic
    path, img, roi = slides["small"]
    roi_arg = ",".join(map(str, roi))
    seam_run = predict(args.model, path, args.out / "seam", args.threads, "--roi", roi_arg)
    tiled = stitch_instance_map(args.out / "seam")
    single = one_image(args.model, path, roi, args.out / "one_image.npy", args.threads)
    whole = np.load(args.out / "one_image.npy")
    seam = match(whole, tiled)
    seam.update(
        region_px=[roi[2], roi[3]],
        tiled_seconds=seam_run["seconds_this_run"],
        tiled_peak_rss_mib=seam_run["peak_rss_mib"],
        one_image_seconds=single["seconds"],
        one_image_peak_rss_mib=single["peak_rss_mib"],
    )
    print("seam:", seam, flush=True)

    # 2. throughput and memory, whole slides with the tissue mask
    runs = {}
    for name in ("small", "large"):
        path, _, _ = slides[name]
        s = predict(args.model, path, args.out / f"whole_{name}", args.threads)
        runs[name] = {
            "slide_px": [int(v) for v in slides[name][1].shape[1::-1]],
            "tiles": s["n_tiles"],
            "tissue_tiles": s["n_tissue_tiles"],
            "nuclei": s["n_nuclei"],
            "tissue_megapixels": s["tissue_megapixels"],
            "seconds": s["seconds_this_run"],
            "mp_per_minute": round(s["tissue_megapixels"] / (s["seconds_this_run"] / 60), 2),
            "peak_rss_mib": s["peak_rss_mib"],
        }
        print(name, runs[name], flush=True)
    again = predict(args.model, slides["large"][0], args.out / "whole_large", args.threads)
    resume = {
        "predicted_again": again["n_predicted_now"],
        "seconds": again["seconds_this_run"],
        "peak_rss_mib": again["peak_rss_mib"],
    }

    # 3. picture
    pic = picture(
        img, tiled, args.out / "seam" / "small_overlay.png", roi, seam_run["settings"]["tile"]
    )
    save_small_png(RESULTS / "wsi_predict_region.png", pic)

    result = {
        "model": str(args.model),
        "threads": args.threads,
        "load_average": os.getloadavg(),
        "tile": seam_run["settings"]["tile"],
        "margin": seam_run["settings"]["margin"],
        "mpp": MPP,
        "seam": seam,
        "whole_slide": runs,
        "resume": resume,
    }
    write_json(RESULTS / "wsi_predict.json", result)
    write_text(RESULTS / "wsi_predict.md", report(result))
    print(report(result))


def report(r: dict) -> str:
    s = r["seam"]
    lines = [
        "# Whole-slide prediction (`benchmarks/wsi_predict.py`)",
        "",
        f"Segmenter `{r['model']}`; {r['tile']}-px tiles with a {r['margin']}-px margin; "
        f"{r['threads']} torch threads (load average at the end "
        f"{', '.join(f'{v:.1f}' for v in r['load_average'])}: the 2 cores were shared). "
        f"Synthetic slides: MoNuSeg training images in a mosaic on glass, pyramidal TIFF, "
        f"{r['mpp']} µm/px.",
        "",
        "## Seam check: whole-slide prediction vs the same region as one image",
        "",
        "| region | nuclei (one image) | nuclei (tiled) | matched at IoU > 0.5 | DQ | mean IoU of "
        "matches |",
        "|---|---|---|---|---|---|",
        f"| {s['region_px'][0]} x {s['region_px'][1]} | {s['n_whole']} | {s['n_tiled']} | "
        f"{s['matched']} ({100 * s['matched_of_whole']:.2f} % / {100 * s['matched_of_tiled']:.2f} "
        "%) | "
        f"{s['dq']:.4f} | {s['sq']:.4f} |",
        "",
        f"Goal: >= 99 % matched. Tiled: {s['tiled_seconds']} s, peak RSS "
        f"{s['tiled_peak_rss_mib']} MiB; one image: {s['one_image_seconds']} s, peak RSS "
        f"{s['one_image_peak_rss_mib']} MiB (each in its own process).",
        "",
        "## Throughput and peak memory (whole slide, tissue mask on, one process each)",
        "",
        "| slide | px | tiles (tissue) | nuclei | tissue MP | s | MP / min | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, w in r["whole_slide"].items():
        lines.append(
            f"| {name} | {w['slide_px'][0]} x {w['slide_px'][1]} | {w['tiles']} "
            f"({w['tissue_tiles']}) | "
            f"{w['nuclei']} | {w['tissue_megapixels']} | {w['seconds']} | {w['mp_per_minute']} | "
            f"{w['peak_rss_mib']} |"
        )
    z = r["resume"]
    lines += [
        "",
        f"Rerun of the large slide (resume): {z['predicted_again']} tiles predicted, "
        f"{z['seconds']} s.",
        "",
        "![predicted slide](wsi_predict_region.png)",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
