"""`nudiff run` end to end on a tiny synthetic dataset (slow: about a minute on 2 cores)."""

import re

import numpy as np
import pytest
import yaml

from nudiff.cli import main
from nudiff.utils import read_json

TINY = {
    "experiment": {
        "fractions": [0.5, 1.0],
        "arms": ["real", "real+syn", "real+copypaste+syn", "syn-only"],
        "seeds": [0],
        "synthetic_fractions": [0.5],
        "n_synthetic": 4,
    },
    "data": {
        "val_images": 1,
        "patch_size": 64,
        "stride": 64,
        "strategy": "kmeans",
        "n_clusters": 2,
    },
    "structure": {
        "model": {
            "channels": [8, 16],
            "attention_levels": [False, True],
            "num_head_channels": 8,
            "norm_num_groups": 8,
        },
        "data": {"patch_size": 16, "scale": 0.5},
        "train": {
            "steps": 4,
            "batch_size": 2,
            "checkpoint_every": 2,
            "sample_every": 0,
            "precision": "no",
        },
    },
    "image": {
        "model": {
            "channels": [8, 16],
            "attention_levels": [False, True],
            "num_head_channels": 8,
            "norm_num_groups": 8,
            "spade_channels": 8,
        },
        "data": {"patch_size": 16, "scale": 0.5},
        "train": {
            "steps": 4,
            "batch_size": 2,
            "checkpoint_every": 2,
            "sample_every": 0,
            "precision": "no",
        },
    },
    "synthesis": {
        "structure_sample": {"steps": 2},
        "image_sample": {"steps": 2},
        "batch_size": 2,
        "precision": "no",
        "max_attempts_factor": 2.0,
        "filter": {
            "min_nuclei": 0,
            "min_mean_area": None,
            "max_mean_area": None,
            "max_foreground": 1.0,
        },
    },
    "segment": {
        "model": {"base": 8, "channels_last": False},
        "train": {
            "steps": 4,
            "batch_size": 2,
            "crop_size": 64,
            "val_every": 2,
            "checkpoint_every": 2,
            "log_every": 2,
            "precision": "no",
        },
        "augment": {"enabled": False},
    },
}


def _dataset(root, n=4, size=128):
    from nudiff.data.io import write_image, write_instance_map

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        inst = np.zeros((size, size), np.int32)
        for j, (cy, cx) in enumerate(rng.integers(10, size - 10, (12, 2)), start=1):
            inst[((yy - cy) ** 2 + (xx - cx) ** 2 <= 36) & (inst == 0)] = j
        img = np.full((size, size, 3), 225, np.uint8)
        img[inst > 0] = (80, 40, 140)
        write_image(root / "images" / f"img{i}.png", img)
        write_instance_map(root / "labels" / f"img{i}.png", inst)
    return root


@pytest.mark.slow
def test_run_end_to_end_and_resume(tmp_path, capsys):
    import torch

    torch.set_num_threads(1)
    data = _dataset(tmp_path / "data")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    assert main(["run", "--config", str(config), "--data", str(data), "--out", str(out)]) == 0
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("fraction,arm,seed,image,dice")
    assert len(rows) == 1 + 5  # 5 cells x 1 test image
    # the combined arm trains on both extra sets: 4 copy-paste + 4 synthetic patches
    assert re.search(
        r"f0.50_real\+copypaste\+syn_s0: \d+ real-role \+ 8 synthetic", capsys.readouterr().out
    )
    assert (out / "copypaste" / "f0.50" / "manifest.json").exists()
    for name in ("table.md", "chart.png", "index.html", "mosaic_f0.50.png"):
        assert (out / "report" / name).exists()
    assert (out / "cells" / "f0.50_real+syn_s0" / "pred" / "geojson").is_dir()
    timings = read_json(out / "timings.json")
    # a second run finds every cell finished and only rewrites the report
    (out / "report" / "table.md").unlink()
    assert main(["run", "--config", str(config), "--data", str(data), "--out", str(out)]) == 0
    assert read_json(out / "timings.json") == timings
    assert (out / "report" / "table.md").exists()


