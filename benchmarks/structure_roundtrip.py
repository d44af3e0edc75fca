"""Round-trip quality of the nuclei-structure codec: decode(encode(x)) vs x on MoNuSeg.

1. Choose the decoder thresholds on `train-recovered/` patches only (grid search on the mean
   of clean and noisy PQ + AJI).
2. Measure on every annotated image (both folders), per 256x256 patch (the paper's 49-patch
   grid per image) and per whole image, for the clean structure, the structure quantised to
   8 bits, and with Gaussian noise of sd 0.05 added to all three channels.
3. For scale: MONAI's stock HoVer-Net post-processing on the same clean patches (Sobel 21).

    .venv/bin/python benchmarks/structure_roundtrip.py [--data ../shared/datasets/monuseg]

Writes benchmarks/results/structure_roundtrip.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np

from nudiff.data.io import read_instance_map
from nudiff.data.patches import extract_patches
from nudiff.metrics import instance_metrics
from nudiff.structure import DecodeParams, decode, encode
from nudiff.utils import write_json, write_text

RESULTS = Path(__file__).parent / "results"
VARIANTS = ("clean", "quant8", "noise0.05")


def perturb(s: np.ndarray, variant: str, rng: np.random.Generator) -> np.ndarray:
    if variant == "clean":
        return s
    if variant == "quant8":  # as stored in an 8-bit PNG: x in [-1,1] -> round((x+1)/2*255)
        return (np.round((s + 1) / 2 * 255) / 255 * 2 - 1).astype(np.float32)
    return (s + rng.normal(0, 0.05, s.shape)).astype(np.float32)


def load_labels(data: Path, folder: str) -> dict[str, np.ndarray]:
    return {p.stem: read_instance_map(p) for p in sorted((data / folder / "labels").glob("*.png"))}


def patches_of(inst: np.ndarray, size=256, stride=128) -> list[np.ndarray]:
    image = np.zeros(inst.shape + (3,), np.uint8)
    return [p for _, _, _, p in extract_patches(image, inst, size=size, stride=stride)]


def tune(labels: dict[str, np.ndarray], rng) -> tuple[DecodeParams, list]:
    sample = [p for inst in labels.values() for p in patches_of(inst, stride=372)]
    encoded = [(p, encode(p)) for p in sample]
    noisy = [(p, perturb(s, "noise0.05", rng)) for p, s in encoded]
    grid = []
    for median, ct, et in itertools.product((1, 3), (0.3, 0.4, 0.5), (0.15, 0.2, 0.3)):
        params = DecodeParams(median_size=median, center_threshold=ct, edge_threshold=et)
        scores = []
        for pairs in (encoded, noisy):
            ms = [instance_metrics(p, decode(s, params)) for p, s in pairs]
            scores.append(np.mean([m["pq"] + m["aji"] for m in ms]) / 2)
        grid.append(
            {
                "median_size": median,
                "center_threshold": ct,
                "edge_threshold": et,
                "clean": scores[0],
                "noisy": scores[1],
                "objective": float(np.mean(scores)),
            }
        )
    best = max(grid, key=lambda g: g["objective"])
    return DecodeParams(
        median_size=best["median_size"],
        center_threshold=best["center_threshold"],
        edge_threshold=best["edge_threshold"],
    ), grid


def summarise(ms: list[dict]) -> dict:
    return {k: float(np.mean([m[k] for m in ms])) for k in ("dice", "aji", "aji_plus", "pq")} | {
        "min_pq": float(np.min([m["pq"] for m in ms])),
        "n": len(ms),
    }


def monai_baseline(labels: dict[str, np.ndarray], kernel: int) -> dict:
    import torch
    from monai.apps.pathology.transforms import HoVerNetInstanceMapPostProcessing

    post = HoVerNetInstanceMapPostProcessing(
        activation=lambda x: x, mask_threshold=0.5, sobel_kernel_size=kernel
    )
    ms = []
    for inst in labels.values():
        for p in patches_of(inst):
            s = encode(p)
            _, pred = post(torch.from_numpy(s[:1]), torch.from_numpy(s[1:]))
            ms.append(instance_metrics(p, np.asarray(pred)[0]))
    return summarise(ms)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--data",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared/datasets/monuseg",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-monai", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    exact = load_labels(args.data, "train")
    recovered = load_labels(args.data, "train-recovered")

    t0 = time.time()
    params, grid = tune(recovered, rng)
    print("chosen on train-recovered:", params, f"({time.time() - t0:.0f} s)")

    results: dict = {"params": params.__dict__, "tuning_grid": grid, "per_folder": {}}
    timing = {"encode_s": [], "decode_s": []}
    for folder, labels in (("train", exact), ("train-recovered", recovered)):
        out = {}
        for scope in ("patch256", "whole"):
            for variant in VARIANTS:
                ms = []
                for inst in labels.values():
                    items = patches_of(inst) if scope == "patch256" else [inst]
                    for x in items:
                        t = time.perf_counter()
                        s = encode(x)
                        te = time.perf_counter() - t
                        s = perturb(s, variant, rng)
                        t = time.perf_counter()
                        pred = decode(s, params)
                        td = time.perf_counter() - t
                        if scope == "whole" and variant == "clean":
                            timing["encode_s"].append(te)
                            timing["decode_s"].append(td)
                        ms.append(instance_metrics(x, pred))
                out[f"{scope}/{variant}"] = summarise(ms)
                print(
                    folder,
                    scope,
                    variant,
                    {k: round(v, 4) for k, v in out[f"{scope}/{variant}"].items()},
                )
        results["per_folder"][folder] = out
    results["timing_whole_image_1000px"] = {k: float(np.mean(v)) for k, v in timing.items()}
    if not args.skip_monai:
        results["monai_stock_train_patches_clean"] = {
            "sobel21": monai_baseline(exact, 21),
            "sobel5": monai_baseline(exact, 5),
        }
        print("MONAI stock:", results["monai_stock_train_patches_clean"])
    write_json(RESULTS / "structure_roundtrip.json", results)
    write_text(RESULTS / "structure_roundtrip.md", to_markdown(results))


def to_markdown(r: dict) -> str:
    lines = [
        "# Structure codec round trip: decode(encode(x)) vs x, MoNuSeg",
        "",
        f"Decoder thresholds chosen on `train-recovered` patches only: `{r['params']}`.",
        "Mean over patches (49 per image, 256 px, stride 128) or over whole 1000-px images.",
        "",
        "| folder | scope | variant | Dice | AJI | AJI+ | PQ | min PQ | n |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for folder, res in r["per_folder"].items():
        for key, m in res.items():
            scope, variant = key.split("/")
            lines.append(
                f"| {folder} | {scope} | {variant} | {m['dice']:.4f} | {m['aji']:.4f} | "
                f"{m['aji_plus']:.4f} | {m['pq']:.4f} | {m['min_pq']:.4f} | {m['n']} |"
            )
    if "monai_stock_train_patches_clean" in r:
        lines += [
            "",
            "MONAI stock `HoVerNetInstanceMapPostProcessing` on the same clean `train` patches:",
            "",
            "| Sobel kernel | AJI | PQ |",
            "|---|---|---|",
        ]
        for k, m in r["monai_stock_train_patches_clean"].items():
            lines.append(f"| {k} | {m['aji']:.4f} | {m['pq']:.4f} |")
    t = r["timing_whole_image_1000px"]
    lines += [
        "",
        f"Time per 1000-px image: encode {t['encode_s'] * 1000:.0f} ms, decode "
        f"{t['decode_s'] * 1000:.0f} ms.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
