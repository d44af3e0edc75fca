"""The experiment's report page, and publishing it to a results folder.

:func:`write_experiment_report` writes a run's ``report/`` (table.md, summary.json, charts,
index.html) from its per-image rows; :func:`publish_report` (``nudiff experiment report``)
rebuilds it from a run's cells and the cells committed in a results folder, and copies it there.
The numbers come from :mod:`nudiff.experiment.stats`, the tables from
:mod:`nudiff.experiment.tables`, the charts from :mod:`nudiff.experiment.charts`.
"""

from __future__ import annotations

import csv
import html
import io
import shutil
from pathlib import Path

from nudiff.data.prepare import load_groups, split_groups
from nudiff.experiment.charts import per_image_chart, per_image_chart_name, results_chart
from nudiff.experiment.grid import ARMS, COPYPASTE_ARM, Cell, Plan, cells_of
from nudiff.experiment.stats import (
    answer,
    gaps_to_full,
    group_gains,
    group_summary,
    paired_gains,
    per_image_gains,
    summarise_results,
)
from nudiff.experiment.store import import_committed, is_committed, precision_name, seed_precisions
from nudiff.experiment.tables import (
    answer_markdown,
    gains_markdown,
    gaps_markdown,
    group_gains_markdown,
    group_markdown,
    markdown_table_html,
    per_image_markdown,
    results_markdown,
    timings_markdown,
)
from nudiff.layout import ResultsLayout, RunLayout
from nudiff.metrics import METRICS
from nudiff.utils import read_json, write_json, write_text


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
    sections = report_sections(
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
    pictures = copy_pictures(run, rep)
    write_index_html(rep, answered, table, sections, summary, per_image, pictures)


def report_sections(
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


def copy_pictures(run: RunLayout, rep: Path) -> list[tuple[str, str]]:
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


def write_index_html(
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
                markdown_table_html(answer_markdown(answered)),
            ]
            if answered
            else []
        ),
        markdown_table_html(table),
        *(f"<h3>{html.escape(title)}</h3>" + markdown_table_html(md) for title, md in sections),
        '<img src="chart.png" style="max-width:100%">'
        if summary
        else "<p>No finished cells yet.</p>",
        *(
            f"<h3>Per test image, {e['fraction']:.0%} labeled: what each arm gives against what "
            "more labels give</h3>"
            + markdown_table_html(per_image_markdown(e))
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
    # committed metrics -> the run's cell folder (refused if another config made them)
    for c in cells:
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
