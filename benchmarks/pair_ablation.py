"""Pair-quality ablation: one synthetic set per lever setting, each measured by `nudiff quality`.

From one trained (structure, image) model pair, every variant below is synthesized (or derived
from the ``base`` set by a post-pass), then assessed against real patches with the same
real-trained segmenter and seed; the minutes each variant cost are recorded. One row per
variant goes into ``--results/pair_ablation.{json,md}`` (with the real-vs-real floors), each
variant's ``quality.json`` + ``quality.md`` + histograms into ``--results/<variant>/``.
Segmenter columns (the 10 % real+syn − real AJI / PQ gain with its 95 % interval over
test images × seeds, and TSTR: syn-only AJI / real AJI) are filled in from committed experiment
cells made with the variant's recipe, where they exist: ``--cells VARIANT=RESULTS_DIR`` (an
experiment's ``--results`` folder; the grid samples its own set with that recipe, so the
segmenter columns are of the recipe, not of this exact set).

    python benchmarks/pair_ablation.py --models runs/kumar/diffusion/f0.10 \\
        --config configs/kumar-grid.yaml --real runs/kumar/data/patches \\
        --subset runs/kumar/data --segmenter runs/learning_curve/steps3000/cells/f0.10_real_s0 \\
        --out runs/ablation --variants base guidance3 reinhard filter-top50 --threads 1

A variant whose ``quality.json`` is committed under ``--results`` is not recomputed.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path

from nudiff.experiment import committed_rows, load_plan, paired_gains, paired_interval
from nudiff.utils import read_json, set_threads, write_json, write_text

# name -> how it is made: synthesis overrides, or a post-pass over another variant's set
VARIANTS: dict[str, dict] = {
    "base": {"synthesis": {}},
    "guidance1.5": {"synthesis": {"image_sample": {"guidance_scale": 1.5}}},
    "guidance3": {"synthesis": {"image_sample": {"guidance_scale": 3.0}}},
    "fp32": {"synthesis": {"precision": "no"}},
    "sampler50": {"synthesis": {"structure_sample": {"steps": 50}, "image_sample": {"steps": 50}}},
    "size128": {"synthesis": {"size": 128}},  # 256-px pairs from the 64-px-trained U-Nets
    "reinhard": {"from": "base", "stain": "reinhard"},
    "macenko": {"from": "base", "stain": "macenko"},
    "filter-top50": {"from": "base", "filter": {"keep_top": 0.5, "real_percentiles": (5.0, 95.0)}},
    "fidelity-top50": {"from": "base", "filter": {"keep_top": 0.5}},
    "reinhard+filter-top50": {
        "from": "reinhard",
        "filter": {"keep_top": 0.5, "real_percentiles": (5.0, 95.0)},
    },
    # decode min_marker 2 + smooth label upsampling (benchmarks/structure_decode.py)
    "decode": {"synthesis": {"decode": {"min_marker": 2}, "label_upsampling": "smooth"}},
    "decode+fidelity-top50": {"from": "decode", "filter": {"keep_top": 0.5}},
    # each image to the Lab statistics of one labeled-subset patch (keeps the spread of colours)
    "reinhard-each": {"from": "base", "stain": "reinhard-each"},
    "decode+fidelity-top50+reinhard-each": {
        "from": "decode+fidelity-top50",
        "stain": "reinhard-each",
    },
    # diagnostic: the labeled subset's own labels (random windows, flips/rotations), images only
    "subset-structures": {"synthesis": {"structures": "subset"}},
    "subset-structures+fidelity-top50": {"from": "subset-structures", "filter": {"keep_top": 0.5}},
}
COLUMNS = [  # (quality.json key, header, format)
    ("n_synthetic", "pairs", "d"),
    ("structure_w1_mean", "structure W1", ".3f"),
    ("mean_count", "nuclei / window", ".1f"),
    ("mean_area", "area px", ".0f"),
    ("colour_w1_mean", "colour W1", ".3f"),
    ("laplacian_variance_ratio", "Laplacian ratio", ".2f"),
    ("c2st_accuracy", "C2ST acc", ".3f"),
    ("kid", "KID", ".4f"),
    ("fidelity_aji", "fidelity AJI", ".3f"),
    ("fidelity_pq", "fidelity PQ", ".3f"),
]


def make_variant(name: str, args, plan, done: dict) -> tuple[Path, float]:
    """The variant's synthetic folder and the minutes it cost (post-passes add their source's)."""
    from nudiff.synthesis import synthesize

    spec, out = VARIANTS[name], args.out / name
    t = time.time()
    if "synthesis" in spec:
        from nudiff.structure import DecodeParams

        # every variant starts from the plain recipe (default decode, nearest labels, no pair
        # filter) whatever the config adds, and changes only its own lever
        overrides = dict(spec["synthesis"])
        decode = DecodeParams(**overrides.pop("decode", {}))
        plain_filter = dataclasses.replace(
            plan.synthesis.filter,
            segmenter=None,
            min_fidelity=None,
            keep_top=None,
            real_percentiles=None,
        )
        cfg = dataclasses.replace(
            plan.synthesis,
            n=args.n,
            seed=args.seed,
            decode=decode,
            label_upsampling="nearest",
            filter=plain_filter,
        )
        # a model's sampling: its own, with the variant's changes
        for model in ("structure", "image"):
            if f"{model}_sample" in overrides:
                own = getattr(plan.synthesis, f"{model}_sample") or getattr(plan, model).sample
                overrides[f"{model}_sample"] = dataclasses.replace(
                    own, **overrides[f"{model}_sample"]
                )
        cfg = dataclasses.replace(cfg, **overrides)
        real_dir = _subset_folder(args) if cfg.structures == "subset" else None
        synthesize(args.models / "structure", args.models / "image", out, cfg, real_dir=real_dir)
        return out, (time.time() - t) / 60
    source, minutes = done.get(spec["from"]) or make_variant(spec["from"], args, plan, done)
    done[spec["from"]] = (source, minutes)
    if "stain" in spec:
        from nudiff.data.dataset import load_folder
        from nudiff.data.stain import normalize_folder

        subset = load_folder(_subset_folder(args), progress=False)
        normalize_folder(source, [s.image for s in subset], out, spec["stain"])
    else:
        from nudiff.quality.filter import filter_pairs

        cfg = dataclasses.replace(
            plan.synthesis.filter, segmenter=str(args.segmenter), **spec["filter"]
        )
        filter_pairs(
            source,
            out,
            cfg,
            real_dir=_subset_folder(args),
            n_keep=int(args.n * spec["filter"]["keep_top"]),
        )
    return out, minutes + (time.time() - t) / 60


def _subset_folder(args) -> Path:
    """The labeled subset as a paired folder: all a recipe may use (a researcher at this
    fraction has nothing else)."""
    from nudiff.data.prepare import load_subset
    from nudiff.experiment import write_subset_folder

    return write_subset_folder(load_subset(args.subset, args.fraction, 0), args.out / "subset")


def assess_variant(name: str, folder: Path, minutes: float, args) -> dict:
    from nudiff.quality.assess import assess
    from nudiff.quality.report import write_report

    result = args.results / name
    if (result / "quality.json").exists():
        return read_json(result / "quality.json")
    a = assess(folder, args.real, args.segmenter, seed=args.seed, c2st_epochs=args.c2st_epochs)
    a.metrics["minutes_to_make"] = round(minutes, 2)
    tmp = args.out / f"{name}_report"
    write_report(tmp, a)
    result.mkdir(parents=True, exist_ok=True)
    for f in ("quality.json", "quality.md", "histograms.png"):
        shutil.copyfile(tmp / f, result / f)
    return a.metrics


def gain_columns(g: dict) -> dict:
    """One ``nudiff.experiment.paired_gains`` entry as the tables' gain columns (AJI, PQ,
    intervals)."""
    return {
        "gain_aji": g["aji"],
        "gain_pq": g["pq"],
        "gain_aji_ci": [g["ci"]["aji"]["lo"], g["ci"]["aji"]["hi"]],
        "gain_pq_ci": [g["ci"]["pq"]["lo"], g["ci"]["pq"]["hi"]],
    }


def contrast_columns(
    a: str, b: str, rows_a: list[dict], rows_b: list[dict], per_seed: bool = False
) -> dict | None:
    """``a`` − ``b`` over the (test image, seed) pairs both have (None when they share no seed):
    seeds, pair count, mean and 95 % interval of AJI and PQ; with ``per_seed`` also the per-seed
    AJI differences (``per_seed_aji``)."""
    ci = paired_interval(rows_a, rows_b, ("aji", "pq"), by_seed=True)
    if not ci["seeds"]:
        return None
    return {
        "a": a,
        "b": b,
        "seeds": ci["seeds"],
        "pairs": ci["n"],
        **{f"gain_{m}": ci[m]["mean"] for m in ("aji", "pq")},
        **{f"gain_{m}_ci": [ci[m]["lo"], ci[m]["hi"]] for m in ("aji", "pq")},
        **({"per_seed_aji": ci["aji"]["per_seed"]} if per_seed else {}),
    }


def segmenter_columns(results_dir: Path, fraction: float = 0.1) -> dict:
    """Gain of real+syn over real (paired by seed and test image) and TSTR from the committed
    cells of an experiment's ``--results`` folder."""
    rows = committed_rows(results_dir, fraction)
    out: dict = {}
    for g in paired_gains(rows, arms=("real+syn", "syn-only")):
        if g["arm"] == "real+syn":
            out |= gain_columns(g) | {"gain_seeds": len(g["seeds"])}
        else:  # syn-only - real = TSTR - real: as a ratio of the real AJI
            real = [r["aji"] for r in rows if r["arm"] == "real" and r["seed"] in g["seeds"]]
            out["tstr_aji_ratio"] = 1 + g["aji"] / (sum(real) / len(real))
    return out


