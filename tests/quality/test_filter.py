"""The synthetic pair filter: decisions (pure), the post-pass over a folder, the CLI."""

import pytest

from nudiff.cli import main
from nudiff.data.dataset import load_folder
from nudiff.quality.filter import FilterConfig, filter_pairs, n_to_keep, select_pairs
from nudiff.utils import NudiffError, read_json, write_json


def _scores(**fid):
    return {
        k: {"count": 5.0, "mean_area": 50.0, "mean_solidity": 0.9, "fidelity_pq": v}
        for k, v in fid.items()
    }


def test_select_by_threshold_top_fraction_and_bounds():
    scores = _scores(a=0.9, b=0.2, c=0.6, d=0.7)
    kept, rejected = select_pairs(scores, FilterConfig(min_fidelity=0.5))
    assert kept == ["a", "c", "d"] and rejected == {"b": "low_fidelity"}
    kept, rejected = select_pairs(scores, FilterConfig(keep_top=0.5))
    assert kept == ["a", "d"] and rejected == {"b": "not_top_fidelity", "c": "not_top_fidelity"}
    scores["a"]["count"] = 40.0
    kept, rejected = select_pairs(scores, FilterConfig(keep_top=0.5), bounds={"count": (2, 30)})
    assert kept == ["c", "d"] and rejected["a"] == "count_outside_real"
    # without a fidelity score, only the bounds decide
    plain = {k: {"count": c, "mean_area": float("nan")} for k, c in (("x", 3.0), ("y", 0.0))}
    assert select_pairs(
        plain, FilterConfig(), bounds={"count": (1, 9), "mean_area": (10, 90)}
    ) == (["x"], {"y": "count_outside_real"})


def test_n_to_keep_gives_n_back_from_ceil_n_over_fraction():
    import math

    for n in (1, 5, 128, 256):
        for f in (0.3, 0.5, 0.7, 1.0):
            assert n_to_keep(f, math.ceil(n / f)) == n
    assert n_to_keep(None, 7) == 7


def _fake_synthesized(quality_data, tmp_path):
    """The synthetic folder with a `nudiff synthesize`-style manifest."""
    import shutil

    src = tmp_path / "syn"
    shutil.copytree(quality_data["shuffled"], src)
    names = sorted(p.stem for p in (src / "images").iterdir())
    write_json(
        src / "manifest.json",
        {
            "config": {"n": len(names)},
            "scale": 0.5,
            "samples": {str(i): {"name": n, "n_nuclei": 1} for i, n in enumerate(names)},
            "rejected": {"99": "too_few_nuclei"},
        },
    )
    return src, names


def test_filter_pairs_copies_kept_and_records_everything(quality_data, segmenter_run, tmp_path):
    src, names = _fake_synthesized(quality_data, tmp_path)
    # half shuffled labels, half true: the true ones must be the top half
    good = load_folder(quality_data["synthetic"], progress=False)
    from nudiff.data.io import write_instance_map

    for s in good[:12]:
        write_instance_map(src / "labels" / f"{s.name}.png", s.instance_map)
    cfg = FilterConfig(segmenter=str(segmenter_run), keep_top=0.5, real_percentiles=(1, 99))
    m = filter_pairs(src, tmp_path / "out", cfg, quality_data["real"], progress=False)
    assert m["n_scored"] == 24 and m["n_accepted"] + m["n_rejected"] == 25
    kept = sorted(v["name"] for v in m["samples"].values())
    true_labels = {s.name for s in good[:12]}
    assert len(kept) <= 12 and sum(n in true_labels for n in kept) >= len(kept) - 1
    assert set(m["samples"]) <= {str(i) for i in range(24)}  # keyed as in the source manifest
    assert (
        m["rejected"]["99"] == "too_few_nuclei" and m["rejected_by_reason"]["too_few_nuclei"] == 1
    )
    assert set(m["rejected_by_reason"]) <= {
        "too_few_nuclei",
        "not_top_fidelity",
        "count_outside_real",
        "mean_area_outside_real",
        "mean_solidity_outside_real",
    }
    assert all("fidelity_pq" in v and "count" in v for v in m["samples"].values())
    assert all(
        v["fidelity_pq"] >= w["fidelity_pq"]
        for v in m["samples"].values()
        for k, w in m["rejected_scores"].items()
        if m["rejected"][k] == "not_top_fidelity"
    )
    assert set(m["real_bounds"]) == {"count", "mean_area", "mean_solidity"}
    out = load_folder(tmp_path / "out", progress=False)
    assert sorted(s.name for s in out) == kept
    assert (tmp_path / "out" / "labels" / f"{kept[0]}.png").read_bytes() == (
        src / "labels" / f"{kept[0]}.png"
    ).read_bytes()
    assert read_json(tmp_path / "out" / "manifest.json")["filter"]["keep_top"] == 0.5


