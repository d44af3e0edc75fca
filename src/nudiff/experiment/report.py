"""The experiment's report: tables (markdown, HTML), charts, and publishing it to a results folder.

:func:`write_experiment_report` writes a run's ``report/`` from its per-image rows;
:func:`publish_report` (``nudiff experiment report``) rebuilds it from a run's cells and the cells
committed in a results folder, and copies it there. The numbers come from
:mod:`nudiff.experiment.stats`.
"""

from __future__ import annotations

import csv
import html
import io
import shutil
from pathlib import Path

import numpy as np

from nudiff.data.prepare import load_groups, split_groups
from nudiff.experiment.grid import ARMS, COPYPASTE_ARM, Cell, Plan, cells_of
from nudiff.experiment.stats import (
    PAPER_TABLES,
    REPORT_METRICS,
    answer,
    gaps_to_full,
    group_gains,
    group_summary,
    paired_gains,
    per_image_gains,
    summarise_results,
)
from nudiff.experiment.store import import_committed, is_committed, precision_name, seed_precisions
from nudiff.layout import ResultsLayout, RunLayout
from nudiff.metrics import METRICS
from nudiff.utils import atomic_path, read_json, write_json, write_text


def _cells_table(header: str, entries: list[dict], spec: str, n_seeds, paper) -> str:
    """Markdown: one row per entry, metrics as mean ± sd formatted with ``spec``, then the
    paper's (Dice, AJI) pair (``paper(e)``, ``None``: dashes)."""
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        ref = paper(e)
        pd, pa = (format(ref[0], spec), format(ref[1], spec)) if ref else ("–", "–")
        cols = [
            format(e[m], spec) + (f" ± {e[m + '_sd']:.4f}" if e[m + "_sd"] is not None else "")
            for m in REPORT_METRICS
        ]
        lines.append(
            f"| {e['fraction']:.0%} | {e['arm']} | {n_seeds(e)} | "
            + " | ".join(cols)
            + f" | {pd} | {pa} |"
        )
    return "\n".join(lines) + "\n"


