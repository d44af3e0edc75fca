"""`nudiff quality` end to end on tiny folders: corrupted sets score worse on the measure they
should, a set drawn like the real data scores at the floor."""

import json
import math

import pytest

from nudiff.cli import main
from nudiff.layout import Cell, RunLayout
from nudiff.quality.assess import assess, tstr
from nudiff.utils import DataError, write_json


@pytest.fixture(scope="module")
def scores(quality_data, segmenter_run):
    run = {
        k: assess(
            quality_data[k],
            quality_data["real"],
            segmenter_run,
            seed=0,
            c2st_epochs=20,
            progress=False,
        )
        for k in ("synthetic", "shuffled", "shifted")
    }
    return {k: a.metrics for k, a in run.items()} | {"pairs": run["shuffled"].pairs}


def test_good_set_scores_at_its_floor(scores):
    m = scores["synthetic"]  # drawn like the real data: real versus real
    assert m["n_synthetic"] == 24 and m["window"] == 64
    assert m["structure_w1_mean"] < m["structure_w1_mean_floor"] + 0.3
    assert m["colour_w1_mean"] < m["colour_w1_mean_floor"] + 0.3
    assert m["c2st_accuracy"] < 0.8
    assert m["fidelity_pq"] > m["fidelity_pq_floor"] - 0.15 and m["fidelity_pq_floor"] > 0.4
    assert abs(m["laplacian_variance_ratio"] - 1) < 0.3
    assert m["kid"] < m["kid_floor"] + 0.05


def test_shuffled_labels_lose_label_fidelity(scores):
    good, bad = scores["synthetic"], scores["shuffled"]
    for k in ("fidelity_pq", "fidelity_aji", "visible_fraction"):
        assert bad[k] < good[k] - 0.3 and bad[k] < bad[k + "_floor"] - 0.3, k
    assert bad["colour_w1_mean"] == pytest.approx(good["colour_w1_mean"])  # same images
    assert all(p["fidelity_pq"] < 0.5 for p in scores["pairs"])
    # shuffled labels: the nuclei of the image lack a label and the label's nuclei are not shown
    for k in ("fidelity_unlabeled_rate", "fidelity_missed_rate"):
        assert bad[k] > good[k] + 0.3 and bad[k] > bad[k + "_floor"] + 0.3, k


def test_colour_shift_raises_colour_w1_and_c2st(scores):
    good, bad = scores["synthetic"], scores["shifted"]
    assert (
        bad["colour_w1_mean"] > good["colour_w1_mean"] + 2
        and bad["colour_w1_mean"] > 5 * bad["colour_w1_mean_floor"]
    )
    assert bad["c2st_accuracy"] > 0.9 and bad["c2st_accuracy"] > good["c2st_accuracy"] + 0.15
    assert bad["kid"] > good["kid"]
    assert bad["structure_w1_mean"] == pytest.approx(good["structure_w1_mean"])  # same labels


