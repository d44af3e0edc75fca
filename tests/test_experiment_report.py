"""The experiment's numbers (stats) and report (tables, charts, files)."""

import numpy as np
import pytest

from nudiff.experiment.charts import per_image_chart
from nudiff.experiment.report import write_experiment_report
from nudiff.experiment.stats import (
    gaps_to_full,
    group_gains,
    group_summary,
    paired_gains,
    paired_interval,
    per_image_gains,
    summarise_results,
)
from nudiff.experiment.tables import (
    gains_markdown,
    gaps_markdown,
    group_gains_markdown,
    group_markdown,
    per_image_markdown,
    results_markdown,
)
from nudiff.utils import read_json


def _rows():
    rows = []
    for arm, base in (("real", 0.5), ("real+syn", 0.6)):
        for seed in (0, 1, 2):
            for img in ("a", "b"):
                v = base + 0.01 * seed + (0.02 if img == "b" else 0)
                rows.append(
                    {
                        "fraction": 0.1,
                        "arm": arm,
                        "seed": seed,
                        "image": img,
                        "dice": v,
                        "aji": v,
                        "aji_plus": v,
                        "dq": v,
                        "sq": v,
                        "pq": v,
                    }
                )
    return rows


def test_summary_is_mean_over_images_then_mean_sd_over_seeds():
    s = {e["arm"]: e for e in summarise_results(_rows())}
    # per-seed means: .51, .52, .53 -> mean .52, sd .01
    assert s["real"]["aji"] == pytest.approx(0.52)
    assert s["real"]["aji_sd"] == pytest.approx(0.01)
    assert s["real+syn"]["n_seeds"] == 3
    md = results_markdown(list(s.values()))
    assert "0.5200 ± 0.0100" in md and "0.7969" in md  # paper's 10 % labeled Dice beside ours


