"""The experiment report's tables: markdown (and its HTML rendering) from the numbers of
:mod:`nudiff.experiment.stats` (cells, paired gains with intervals, gaps to 100 %, groups of test
images, per-image gains) and the run's timings. Pure functions: rows in, text out."""

from __future__ import annotations

import html

import numpy as np

from nudiff.experiment.stats import PAPER_TABLES, REPORT_METRICS


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
            f"`--set 'experiment.seeds={list(range(max(3, seeds + 2)))}'` (finished cells are "
            "kept).",
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


def metric_label(metric: str) -> str:
    return metric.upper().replace("_PLUS", "+")


def per_image_markdown(entry: dict) -> str:
    """One row per test image, sorted by what more labels give; last row: Pearson r (p)."""
    m, arms = metric_label(entry["metric"]), entry["arms"]
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


def markdown_table_html(md: str) -> str:
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