def test_threshold_is_honoured(quality_data, segmenter_run, tmp_path):
    m = filter_pairs(
        quality_data["synthetic"],
        tmp_path / "out",
        FilterConfig(segmenter=str(segmenter_run), min_fidelity=0.6),
        progress=False,
    )
    assert all(v["fidelity_pq"] >= 0.6 for v in m["samples"].values())
    assert all(v["fidelity_pq"] < 0.6 for v in m["rejected_scores"].values())
    assert (
        m["n_accepted"] + m["n_rejected"] == 24
        and m["rejected_by_reason"].get("low_fidelity", 0) == m["n_rejected"]
    )


def test_filter_errors(quality_data, tmp_path):
    with pytest.raises(NudiffError, match="need a segmenter"):
        filter_pairs(quality_data["synthetic"], tmp_path / "o", FilterConfig(keep_top=0.5))
    with pytest.raises(NudiffError, match="needs the real data"):
        filter_pairs(
            quality_data["synthetic"], tmp_path / "o", FilterConfig(real_percentiles=(5, 95))
        )
    with pytest.raises(NudiffError, match="own folder"):
        filter_pairs(
            quality_data["synthetic"],
            quality_data["synthetic"],
            FilterConfig(real_percentiles=(5, 95)),
            quality_data["real"],
        )
    with pytest.raises(NudiffError, match="fidelity_metric"):
        FilterConfig(fidelity_metric="f1")


def test_cli_filter_only(quality_data, segmenter_run, tmp_path, capsys):
    out = tmp_path / "kept"
    assert (
        main(
            [
                "synthesize",
                "--filter-only",
                str(quality_data["synthetic"]),
                "--out",
                str(out),
                "--segmenter",
                str(segmenter_run),
                "--keep-top",
                "0.25",
                "--real",
                str(quality_data["real"]),
                "--real-percentiles",
                "5",
                "95",
            ]
        )
        == 0
    )
    m = read_json(out / "manifest.json")
    assert m["n_accepted"] <= 6 and m["filter"]["real_percentiles"] == [5.0, 95.0]
    assert (out / "mosaic.png").exists() and "pairs in" in capsys.readouterr().out
    assert main(["synthesize", "--out", str(tmp_path / "x")]) == 2


def test_refilter_into_the_same_folder_drops_stale_pairs(quality_data, segmenter_run, tmp_path):
    out = tmp_path / "out"
    loose = filter_pairs(
        quality_data["synthetic"],
        out,
        FilterConfig(segmenter=str(segmenter_run), keep_top=0.5),
        progress=False,
    )
    strict = filter_pairs(
        quality_data["synthetic"],
        out,
        FilterConfig(segmenter=str(segmenter_run), keep_top=0.25),
        progress=False,
    )
    assert loose["n_accepted"] == 12 and strict["n_accepted"] == 6
    assert sorted(s.name for s in load_folder(out, progress=False)) == sorted(
        v["name"] for v in strict["samples"].values()
    )
    with pytest.raises(NudiffError, match="no filter manifest"):
        filter_pairs(
            out,
            quality_data["synthetic"],
            FilterConfig(segmenter=str(segmenter_run)),
            progress=False,
        )