def test_cli_writes_report_and_flat_json(quality_data, segmenter_run, tmp_path, capsys):
    out = tmp_path / "q"
    assert (
        main(
            [
                "quality",
                "--synthetic",
                str(quality_data["shuffled"]),
                "--real",
                str(quality_data["real"]),
                "--segmenter",
                str(segmenter_run),
                "--out",
                str(out),
                "--c2st-epochs",
                "2",
                "--max-pairs",
                "10",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "quality.json").read_text())
    assert all(isinstance(v, int | float) for v in metrics.values())
    assert (
        metrics["n_synthetic"] == 10 and "fidelity_pq_floor" in metrics and "kid_floor" in metrics
    )
    md = (out / "quality.md").read_text()
    assert "| C2ST held-out accuracy" in md and "label fidelity: segmenter PQ" in md
    for name in (
        "histograms.png",
        "mosaic_fidelity_pq.png",
        "mosaic_c2st_p_real.png",
        "mosaic_colour_z.png",
        "mosaic_fidelity_unlabeled_rate.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert len((out / "pairs.csv").read_text().splitlines()) == 11
    assert "fidelity_pq" in capsys.readouterr().out


def test_cli_without_segmenter_reports_absent(quality_data, tmp_path):
    out = tmp_path / "q"
    assert (
        main(
            [
                "quality",
                "--synthetic",
                str(quality_data["synthetic"]),
                "--real",
                str(quality_data["real"]),
                "--out",
                str(out),
                "--c2st-epochs",
                "1",
                "--max-pairs",
                "6",
                "--split",
                "images",
            ]
        )
        == 0
    )
    metrics = json.loads((out / "quality.json").read_text())
    assert "kid" not in metrics and metrics["split_by_image"] == 1
    assert "absent (no --segmenter given)" in (out / "quality.md").read_text()


def test_cli_errors_are_one_line(quality_data, tmp_path, capsys):
    assert (
        main(
            [
                "quality",
                "--synthetic",
                str(tmp_path / "nope"),
                "--real",
                str(quality_data["real"]),
                "--out",
                str(tmp_path / "q"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope: folder not found" in err


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["quality", "--help"])
    assert "nudiff quality --synthetic" in capsys.readouterr().out


def test_tstr_reads_syn_only_beside_real(tmp_path):
    run = RunLayout(tmp_path)  # the experiment's own run-folder layout
    for cell, mean in (
        (Cell(0.1, "syn-only", 0), {"aji": 0.3, "pq": 0.25}),
        (Cell(0.1, "real", 0), {"aji": 0.5, "pq": 0.4}),
        (Cell(0.1, "real+syn", 0), {"aji": 0.45, "pq": 0.4}),
        (Cell(0.2, "syn-only", 1), {"aji": 0.2, "pq": 0.1}),  # no real cell beside it
    ):
        write_json(run.metrics(cell), {"mean": mean})
    t = tstr(tmp_path)
    assert t["tstr_f0.10_s0_aji"] == 0.3 and t["tstr_f0.10_s0_aji_real"] == 0.5
    assert math.isclose(t["tstr_f0.10_s0_pq_ratio"], 0.625)
    assert t["tstr_f0.20_s1_aji"] == 0.2 and "tstr_f0.20_s1_aji_ratio" not in t
    assert len(t) == 8
    with pytest.raises(DataError, match="not a `nudiff experiment` run"):
        tstr(tmp_path / "elsewhere")


def test_half_resolution_set_is_compared_with_real_at_its_scale(quality_data, tmp_path):
    """Pairs sampled at half resolution and upsampled lose texture that no model at that scale
    can have: the report measures the real windows at the same scale beside them."""
    from quality.quality_fixtures import write_folder

    from nudiff.data.dataset import load_folder
    from nudiff.data.resize import at_scale

    syn = load_folder(quality_data["synthetic"], progress=False)
    blurred = write_folder(
        tmp_path / "half", [(at_scale(s.image[None], 0.5)[0], s.instance_map) for s in syn]
    )
    write_json(blurred / "manifest.json", {"scale": 0.5})
    m = assess(blurred, quality_data["real"], seed=0, c2st_epochs=20, progress=False).metrics
    assert m["synthesis_scale"] == 0.5
    assert m["laplacian_variance_ratio"] < 0.6 * m["laplacian_variance_ratio_floor"]
    assert (
        abs(m["laplacian_variance_ratio_at_scale"] - m["laplacian_variance_ratio"])
        < 0.25 * m["laplacian_variance_ratio"]
    )
    assert 0 <= m["c2st_accuracy_at_scale"] <= 1 and 0 <= m["c2st_accuracy_resampling"] <= 1
    plain = assess(
        quality_data["synthetic"], quality_data["real"], seed=0, c2st_epochs=2, progress=False
    ).metrics
    assert plain["synthesis_scale"] == 1.0 and "laplacian_variance_ratio_at_scale" not in plain


def test_bad_manifest_scale_is_a_one_line_error(quality_data, tmp_path):
    from nudiff.quality.assess import synthesis_scale
    from nudiff.utils import DataError

    write_json(tmp_path / "manifest.json", {"scale": 2})
    with pytest.raises(DataError, match="manifest.json.*scale"):
        synthesis_scale(tmp_path)
