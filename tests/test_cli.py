import subprocess
import sys

import numpy as np
import pytest

from helpers import disk_instance_map
from nudiff.cli import build_parser, main


def test_help_of_every_stage_has_an_example(capsys):
    parser = build_parser()
    commands = [
        ["--help"],
        ["data", "--help"],
        ["data", "show", "--help"],
        ["evaluate", "--help"],
        ["structure", "--help"],
        ["train", "--help"],
        ["synthesize", "--help"],
        ["segment", "--help"],
        ["experiment", "--help"],
        ["run", "--help"],
    ]
    for argv in commands:
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv)
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert "nudiff" in text
    for argv in (["evaluate", "--help"], ["synthesize", "--help"], ["experiment", "--help"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert "example" in capsys.readouterr().out


def _tiny_folder(root, names=("a", "b")):
    from nudiff.data.io import write_image, write_instance_map

    rng = np.random.default_rng(0)
    for n in names:
        inst = disk_instance_map()
        write_image(
            root / "images" / f"{n}.png", rng.integers(0, 255, inst.shape + (3,), dtype=np.uint8)
        )
        write_instance_map(root / "labels" / f"{n}.png", inst)
    return root


def test_evaluate_prints_table_and_writes_files(tmp_path, capsys):
    gt = _tiny_folder(tmp_path / "gt")
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(gt / "labels"),
                "--gt",
                str(gt),
                "--out",
                str(tmp_path / "ev"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "mean" in out and "1.0000" in out
    assert (tmp_path / "ev" / "metrics.json").exists() and (
        tmp_path / "ev" / "metrics.csv"
    ).exists()


def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys):
    gt = _tiny_folder(tmp_path / "gt")
    (gt / "labels" / "b.png").write_bytes(b"not a png")
    code = main(["evaluate", "--pred", str(gt / "labels"), "--gt", str(gt)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "b.png" in err


def test_train_set_overrides_a_key_and_a_typo_is_one_line(tmp_path, capsys):
    code = main(
        [
            "train",
            "structure",
            "--folder",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--set",
            "train.stepz=1",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "stepz" in err


def test_data_show_writes_pictures(tmp_path):
    gt = _tiny_folder(tmp_path / "gt", names=("a",))
    assert main(["data", "show", str(gt), "--out", str(tmp_path / "show"), "--crop", "0"]) == 0
    assert (tmp_path / "show" / "a_overlay.png").exists()
    assert (tmp_path / "show" / "a_structure.png").exists()


def test_console_entry_point_runs():
    r = subprocess.run(
        [sys.executable, "-m", "nudiff.cli", "--version"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "nudiff" in r.stdout


def test_structure_encode_decode_roundtrip(tmp_path):
    from nudiff.data.io import read_instance_map
    from nudiff.metrics import instance_metrics

    gt = _tiny_folder(tmp_path / "gt", names=("a",))
    assert (
        main(["structure", "encode", str(gt / "labels" / "a.png"), "--out", str(tmp_path / "s")])
        == 0
    )
    assert np.load(tmp_path / "s" / "a.npy").shape == (3, 64, 64)
    assert (
        main(["structure", "decode", str(tmp_path / "s" / "a.npy"), "--out", str(tmp_path / "d")])
        == 0
    )
    pred = read_instance_map(tmp_path / "d" / "a.png")
    assert instance_metrics(read_instance_map(gt / "labels" / "a.png"), pred)["pq"] > 0.95