@pytest.mark.slow
def test_filter_by_the_fractions_own_real_segmenter(tmp_path):
    """synthesis.filter.segmenter: real -> the fraction's real cell is trained first (even when
    the grid has no real arm), committed, and scores the pairs; only the best half is kept."""
    import copy

    import torch

    torch.set_num_threads(1)
    data = _dataset(tmp_path / "data")
    plan = copy.deepcopy(TINY)
    plan["experiment"] |= {"fractions": [0.5], "arms": ["real+syn"]}
    plan["synthesis"]["filter"] |= {"segmenter": "real", "keep_top": 0.5}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(plan))
    out, results = tmp_path / "out", tmp_path / "results"
    assert (
        main(
            [
                "experiment",
                "--config",
                str(config),
                "--data",
                str(data),
                "--out",
                str(out),
                "--results",
                str(results),
            ]
        )
        == 0
    )
    assert (out / "cells" / "f0.50_real_s0" / "model").is_dir()
    assert (results / "cells" / "f0.50_real_s0.json").exists()
    manifest = read_json(out / "diffusion" / "f0.50" / "synthetic" / "manifest.json")
    assert manifest["filter"]["segmenter"].endswith("f0.50_real_s0")
    assert manifest["n_accepted"] == 4 and manifest["n_scored"] == 8
    kept = [s["fidelity_pq"] for s in manifest["samples"].values()]
    dropped = [s["fidelity_pq"] for s in manifest["rejected_scores"].values()]
    assert min(kept) >= max(dropped)
    assert (out / "cells" / "f0.50_real+syn_s0" / "metrics.json").exists()


@pytest.mark.slow
def test_models_only_trains_the_diffusion_models_and_no_cell(tmp_path):
    """--models-only trains what the unfinished synthetic cells need and stops; the full run
    then uses those models as they are (no retraining) and runs the cells."""
    import copy

    import torch

    torch.set_num_threads(1)
    data = _dataset(tmp_path / "data")
    plan = copy.deepcopy(TINY)
    plan["experiment"] |= {
        "fractions": [0.5, 1.0],
        "arms": ["real", "real+syn"],
        "synthetic_fractions": [0.5],
    }
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(plan))
    out = tmp_path / "out"
    args = ["experiment", "--config", str(config), "--data", str(data), "--out", str(out)]
    assert main([*args, "--models-only"]) == 0
    models = [out / "diffusion" / "f0.50" / kind / "model" for kind in ("structure", "image")]
    assert all(m.is_dir() for m in models)
    assert not (out / "diffusion" / "f1.00").exists() and not (out / "cells").exists()
    assert not (out / "results.csv").exists()
    timings = read_json(out / "timings.json")
    assert {"f0.50/train_structure", "f0.50/train_image"} <= set(timings)
    stamps = [f.stat().st_mtime_ns for m in models for f in sorted(m.iterdir())]
    assert main(args) == 0
    assert [f.stat().st_mtime_ns for m in models for f in sorted(m.iterdir())] == stamps
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 3
    assert {k: v for k, v in read_json(out / "timings.json").items() if k in timings} == timings


@pytest.mark.slow
def test_a_run_folder_prepared_for_other_fractions_gets_the_missing_subsets(tmp_path):
    """A run folder whose data/ was prepared for some fractions (a run with --set fractions=...)
    and is then run for others draws the missing subsets, keeps the old ones and their cells."""
    import copy

    import torch

    torch.set_num_threads(1)
    data = _dataset(tmp_path / "data")
    plan = copy.deepcopy(TINY)
    plan["experiment"] |= {"fractions": [1.0], "arms": ["real"]}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(plan))
    out = tmp_path / "out"
    args = ["experiment", "--config", str(config), "--data", str(data), "--out", str(out)]
    assert main(args) == 0
    subsets = out / "data" / "subsets"
    assert sorted(p.name for p in subsets.iterdir()) == ["frac1.00_seed0.json"]
    first = (subsets / "frac1.00_seed0.json").read_bytes()
    model = out / "cells" / "f1.00_real_s0" / "model"
    stamps = [f.stat().st_mtime_ns for f in sorted(model.iterdir())]
    assert main([*args, "--set", "experiment.fractions=[0.5, 1.0]"]) == 0
    assert sorted(p.name for p in subsets.iterdir()) == [
        "frac0.50_seed0.json",
        "frac1.00_seed0.json",
    ]
    assert (subsets / "frac1.00_seed0.json").read_bytes() == first
    assert [f.stat().st_mtime_ns for f in sorted(model.iterdir())] == stamps  # not retrained
    assert (out / "cells" / "f0.50_real_s0" / "metrics.json").exists()