def answer_markdown(entries: list[dict]) -> str:
    """The answer first: each cell's Dice / AJI / PQ, its AJI gain over real at its fraction
    (95 % interval over test image × seed pairs), the share of the gap to 100 % real it
    closes, and the paper's Table 1 beside."""
    if not entries:
        return ""
    lines = [
        "| labeled | training data | seeds | Dice | AJI | PQ | AJI gain over real, 95 % interval "
        "| share of the gap to 100 % closed | paper Dice | paper AJI |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        gain = _interval(e["gain_aji"]) if "gain_aji" in e else "–"
        share = f"{e['share_of_gap']:.0%}" if e.get("share_of_gap") is not None else "–"
        paper = [f"{v:.4f}" for v in e["paper"]] if e["paper"] else ["–", "–"]
        lines.append(
            f"| {e['fraction']:.0%} | {e['arm']} | {e['n_seeds']} | {e['dice']:.4f} | "
            f"{e['aji']:.4f} "
            f"| {e['pq']:.4f} | {gain} | {share} | {paper[0]} | {paper[1]} |"
        )
    unresolved = [
        e for e in entries if "gain_aji" in e and e["gain_aji"]["lo"] <= 0 <= e["gain_aji"]["hi"]
    ]
    if unresolved:
        names = ", ".join(f"{e['fraction']:.0%} {e['arm']}" for e in unresolved)
        seeds = max(e["n_seeds"] for e in unresolved)
        lines += [
            "",
            f"Not resolved: the AJI gain of {names} has an interval that includes 0 "
            f"({seeds} seed{'s' * (seeds > 1)}). More seeds: the same command with "
            "`--set 'experiment.seeds=[0, 1, 2]'` (finished cells are kept).",
        ]
    return "\n".join(lines) + "\n"


def _interval(ci: dict) -> str:
    return f"{ci['mean']:+.4f} [{ci['lo']:+.4f}, {ci['hi']:+.4f}]"


def results_markdown(summary: list[dict], paper: str = "monuseg") -> str:
    table = PAPER_TABLES[paper]
    return _cells_table(
        "| labeled | training data | seeds | Dice | AJI | AJI+ | PQ | paper Dice | paper AJI |",
        summary,
        ".4f",
        lambda e: e["n_seeds"],
        lambda e: table.get((round(e["fraction"], 2), e["arm"])),
    )


def gains_markdown(gains: list[dict]) -> str:
    base = gains[0].get("baseline", "real") if gains else "real"
    table = _cells_table(
        f"| labeled | arm − {base} (paired by seed) | seeds | Δ Dice | Δ AJI | Δ AJI+ | Δ PQ | "
        "paper Δ Dice | paper Δ AJI |",
        gains,
        "+.4f",
        lambda e: len(e["seeds"]),
        lambda e: e["paper"],
    )
    with_ci = [e for e in gains if "ci" in e]
    return table + ("\n" + _interval_table(f"arm − {base}", with_ci) if with_ci else "")


def _interval_table(column: str, entries: list[dict]) -> str:
    """Markdown: per entry its fraction, arm, number of pairs and ``_interval_cells``."""
    lines = [
        f"| labeled | {column} | (image × seed) pairs | Δ AJI, 95 % interval | Δ PQ, 95 % "
        "interval |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {e['fraction']:.0%} | {e['arm']} | {e['ci']['n']} | {_interval_cells(e['ci'])} |"
        for e in entries
    ]
    return "\n".join(lines) + "\n"


def gaps_markdown(entries: list[dict]) -> str:
    full = entries[0]["full"] if entries else 1.0
    return _interval_table(f"arm − {full:.0%} real", entries)


def _interval_cells(ci: dict) -> str:
    """The Δ AJI and Δ PQ cells of a ``paired_interval``: mean [lo, hi]."""
    return " | ".join(
        f"{ci[m]['mean']:+.4f} [{ci[m]['lo']:+.4f}, {ci[m]['hi']:+.4f}]" for m in ("aji", "pq")
    )


def group_gains_markdown(entries: list[dict]) -> str:
    base = entries[0].get("baseline", "real") if entries else "real"
    lines = [
        f"| labeled | arm − {base} | test images | (image × seed) pairs | Δ AJI, 95 % interval | "
        "Δ PQ, 95 % interval |",
        "|---|---|---|---|---|---|",
    ]
    for e in sorted(entries, key=lambda e: (e["fraction"], e["arm"], e["group"])):
        lines.append(
            f"| {e['fraction']:.0%} | {e['arm']} | {e['group']} | {e['ci']['n']} | "
            f"{_interval_cells(e['ci'])} |"
        )
    return "\n".join(lines) + "\n"


def group_markdown(entries: list[dict]) -> str:
    lines = [
        "| labeled | training data | test images | seeds | Dice | AJI | PQ |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in sorted(entries, key=lambda e: (e["fraction"], e["arm"], e["group"])):
        cols = [
            f"{e[m]:.4f}" + (f" ± {e[m + '_sd']:.4f}" if e[m + "_sd"] is not None else "")
            for m in ("dice", "aji", "pq")
        ]
        lines.append(
            f"| {e['fraction']:.0%} | {e['arm']} | {e['group']} | {e['n_seeds']} | "
            + " | ".join(cols)
            + " |"
        )
    return "\n".join(lines) + "\n"


def _metric_label(metric: str) -> str:
    return metric.upper().replace("_PLUS", "+")


def per_image_markdown(entry: dict) -> str:
    """One row per test image, sorted by what more labels give; last row: Pearson r (p)."""
    m, arms = _metric_label(entry["metric"]), entry["arms"]
    ref = f"{entry['reference'][0]:.0%} {entry['reference'][1]}"
    base = f"{entry['fraction']:.0%} {entry['baseline']}"
    seeds = lambda n: f"{n} seed" + ("s" if n > 1 else "")  # noqa: E731
    lines = [
        f"| test image | Δ {m}: {ref} − {base} | "
        + " | ".join(f"Δ {m}: {a} − {base} ({seeds(len(v['seeds']))})" for a, v in arms.items())
        + " |",
        "|---" * (len(arms) + 2) + "|",
    ]
    for image, g in sorted(entry["label_gain"].items(), key=lambda kv: -kv[1]):
        cols = [f"{v['gains'][image]:+.3f}" if image in v["gains"] else "–" for v in arms.values()]
        lines.append(f"| {image} | {g:+.3f} | " + " | ".join(cols) + " |")
    lines.append(
        "| Pearson r with the label gain (p) | | "
        + " | ".join(f"{v['r']:+.2f} ({v['p']:.2f})" for v in arms.values())
        + " |"
    )
    lines.append(
        "| r, baseline seeds split (label gain over one seed, arm gain over the others) | | "
        + " | ".join(
            "–" if np.isnan(v["r_split"]) else f"{v['r_split']:+.2f}" for v in arms.values()
        )
        + " |"
    )
    return "\n".join(lines) + "\n"


def per_image_chart_name(entry: dict) -> str:
    """``per_image_f0.10.png``: the file name of one fraction's per-image scatter."""
    return f"per_image_f{entry['fraction']:.2f}.png"


def per_image_chart(entry: dict, path) -> None:
    """Scatter: per test image, what more labels give (x) against what each arm gives (y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    m = _metric_label(entry["metric"])
    for k, (arm, v) in enumerate(entry["arms"].items()):
        images = list(v["gains"])
        ax.scatter(
            [entry["label_gain"][i] for i in images],
            [v["gains"][i] for i in images],
            color=f"C{k}",
            label=f"{arm} (r = {v['r']:+.2f}, p = {v['p']:.2f}"
            + ("" if np.isnan(v["r_split"]) else f"; split r = {v['r_split']:+.2f}")
            + ")",
        )
    ax.axhline(0, color="k", lw=0.8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(
        f"Δ {m}: {entry['reference'][0]:.0%} {entry['reference'][1]} − {entry['fraction']:.0%} "
        f"{entry['baseline']}  (what more labels give)"
    )
    ax.set_ylabel(f"Δ {m}: arm − {entry['fraction']:.0%} {entry['baseline']}")
    ax.set_title("Per test image: does an arm help where more labels help?", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def results_chart(summary: list[dict], path, gains: list[dict] | None = None) -> None:
    """Grouped bar chart (Dice, AJI, PQ per fraction x arm) with ± sd error bars; with ``gains``
    (``paired_gains`` entries that carry ``ci``) a second panel: Δ AJI and Δ PQ over the
    baseline with their 95 % intervals, where differences of 0.01 are visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("dice", "aji", "pq")
    labels = [f"{e['fraction']:.0%}\n{e['arm']}" for e in summary]
    x = np.arange(len(summary))
    width = 0.8 / len(metrics)
    gains = [g for g in gains or [] if "ci" in g]
    ncols = 2 if gains else 1
    fig, axes = plt.subplots(
        1,
        ncols,
        figsize=(max(6, 1.3 * len(summary)) + 5 * (ncols - 1), 4),
        squeeze=False,
        gridspec_kw={"width_ratios": [max(6, 1.3 * len(summary)), 5][:ncols]},
    )
    ax = axes[0, 0]
    for i, m in enumerate(metrics):
        ax.bar(
            x + (i - 1) * width,
            [e[m] for e in summary],
            width,
            yerr=[e[m + "_sd"] or 0 for e in summary],
            capsize=3,
            label=m.upper() if m != "dice" else "Dice",
        )
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean over test images")
    ax.legend(ncol=3, loc="lower right")
    ax.set_title(
        "Segmenter per labeled fraction × training data\n(error bars: sd over seeds)", fontsize=10
    )
    if gains:
        ax = axes[0, 1]
        y = np.arange(len(gains))
        for j, (m, colour) in enumerate((("aji", "C1"), ("pq", "C2"))):
            mean = np.array([g["ci"][m]["mean"] for g in gains])
            err = np.array(
                [
                    [g["ci"][m]["mean"] - g["ci"][m]["lo"], g["ci"][m]["hi"] - g["ci"][m]["mean"]]
                    for g in gains
                ]
            ).T
            ax.errorbar(
                mean,
                y + (j - 0.5) * 0.3,
                xerr=np.nan_to_num(err),
                fmt="o",
                color=colour,
                capsize=3,
                label="Δ " + m.upper(),
            )
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(
            y,
            [f"{g['fraction']:.0%} {g['arm']}\n− {g.get('baseline', 'real')}" for g in gains],
            fontsize=8,
        )
        ax.invert_yaxis()
        ax.set_xlabel("difference, 95 % interval over (test image × seed) pairs")
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title("Paired gains", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_experiment_report(
    out, rows: list[dict], cfg=None, groups: dict[str, str] | None = None
) -> None:
    """report/table.md, report/summary.json, report/chart.png and report/index.html; ``groups``
    ({test image: group}) defaults to the run's prepared ``data/`` folder's."""
    run = RunLayout(Path(out))
    rep = run.report
    rep.mkdir(parents=True, exist_ok=True)
    paper = getattr(cfg, "paper", "monuseg")
    summary = summarise_results(rows)
    table = results_markdown(summary, paper)
    answered = answer(rows, paper)  # the main job's one table, when it has 100 % real
    gains = paired_gains(rows, paper)
    # does diffusion beat copy-paste (same real subset, same steps)?
    with_pairs = tuple(name for name, arm in ARMS.items() if arm.versus_copypaste)
    versus_copypaste = paired_gains(rows, paper, baseline=COPYPASTE_ARM, arms=with_pairs)
    gaps = gaps_to_full(rows)  # how close each arm comes to all the labels
    groups = load_groups(run.data) if groups is None else groups
    by_group = group_summary(rows, groups) if groups else []
    gains_by_group = group_gains(rows, groups, paper) if groups else []
    versus_copypaste_by_group = (
        group_gains(rows, groups, paper, COPYPASTE_ARM, with_pairs) if groups else []
    )
    fractions = sorted({float(r["fraction"]) for r in rows if float(r["fraction"]) < 1.0})
    # one per-image view per labeled fraction below 100 % that has arms beside its baseline
    per_image = [e for e in (per_image_gains(rows, f) for f in fractions) if e.get("arms")]
    sections = _report_sections(
        gains, versus_copypaste, gaps, by_group, gains_by_group, versus_copypaste_by_group
    )
    opening = answer_markdown(answered) + "\n" if answered else ""
    if sources := run.model_sources():  # which diffusion models made the pairs
        opening += "Diffusion models: " + "; ".join(sources) + ".\n\n"
    write_text(
        rep / "table.md",
        opening
        + table
        + "".join("\n" + md for _, md in sections)
        + "".join("\n" + per_image_markdown(e) for e in per_image),
    )
    write_json(
        rep / "summary.json",
        {
            "answer": answered,
            "cells": summary,
            "gains": gains,
            "versus_copypaste": versus_copypaste,
            "gaps_to_full": gaps,
            "groups": by_group,
            "group_gains": gains_by_group,
            "group_versus_copypaste": versus_copypaste_by_group,
            "per_image": per_image,
        },
    )
    if summary:
        results_chart(summary, rep / "chart.png", gains + versus_copypaste)
    for e in per_image:
        per_image_chart(e, rep / per_image_chart_name(e))
    pictures = _copy_pictures(run, rep)
    _write_index_html(rep, answered, table, sections, summary, per_image, pictures)


def _report_sections(
    gains, versus_copypaste, gaps, by_group, gains_by_group, versus_copypaste_by_group
) -> list[tuple[str, str]]:
    """(HTML title, markdown) of each section that has rows, in the order of both outputs."""
    return [
        (title, md)
        for title, md in [
            (
                "Gain over real-only at the same fraction, paired by seed",
                gains_markdown(gains) if gains else "",
            ),
            (
                "Diffusion versus copy-paste, paired by seed",
                gains_markdown(versus_copypaste) if versus_copypaste else "",
            ),
            (
                "Against 100 % labels, paired by test image and seed",
                gaps_markdown(gaps) if gaps else "",
            ),
            ("By group of test images", group_markdown(by_group) if by_group else ""),
            (
                "Gain over real-only by group of test images",
                group_gains_markdown(gains_by_group) if gains_by_group else "",
            ),
            (
                "Diffusion versus copy-paste by group of test images",
                group_gains_markdown(versus_copypaste_by_group)
                if versus_copypaste_by_group
                else "",
            ),
        ]
        if md
    ]


def _copy_pictures(run: RunLayout, rep: Path) -> list[tuple[str, str]]:
    """Copy the run's mosaics and one overlay per cell into ``rep``: (caption, file name)."""
    pictures = []
    for mosaic_path in run.synthetic_mosaics():
        target = rep / f"mosaic_{mosaic_path.parts[-3]}.png"
        shutil.copyfile(mosaic_path, target)
        pictures.append(
            (
                "Synthetic pairs (top) beside real validation patches (bottom), "
                f"{mosaic_path.parts[-3]}",
                target.name,
            )
        )
    for mosaic_path in run.copypaste_mosaics():
        target = rep / f"copypaste_{mosaic_path.parts[-2]}.png"
        shutil.copyfile(mosaic_path, target)
        pictures.append(
            (f"Copy-paste patches (image, then labels), {mosaic_path.parts[-2]}", target.name)
        )
    for cell_dir in sorted(run.cells.glob("*")):
        overlays = sorted((cell_dir / "pred" / "overlays").glob("*.png"))[:1]
        for o in overlays:
            target = rep / f"overlay_{cell_dir.name}_{o.name}"
            shutil.copyfile(o, target)
            pictures.append((f"Prediction overlay, {cell_dir.name}: {o.stem}", target.name))
    return pictures


def _write_index_html(
    rep: Path, answered, table: str, sections, summary, per_image, pictures
) -> None:
    """report/index.html: the same tables as table.md, the charts and the pictures."""
    body = [
        "<h1>nudiff experiment</h1>",
        "<p>Mean over test images, then mean ± sd over segmenter seeds. Paper: NuDiff Table 1 "
        "(HoVer-Net, MoNuSeg official test set — a different test set and a far larger "
        "budget).</p>",
        *(
            [
                "<h3>The answer: each arm, its gain over real-only and the share of the gap to "
                "100 % labels it closes</h3>",
                _markdown_table_html(answer_markdown(answered)),
            ]
            if answered
            else []
        ),
        _markdown_table_html(table),
        *(f"<h3>{html.escape(title)}</h3>" + _markdown_table_html(md) for title, md in sections),
        '<img src="chart.png" style="max-width:100%">'
        if summary
        else "<p>No finished cells yet.</p>",
        *(
            f"<h3>Per test image, {e['fraction']:.0%} labeled: what each arm gives against what "
            "more labels give</h3>"
            + _markdown_table_html(per_image_markdown(e))
            + f'<img src="{per_image_chart_name(e)}">'
            for e in per_image
        ),
    ]
    for caption, name in pictures:
        body.append(
            f'<h3>{html.escape(caption)}</h3><img src="{html.escape(name)}" '
            'style="max-width:100%">'
        )
    write_text(
        rep / "index.html",
        "<!doctype html><meta charset=utf-8><title>nudiff report</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{padding:2px 8px;"
        "border-bottom:1px solid #ddd}</style>\n" + "\n".join(body) + "\n",
    )


def _markdown_table_html(md: str) -> str:
    """Markdown tables (separated by blank lines) -> HTML tables."""
    out = []
    for block in md.strip().split("\n\n"):
        rows = [r.strip().strip("|").split("|") for r in block.strip().splitlines()]
        head, body = rows[0], rows[2:]
        out += [
            "<table>",
            "<tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>",
        ]
        for r in body:
            out.append("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>")
        out.append("</table>")
    return "\n".join(out)


def collect_results(out: Path, cells: list[Cell]) -> list[dict]:
    """One row per (cell, test image) from the cells' metrics.json; writes results.csv."""
    run = RunLayout(Path(out))
    rows = []
    for cell in cells:
        if not run.metrics(cell).exists():
            continue
        for image, m in read_json(run.metrics(cell))["per_image"].items():
            rows.append(
                {"fraction": cell.fraction, "arm": cell.arm, "seed": cell.seed, "image": image}
                | {k: m[k] for k in METRICS}
            )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["fraction", "arm", "seed", "image", *METRICS])
    writer.writeheader()
    writer.writerows(rows)
    write_text(run.results_csv, buf.getvalue())
    return rows


def timings_markdown(timings: dict[str, float], n_cells_done: int, n_cells: int) -> str:
    """Seconds per step of a run, summed per stage, in minutes."""
    groups: dict[str, float] = {}
    for key, seconds in timings.items():
        stage = key.split("/")[-1] if "/" in key else key
        group = (
            "segmenter " + stage
            if key.startswith("cells/")
            else ("diffusion " + stage if "/" in key else stage)
        )
        groups[group] = groups.get(group, 0.0) + seconds
    lines = [
        f"Cells finished: {n_cells_done} of {n_cells}.",
        "",
        "| stage | minutes |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v / 60:.1f} |" for k, v in sorted(groups.items())]
    lines.append(f"| **total** | **{sum(timings.values()) / 60:.1f}** |")
    return "\n".join(lines) + "\n"


def publish_report(plan: Plan, out: Path, results_dir: Path) -> list[Path]:
    """Rebuild the report of the run folder ``out`` and copy it into ``results_dir``
    (``nudiff experiment report``); returns the markdown files written there (``table.md``,
    and ``timings.md`` when the run has timings).

    The report is built from the run's cells (a partly finished grid too) and from the cells
    committed in ``results_dir``: a run folder on a fresh machine holds only its own cells;
    committed ones with this configuration's fingerprint count too (another configuration's
    are refused), and the committed timings are kept under this run's. The per-group tables
    take their groups from the run's ``data/`` folder, or from the config's split file where
    that folder is not. Copied: ``table.md``, ``summary.json``, ``chart.png``,
    ``per_image_f*.png``, ``mosaic_*.png``, ``results.csv``, ``timings.json`` and
    ``timings.md`` (seconds per stage, summed, in minutes)."""
    run, dest = RunLayout(Path(out)), ResultsLayout(Path(results_dir))
    cells = cells_of(plan.experiment)
    dest.root.mkdir(parents=True, exist_ok=True)
    for (
        c
    ) in cells:  # committed metrics -> the run's cell folder (refused if another config made them)
        if is_committed(dest.root, plan, c):
            import_committed(dest.root, c, run)
    timings = read_json(dest.timings) if dest.timings.exists() else {}
    if run.timings.exists():
        timings |= read_json(run.timings)
    write_json(run.timings, timings)
    rows = collect_results(run.root, cells)
    groups = load_groups(run.data)
    split = getattr(plan.data, "split", None)
    if not groups and split:
        print(f"{run.data}: no prepared folder; groups read from {split}")
        groups = split_groups(split)
    write_experiment_report(run.root, rows, plan.experiment, groups=groups)
    rep = run.report
    seeds = seed_precisions(dest.root, plan)  # an error for a seed whose cells mix precisions
    if len(set(seeds.values())) > 1:  # the precision rule: contrasts pair cells of one seed only
        ran = ", ".join(f"s{k} {precision_name(p)}" for k, p in sorted(seeds.items()))
        write_text(
            rep / "table.md",
            (rep / "table.md").read_text() + f"\nSegmenter precision by seed: {ran}; "
            "every paired contrast compares cells of one seed, so of one precision.\n",
        )
    for f in [
        rep / "table.md",
        rep / "summary.json",
        rep / "chart.png",
        *sorted(rep.glob("per_image_f*.png")),
        *sorted(rep.glob("mosaic_*.png")),
        run.results_csv,
        run.timings,
    ]:
        if f.exists():
            shutil.copyfile(f, dest.root / f.name)
    written = [dest.root / "table.md"]
    if not timings:  # cells taken from other folders only: no time of this run's to report
        dest.timings.unlink(missing_ok=True)
        return written
    done = sum(run.metrics(c).exists() for c in cells)
    write_text(dest.root / "timings.md", timings_markdown(timings, done, len(cells)))
    return [*written, dest.root / "timings.md"]
