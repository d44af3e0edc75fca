import argparse
import json

import numpy as np
import pytest
import torch

from nudiff.model_folder import read_info, save_model_folder
from nudiff.segment.cli import register
from nudiff.segment.model import build_segmenter
from nudiff.segment.predict import load_segmenter, predict_folder
from nudiff.utils import DataError

io = pytest.importorskip("nudiff.data.io")


def _write_pairs(folder, toys):
    for t in toys:
        io.write_image(folder / "images" / f"{t.name}.png", t.image)
        io.write_instance_map(folder / "labels" / f"{t.name}.png", t.instance_map)
    return folder


@pytest.fixture
def run_dir(tmp_path, make_config):
    cfg = make_config()
    torch.manual_seed(0)
    model = build_segmenter(cfg)
    return save_model_folder(
        tmp_path / "run" / "model", model, cfg, "segmenter", {"step": 0}
    ).parent


def test_load_segmenter(run_dir, make_config):
    model, cfg = load_segmenter(run_dir)
    assert not model.training and cfg == make_config()
    assert load_segmenter(run_dir / "model")[1] == cfg


def test_predict_folder_writes_three_outputs(tmp_path, run_dir, make_toy):
    images = _write_pairs(
        tmp_path / "data", [make_toy(0, (64, 64), name="a"), make_toy(1, (100, 130), name="b")]
    )
    out = tmp_path / "pred"
    written = predict_folder(run_dir, images / "images", out, progress=False)
    assert [p.name for p in written] == ["a.png", "b.png"]
    inst = io.read_instance_map(out / "b.png")
    assert inst.shape == (100, 130)
    assert io.read_image(out / "overlays" / "b.png").shape == (100, 130, 3)
    geo = json.loads((out / "geojson" / "b.geojson").read_text())
    assert geo["type"] == "FeatureCollection"
    # --tta: the same files, from maps averaged over flipped copies (a different prediction)
    out8 = tmp_path / "pred8"
    predict_folder(run_dir, images / "images", out8, progress=False, tta=8)
    inst8 = io.read_instance_map(out8 / "b.png")
    assert inst8.shape == (100, 130)


def test_predict_folder_bad_image(tmp_path, run_dir):
    images = tmp_path / "images"
    images.mkdir()
    (images / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError) as e:
        predict_folder(run_dir, images, tmp_path / "pred", progress=False)
    assert "broken.png" in str(e.value) and "\n" not in str(e.value)


def _parser():
    parser = argparse.ArgumentParser(prog="nudiff")
    register(parser.add_subparsers(dest="command"))
    return parser


@pytest.mark.parametrize("action", ["train", "predict"])
def test_help_has_example(action, capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["segment", action, "--help"])
    assert "nudiff segment " + action in capsys.readouterr().out


def test_cli_train_then_predict(tmp_path, make_toy):
    real = _write_pairs(tmp_path / "real", [make_toy(s, name=f"r{s}") for s in range(2)])
    syn = _write_pairs(tmp_path / "syn", [make_toy(s, (48, 48), name=f"s{s}") for s in range(2)])
    val = _write_pairs(tmp_path / "val", [make_toy(9, (80, 80), name="v")])
    config = tmp_path / "c.yaml"
    config.write_text(
        "segment:\n  model: {widths: [8, 16]}\n"
        "  train: {steps: 2, batch_size: 2, crop_size: 32, precision: 'no', val_every: 2,"
        " log_every: 1, warmup_steps: 1}\n  infer: {tile: 32}\n"
    )
    args = _parser().parse_args(
        [
            "segment",
            "train",
            "--config",
            str(config),
            "--real",
            str(real),
            "--synthetic",
            str(syn),
            "--val",
            str(val),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    args.func(args)
    assert read_info(tmp_path / "run" / "model")["step"] == 2
    args = _parser().parse_args(
        [
            "segment",
            "predict",
            "--model",
            str(tmp_path / "run"),
            "--images",
            str(val / "images"),
            "--out",
            str(tmp_path / "pred"),
        ]
    )
    args.func(args)
    assert (tmp_path / "pred" / "v.png").exists()
    np.testing.assert_array_equal(
        io.read_instance_map(tmp_path / "pred" / "v.png").shape, (80, 80)
    )