def _segmenter_text(m: dict) -> list[str]:
    if "gain_aji" not in m:
        return ["–", "–", format(m["tstr_aji_ratio"], ".2f") if "tstr_aji_ratio" in m else "–"]
    aji, pq = m["gain_aji_ci"], m["gain_pq_ci"]
    return [
        f"{m['gain_aji']:+.3f} [{aji[0]:+.3f}, {aji[1]:+.3f}] ({m['gain_seeds']} "
        f"seed{'s' * (m['gain_seeds'] > 1)})",
        f"{m['gain_pq']:+.3f} [{pq[0]:+.3f}, {pq[1]:+.3f}]",
        format(m["tstr_aji_ratio"], ".2f") if "tstr_aji_ratio" in m else "–",
    ]


def table(rows: dict[str, dict]) -> str:
    head = (
        "| variant | minutes | "
        + " | ".join(h for _, h, _ in COLUMNS)
        + " | real+syn − real AJI | real+syn − real PQ | TSTR AJI ratio |"
    )
    lines = [
        "# Pair-quality ablation (`benchmarks/pair_ablation.py`)",
        "",
        "One synthetic set per lever setting, all from the same model pair, assessed by "
        "`nudiff quality` against the same real patches, segmenter and seed. Floor: the same "
        "measure between two halves of the real patches.",
        "",
        head,
        "|" + "---|" * (len(COLUMNS) + 5),
    ]
    first = next(iter(rows.values()))
    lines.append(
        "| real vs real (floor) | – | "
        + " | ".join(
            format(first[k + "_floor"], f) if k + "_floor" in first else "–" for k, _, f in COLUMNS
        )
        + " | – | – | 1 |"
    )
    for name, m in rows.items():
        lines.append(
            f"| {name} | {m.get('minutes_to_make', float('nan')):.1f} | "
            + " | ".join(
                [format(m[k], f) if k in m else "–" for k, _, f in COLUMNS]
                + _segmenter_text(m.get("segmenter", {}))
            )
            + " |"
        )
    for name, m in rows.items():
        if "structure_w1_mean" not in m and name in VARIANTS and "filter" in VARIANTS[name]:
            lines += [
                "",
                f"*{name}* kept {m.get('n_synthetic', 0)} pair(s): too few to assess. "
                + (
                    "Its nucleus-statistics filter (each window's statistics within the real "
                    "5–95th percentiles) rejects almost every sampled window: the sampled "
                    "structures are off (benchmarks/results/structure_decode.md)."
                    if VARIANTS[name]["filter"].get("real_percentiles")
                    else ""
                ),
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--models", type=Path, required=True, help="folder with structure/ and image/ runs"
    )
    ap.add_argument("--config", type=Path, default=Path("configs/kumar-grid.yaml"))
    ap.add_argument("--real", type=Path, required=True, help="real paired folder to compare with")
    ap.add_argument(
        "--subset",
        type=Path,
        required=True,
        help="prepared data folder: its labeled subset is the stain reference and the filter's "
        "real data",
    )
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument(
        "--segmenter",
        type=Path,
        required=True,
        help="a segmenter trained on the labeled subset (label fidelity, KID, filter)",
    )
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["base", "guidance3", "reinhard", "filter-top50"],
        choices=sorted(VARIANTS),
    )
    ap.add_argument("-n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--c2st-epochs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/pair_ablation"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--cells",
        nargs="*",
        default=[],
        metavar="VARIANT=RESULTS_DIR",
        help="segmenter columns of a variant from an experiment's committed cells",
    )
    args = ap.parse_args()
    set_threads(args.threads)
    plan = load_plan(args.config)
    summary = args.results / "pair_ablation.json"
    rows = read_json(summary)["variants"] if summary.exists() else {}
    done: dict = {}
    for name in args.variants:
        if name not in rows:
            folder, minutes = (
                (args.out / name, 0.0)
                if (args.results / name / "quality.json").exists()
                else make_variant(name, args, plan, done)
            )
            done[name] = (folder, minutes)
            kept = (
                len(list((folder / "images").glob("*.png"))) if (folder / "images").is_dir() else 0
            )
            if kept >= 2:
                rows[name] = assess_variant(name, folder, minutes, args)
            else:  # e.g. a filter that kept (almost) nothing: nothing to assess
                rows[name] = {"n_synthetic": kept, "minutes_to_make": round(minutes, 2)}
        for item in args.cells:
            variant, _, folder = item.partition("=")
            if variant in rows:
                rows[variant]["segmenter"] = segmenter_columns(Path(folder)) | {"cells": folder}
        write_json(
            summary,
            {
                "variants": rows,
                "models": str(args.models),
                "real": str(args.real),
                "segmenter": str(args.segmenter),
                "seed": args.seed,
            },
        )
        write_text(args.results / "pair_ablation.md", table(rows))
        print(table(rows), flush=True)


if __name__ == "__main__":
    main()