def test_experiment_report_files(tmp_path):
    write_experiment_report(tmp_path, _rows())
    for name in ("table.md", "summary.json", "chart.png", "index.html"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert (
        "| test images |" not in (tmp_path / "report" / "table.md").read_text()
    )  # no data/, no groups


def test_experiment_report_takes_groups_given(tmp_path):
    # a report rebuilt where the run's data/ folder is not: the groups come from the caller
    write_experiment_report(tmp_path, _rows(), groups={"a": "same", "b": "other"})
    table = (tmp_path / "report" / "table.md").read_text()
    assert "| 10% | real | other | 3 |" in table


def test_paired_gains_pair_by_seed_and_skip_unpaired():
    rows = _rows() + [dict(r, seed=7) for r in _rows() if r["arm"] == "real+syn"]
    (g,) = paired_gains(rows)  # seed 7 has no real cell: left out
    assert g["arm"] == "real+syn" and g["seeds"] == [0, 1, 2]
    assert g["aji"] == pytest.approx(0.1) and g["aji_sd"] == pytest.approx(0.0, abs=1e-12)
    assert g["paper"][1] == pytest.approx(0.6785 - 0.6344)
    md = gains_markdown([g])
    assert "+0.1000 ± 0.0000" in md and "+0.0441" in md


def test_paired_interval_by_image_and_seed():
    a = [
        {"image": i, "seed": s, "aji": 0.5 + d}
        for (i, s), d in zip([("x", 0), ("y", 0), ("x", 1), ("z", 1)], [0.1, 0.3, 0.2, 0.0])
    ]
    b = [{"image": i, "seed": s, "aji": 0.5} for i, s in [("x", 0), ("y", 0), ("x", 1), ("q", 1)]]
    out = paired_interval(a, b, ("aji",))
    assert out["n"] == 3  # (z, 1) and (q, 1) have no partner
    assert out["aji"]["mean"] == pytest.approx(0.2)
    # sd of (0.1, 0.3, 0.2) = 0.1; t(0.975, 2) = 4.303; half width 4.303 * 0.1 / sqrt(3)
    assert out["aji"]["hi"] - out["aji"]["mean"] == pytest.approx(4.3027 * 0.1 / 3**0.5, rel=1e-3)
    assert out["aji"]["lo"] < out["aji"]["mean"] < out["aji"]["hi"]


def test_paired_interval_by_seed_is_the_head_to_head_of_two_arms():
    # arm a vs arm b of any folders: differences a - b per (image, seed): seed 0: x .1, y .3;
    # seed 2: x .2, y .0 (z and q have no partner; seed 1 only in b)
    a = [
        {"image": i, "seed": s, "aji": 0.5 + d, "pq": 0.4 + 2 * d}
        for (i, s), d in zip(
            [("x", 0), ("y", 0), ("x", 2), ("y", 2), ("z", 2)], [0.1, 0.3, 0.2, 0.0, 0.9]
        )
    ]
    b = [
        {"image": i, "seed": s, "aji": 0.5, "pq": 0.4}
        for i, s in [("x", 0), ("y", 0), ("x", 2), ("y", 2), ("q", 2), ("x", 1)]
    ]
    out = paired_interval(a, b, ("aji", "pq"), by_seed=True)
    assert out["n"] == 4 and out["seeds"] == [0, 2]
    assert out["aji"]["mean"] == pytest.approx(0.15) and out["pq"]["mean"] == pytest.approx(0.3)
    assert out["aji"]["per_seed"] == pytest.approx([0.2, 0.1])  # (.1 + .3) / 2, (.2 + .0) / 2
    assert out["pq"]["per_seed"] == pytest.approx([0.4, 0.2])
    # sd of (.1, .3, .2, 0) = 0.1291; t(0.975, 3) = 3.1824; half width 3.1824 * 0.1291 / 2
    assert out["aji"]["hi"] - out["aji"]["mean"] == pytest.approx(3.1824 * 0.129099 / 2, rel=1e-3)
    # without by_seed the entry is as the reports store it
    assert set(paired_interval(a, b, ("aji",))) == {"n", "aji"}
    assert set(paired_interval(a, b, ("aji",))["aji"]) == {"mean", "lo", "hi"}
    none = paired_interval(a, [], ("aji",), by_seed=True)  # nothing in common: no seeds
    assert none["n"] == 0 and none["seeds"] == [] and none["aji"]["per_seed"] == []


def test_gains_carry_an_interval_and_groups_are_summarised(tmp_path):
    (g,) = paired_gains(_rows(), paper="kumar")
    assert g["ci"]["n"] == 6 and g["ci"]["aji"]["mean"] == pytest.approx(0.1)
    assert g["paper"][1] == pytest.approx(0.6161 - 0.5939)  # Kumar column
    assert "95 % interval" in gains_markdown([g])
    entries = group_summary(_rows(), {"a": "same", "b": "other"})
    by = {(e["arm"], e["group"]): e for e in entries}
    assert by[("real", "same")]["aji"] == pytest.approx(0.51)  # image a: .50, .51, .52
    assert by[("real", "other")]["aji"] == pytest.approx(0.53)
    assert "| 10% | real | other | 3 |" in group_markdown(entries)
    gg = {e["group"]: e for e in group_gains(_rows(), {"a": "same", "b": "other"}, "kumar")}
    assert gg["same"]["ci"]["n"] == 3 and gg["same"]["ci"]["aji"]["mean"] == pytest.approx(0.1)
    assert "| 10% | real+syn | other | 3 | +0.1000" in group_gains_markdown(list(gg.values()))


def test_diffusion_versus_copypaste_is_paired_against_that_arm(tmp_path):
    cp = [
        dict(
            r, arm="real+copypaste", aji=r["aji"] + 0.03, pq=r["pq"] + 0.03, dice=r["dice"] + 0.03
        )
        for r in _rows()
        if r["arm"] == "real" and r["seed"] < 2
    ]
    rows = _rows() + cp
    (g,) = paired_gains(rows, paper="kumar", baseline="real+copypaste", arms=("real+syn",))
    assert g["seeds"] == [0, 1] and g["aji"] == pytest.approx(0.07) and g["paper"] is None
    assert g["ci"]["n"] == 4 and g["ci"]["pq"]["mean"] == pytest.approx(0.07)
    assert "arm − real+copypaste" in gains_markdown([g])
    write_experiment_report(tmp_path, rows)
    assert "arm − real+copypaste" in (tmp_path / "report" / "table.md").read_text()
    by = group_gains(rows, {"a": "same", "b": "other"}, "kumar", "real+copypaste", ("real+syn",))
    assert {e["group"]: e["ci"]["n"] for e in by} == {"same": 2, "other": 2}
    assert all(e["ci"]["aji"]["mean"] == pytest.approx(0.07) for e in by)
    assert "| arm − real+copypaste | test images |" in group_gains_markdown(by)
    write_experiment_report(tmp_path, rows, groups={"a": "same", "b": "other"})
    assert (
        "| 10% | real+syn | other | 2 | +0.0700" in (tmp_path / "report" / "table.md").read_text()
    )


def test_per_image_gains_correlate_an_arm_with_what_more_labels_give(tmp_path):
    labels_help = {"a": 0.10, "b": 0.00, "c": 0.05, "d": -0.02}
    rows = []
    for img, g in labels_help.items():
        for seed in (0, 1):
            base = 0.5 + 0.01 * seed
            rows.append({"fraction": 0.1, "arm": "real", "seed": seed, "image": img, "aji": base})
            # tracks the label gain at half its size: r = +1
            rows.append(
                {
                    "fraction": 0.1,
                    "arm": "real+syn",
                    "seed": seed,
                    "image": img,
                    "aji": base + g / 2,
                }
            )
            # helps most where labels help least: r = -1
            rows.append(
                {
                    "fraction": 0.1,
                    "arm": "real+copypaste",
                    "seed": seed,
                    "image": img,
                    "aji": base - g,
                }
            )
        rows.append({"fraction": 1.0, "arm": "real", "seed": 0, "image": img, "aji": 0.5 + g})
    e = per_image_gains(rows, 0.1)
    # the 100 % cell (seed 0) minus the mean of the 10 % seeds (0.505)
    assert e["label_gain"]["a"] == pytest.approx(0.095)
    assert e["arms"]["real+syn"]["gains"]["a"] == pytest.approx(0.05)
    assert e["arms"]["real+syn"]["r"] == pytest.approx(1.0)
    assert e["arms"]["real+copypaste"]["r"] == pytest.approx(-1.0)
    assert e["arms"]["real+syn"]["seeds"] == [0, 1]
    assert e["arms"]["real+syn"]["r_split"] == pytest.approx(1.0)
    assert e["arms"]["real+copypaste"]["r_split"] == pytest.approx(-1.0)
    md = per_image_markdown(e)
    assert md.splitlines()[2].startswith("| a | +0.095 |")  # sorted by the label gain
    assert "+1.00" in md.splitlines()[-1]
    per_image_chart(e, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
    assert per_image_gains([r for r in rows if r["image"] in "ab"], 0.1) == {}  # < 3 images


def test_report_has_one_per_image_view_per_fraction(tmp_path):
    # 10 % and 20 % both have an arm beside real: each gets its table and its scatter
    def row(f, arm, img, v):
        return {
            "fraction": f,
            "arm": arm,
            "seed": 0,
            "image": img,
            **{m: v for m in ("dice", "aji", "aji_plus", "dq", "sq", "pq")},
        }

    rows = []
    for img, g in {"a": 0.10, "b": 0.00, "c": 0.05}.items():
        rows.append(row(1.0, "real", img, 0.6 + g))
        for f, arm in ((0.1, "real+syn"), (0.1, "real"), (0.2, "real+syn"), (0.2, "real")):
            rows.append(row(f, arm, img, 0.5 + (g / 2 if arm == "real+syn" else 0.0) + f))
    write_experiment_report(tmp_path, rows)
    rep = tmp_path / "report"
    assert [e["fraction"] for e in read_json(rep / "summary.json")["per_image"]] == [0.1, 0.2]
    assert (rep / "per_image_f0.10.png").stat().st_size > 0 and (
        rep / "per_image_f0.20.png"
    ).exists()
    table = (rep / "table.md").read_text()
    assert "100% real − 10% real" in table and "100% real − 20% real" in table
    assert 'src="per_image_f0.20.png"' in (rep / "index.html").read_text()


def test_per_image_split_correlation_is_not_fooled_by_baseline_noise():
    # neither more labels nor the arm change anything; only the baseline's per-image noise
    # differs, and both gains subtract it: r = +1 from that noise alone, r_split near 0
    noise = np.random.default_rng(0).normal(0, 0.02, (60, 3))
    rows = []
    for i in range(60):
        rows.append({"fraction": 1.0, "arm": "real", "seed": 0, "image": str(i), "aji": 0.5})
        for s in range(3):
            rows.append(
                {
                    "fraction": 0.1,
                    "arm": "real",
                    "seed": s,
                    "image": str(i),
                    "aji": 0.5 + noise[i, s],
                }
            )
            rows.append(
                {"fraction": 0.1, "arm": "real+syn", "seed": s, "image": str(i), "aji": 0.5}
            )
    v = per_image_gains(rows, 0.1)["arms"]["real+syn"]
    assert v["r"] == pytest.approx(1.0)
    assert abs(v["r_split"]) < 0.3


def test_gap_to_full_labels_pairs_by_image_and_seed(tmp_path):
    full = [
        dict(r, fraction=1.0, aji=r["aji"] + 0.05, pq=r["pq"] + 0.04)
        for r in _rows()
        if r["arm"] == "real" and r["seed"] == 0
    ]  # 100 % has seed 0 only
    gaps = {e["arm"]: e for e in gaps_to_full(_rows() + full)}
    assert set(gaps) == {"real", "real+syn"}  # the 100 % cell is not compared with itself
    assert gaps["real"]["ci"]["n"] == 2  # seeds 1, 2 have no 100 % partner
    assert gaps["real"]["ci"]["aji"]["mean"] == pytest.approx(-0.05)
    assert gaps["real+syn"]["ci"]["pq"]["mean"] == pytest.approx(0.1 - 0.04)
    assert "| 10% | real+syn | 2 | +0.0500" in gaps_markdown(list(gaps.values()))
    assert gaps_to_full(_rows()) == []  # no 100 % cell: nothing to say
    write_experiment_report(tmp_path, _rows() + full)
    assert "arm − 100% real" in (tmp_path / "report" / "table.md").read_text()
    assert read_json(tmp_path / "report" / "summary.json")["gaps_to_full"][0]["ci"]["n"] == 2


def test_the_answer_opens_the_report_with_gain_and_share_of_the_gap(tmp_path):
    """10 % real .52 (per-seed .51/.52/.53), 10 % real+syn .62, 100 % real .72: the pairs
    gain +0.10 and close half of the +0.20 gap; the answer table opens table.md."""
    from nudiff.experiment.stats import answer

    rows = _rows() + [
        r | {"fraction": 1.0, "arm": "real", "aji": r["aji"] + 0.2}
        for r in _rows()
        if r["arm"] == "real"
    ]
    entries = answer(rows, "kumar")
    assert [(e["fraction"], e["arm"]) for e in entries] == [
        (0.1, "real"),
        (0.1, "real+syn"),
        (1.0, "real"),
    ]
    syn = entries[1]
    assert syn["aji"] == pytest.approx(0.62) and syn["gain_aji"]["mean"] == pytest.approx(0.1)
    assert syn["share_of_gap"] == pytest.approx(0.5)
    assert list(syn["paper"]) == [0.8049, 0.6161] and "gain_aji" not in entries[0]
    only_10 = answer(_rows())  # no 100 % real: gains, no share of a gap
    assert (
        only_10[1]["gain_aji"]["mean"] == pytest.approx(0.1) and "share_of_gap" not in only_10[1]
    )
    assert answer([r for r in _rows() if r["arm"] == "real"]) == []  # one cell: nothing to answer
    write_experiment_report(tmp_path, rows, None)
    table = (tmp_path / "report" / "table.md").read_text()
    assert table.startswith(
        "| labeled | training data | seeds | Dice | AJI | PQ | AJI gain over real"
    )
    assert (
        "| 10% | real+syn | 3 | 0.6200 | 0.6200 | 0.6200 | +0.1000 [+0.1000, +0.1000] | 50% |"
        in table
    )
    assert "Not resolved" not in table
    from nudiff.experiment.tables import answer_markdown

    syn["gain_aji"] = {"mean": 0.004, "lo": -0.006, "hi": 0.014}  # an interval across 0
    unresolved = answer_markdown(entries)
    assert (
        "Not resolved: the AJI gain of 10% real+syn has an interval that includes 0" in unresolved
    )
    assert (
        "(3 seeds). More seeds: the same command with `--set 'experiment.seeds=[0, 1, 2, 3, 4]'`"
        in unresolved
    )
    syn["n_seeds"] = 1
    assert "`--set 'experiment.seeds=[0, 1, 2]'`" in answer_markdown(entries)
