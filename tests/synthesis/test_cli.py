"""`nudiff synthesize`: flags reach the configuration; refusals are one-line errors."""

import numpy as np

from helpers import disk_instance_map
from nudiff.utils import read_json


def test_cli_sets_decode_and_label_upsampling(models, tmp_path):
    from nudiff.cli import main

    s, i = models
    argv = [
        "synthesize",
        "--structure-model",
        str(s),
        "--image-model",
        str(i),
        "-n",
        "1",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "cli"),
        "--min-marker",
        "2",
        "--label-upsampling",
        "smooth",
    ]
    assert main(argv) == 0
    config = read_json(tmp_path / "cli" / "manifest.json")["config"]
    assert config["decode"]["min_marker"] == 2 and config["label_upsampling"] == "smooth"


def test_cli_structures_subset_needs_no_structure_model(models, tmp_path):
    from nudiff.cli import main
    from nudiff.data.io import write_image, write_instance_map

    _, i = models
    write_image(tmp_path / "real" / "images" / "r0.png", np.full((32, 32, 3), 200, np.uint8))
    write_instance_map(
        tmp_path / "real" / "labels" / "r0.png", disk_instance_map((32, 32), ((16, 16),), 6)
    )
    argv = [
        "synthesize",
        "--image-model",
        str(i),
        "--structures",
        "subset",
        "--real",
        str(tmp_path / "real"),
        "-n",
        "1",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "cli"),
    ]
    assert main(argv) == 0
    assert read_json(tmp_path / "cli" / "manifest.json")["config"]["structures"] == "subset"
    # the method's default needs a structure model: a one-line error, a failing exit code
    assert (
        main(["synthesize", "--image-model", str(i), "-n", "1", "--out", str(tmp_path / "z")]) != 0
    )
