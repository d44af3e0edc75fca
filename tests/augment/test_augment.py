"""`nudiff augment`: bad input is one line before anything is written; the chain (training
stubbed) hands back both segmenters, the pairs in the asked format and a report that opens
with real-only against real + pairs; a second call resumes; --from fine-tunes the shipped model;
a QuPath export goes through `data convert` then `augment`."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from test_end_to_end import TINY, _dataset

import nudiff.experiment.loop as loop
import nudiff.experiment.training_data as td
from nudiff.augment import augment_plan, check_labeled_folder
from nudiff.augment.folds import fold_of
from nudiff.augment.pipeline import FINE_TUNE
from nudiff.cli import main
from nudiff.config import save_config
from nudiff.data.io import write_image, write_instance_map
from nudiff.metrics import METRICS
from nudiff.utils import DataError, read_json, write_json

MODELS = Path(__file__).resolve().parents[2] / "models"


def _tiny_config(tmp_path) -> Path:
    plan = {k: v for k, v in TINY.items() if k in ("image", "synthesis", "segment")}
    plan["synthesis"] = plan["synthesis"] | {
        "structures": "copypaste",
        "filter": {**TINY["synthesis"]["filter"], "segmenter": "real", "keep_top": 0.5},
    }
    plan["experiment"] = {"n_synthetic": 4}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def test_bad_folders_are_one_line_each_and_nothing_is_written(tmp_path, capsys):
    data = _dataset(tmp_path / "data")
    (data / "labels" / "img3.png").unlink()  # an image without its label
    out = tmp_path / "out"
    assert main(["augment", str(data), "--out", str(out)]) == 2
    assert "img3.png: no label named img3.*" in capsys.readouterr().err and not out.exists()

    data = _dataset(tmp_path / "binary")
    inst = np.zeros((128, 128), np.int32)
    inst[10:20, 10:20] = inst[50:60, 50:60] = 255  # two nuclei, one id: a mask
    write_instance_map(data / "labels" / "img1.png", inst)
    with pytest.raises(DataError, match="img1: is a binary mask, not an instance map"):
        check_labeled_folder(data)

    few = tmp_path / "few"
    inst = np.zeros((64, 64), np.int32)
    inst[5:15, 5:15], inst[30:40, 30:40] = 1, 2
    for i in range(2):
        write_image(few / "images" / f"a{i}.png", np.full((64, 64, 3), 200, np.uint8))
        write_instance_map(few / "labels" / f"a{i}.png", inst)
    with pytest.raises(DataError, match="holds 4 labeled nuclei; at least 30"):
        check_labeled_folder(few)
    with pytest.raises(DataError, match="2 held out for evaluation leave none to train on"):
        check_labeled_folder(_dataset(tmp_path / "two", n=2), held_out=2)
    assert (
        main(
            ["augment", str(_dataset(tmp_path / "ok")), "--out", str(out), "--from", str(tmp_path)]
        )
        == 2
    )
    assert (
        "model" in capsys.readouterr().err and not out.exists()
    )  # --from a folder that is no model
    # patches smaller than the image model's window: refused before anything is written
    ok = _dataset(tmp_path / "ok")
    assert main(["augment", str(ok), "--out", str(out), "--set", "data.patch_size=64"]) == 2
    err = capsys.readouterr().err
    assert "set data.patch_size >= 128" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_from_a_shipped_model_fine_tunes_its_image_model():
    plan = augment_plan(Path("configs/augment.yaml"), "my_labels", 3, MODELS / "kumar-f0.10")
    assert plan.image.train.init_from == str((MODELS / "kumar-f0.10" / "image").resolve())
    assert plan.image.prediction_type == "v_prediction" and plan.data.val_images == 3
    assert plan.experiment.data == ["my_labels"] and plan.experiment.fractions == [1.0]
    assert not plan.experiment.shipped_models


class _Calls(list):
    image_steps: int | None = None


def _stub_trainings(monkeypatch) -> list:
    """Stub the segmenter, diffusion training, synthesis and scoring of the chain; returns the
    list each stub appends its call to."""
    calls = _Calls()

    def train_segmenter(cfg, folder, real, synthetic, selection, resume=False):
        calls.append((folder.name, len(synthetic or [])))
        (folder / "model").mkdir(parents=True, exist_ok=True)
        write_json(folder / "model" / "config.yaml", {})

    def synthesize(structure, image, out, cfg, real_dir=None):
        calls.append("pairs")
        inst = np.zeros((64, 64), np.int32)
        inst[10:20, 10:20] = 1
        for k in range(cfg.n):
            write_image(Path(out) / "images" / f"s{k}.png", np.full((64, 64, 3), 200, np.uint8))
            write_instance_map(Path(out) / "labels" / f"s{k}.png", inst)
        from dataclasses import asdict

        write_json(Path(out) / "manifest.json", {"config": asdict(cfg), "n_accepted": cfg.n})

    def evaluate(pred, labels):  # the pairs add 0.05 AJI on each held-out image
        bonus = 0.05 if "real+syn" in pred.parent.name else 0.0
        per_image = {
            i: dict.fromkeys(METRICS, 0.5 + bonus + 0.01 * k)
            for k, i in enumerate(("img0", "img2"))
        }
        return {"mean": per_image["img0"], "per_image": per_image}

    monkeypatch.setattr(loop, "train_segmenter", train_segmenter)
    monkeypatch.setattr(loop, "predict_folder", lambda model, images, out: None)
    monkeypatch.setattr(loop, "evaluate_folders", evaluate)

    def train_diffusion(cfg, folder, *a, **k):  # a model folder whose config says its start
        calls.append("image model")
        (Path(folder) / "model").mkdir(parents=True)
        save_config(cfg, Path(folder) / "model" / "config.yaml")
        calls.image_steps = cfg.train.steps

    monkeypatch.setattr(td, "train_diffusion", train_diffusion)
    monkeypatch.setattr(td, "synthesize", synthesize)
    return calls


def test_the_chain_hands_back_segmenters_pairs_and_the_answer_and_resumes(
    tmp_path, monkeypatch, capsys
):
    calls = _stub_trainings(monkeypatch)
    data, out = _dataset(tmp_path / "mine", n=6), tmp_path / "out"
    args = [
        "augment",
        str(data),
        "--out",
        str(out),
        "--config",
        str(_tiny_config(tmp_path)),
        "--format",
        "hovernet",
    ]
    assert main(args) == 0
    assert calls == [
        ("f1.00_real_s0", 0),
        "image model",
        "pairs",
        ("f1.00_real+syn_s0", 4),
    ]  # filter first
    printed = capsys.readouterr().out
    assert (
        "| 100% | real+syn | 1 | 0.5550 | 0.5550 | 0.5550 | +0.0500 [+0.0500, +0.0500] | – | – | "
        "– |" in printed
    )
    assert (out / "segmenter").is_dir() and (out / "segmenter-real-only").is_dir()
    assert sorted(p.name for p in (out / "pairs" / "Labels").iterdir()) == [
        f"s{k}.mat" for k in range(4)
    ]
    table = (out / "report" / "table.md").read_text()
    assert table.startswith(
        "| labeled | training data | seeds | Dice | AJI | PQ | AJI gain over real"
    )
    # by default the shipped image model is fine-tuned, 250 steps (benchmarks/results/fine-tune/)
    assert "f1.00 image model: fine-tuned in this run from models/kumar-f0.10/image" in table
    assert calls.image_steps == FINE_TUNE["steps"]
    held_out = sorted(p.name for p in (out / "run" / "data" / "val" / "images").iterdir())
    assert len(held_out) == 2  # a quarter of 6, rounded: never trained on
    calls.clear()
    assert main(args) == 0 and calls == []  # everything done: nothing retrained


def test_a_qupath_export_converts_then_augments(tmp_path, monkeypatch, capsys):
    """The README's QuPath route: `nudiff data convert --geojson --slide`, then `nudiff
    augment` on the folder it writes (six annotated regions of one slide)."""
    from nudiff.data.formats import instance_map_to_geojson
    from nudiff.data.slide import write_pyramid

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:128, :128]
    truth, regions = np.zeros((256, 384), np.int32), []
    for k in range(6):  # 128-px regions in a 2 x 3 grid, 12 nuclei each, none cut
        y0, x0 = 128 * (k // 3), 128 * (k % 3)
        inst = np.zeros((128, 128), np.int32)
        for j, (cy, cx) in enumerate(rng.integers(12, 116, (12, 2)), start=1):
            inst[((yy - cy) ** 2 + (xx - cx) ** 2 <= 36) & (inst == 0)] = j
        truth[y0 : y0 + 128, x0 : x0 + 128] = np.where(inst > 0, inst + 100 * k, 0)
        ring = [[x0, y0], [x0 + 128, y0], [x0 + 128, y0 + 128], [x0, y0 + 128], [x0, y0]]
        regions.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"objectType": "annotation"},
            }
        )
    image = np.full((256, 384, 3), 225, np.uint8)
    image[truth > 0] = (80, 40, 140)
    slides, exports = tmp_path / "slides", tmp_path / "exports"
    write_pyramid(slides / "case1.tif", image, mpp=0.5, levels=2, tile=64)
    exports.mkdir()
    features = regions + instance_map_to_geojson(truth)["features"]
    write_json(exports / "case1.geojson", {"type": "FeatureCollection", "features": features})
    labels = tmp_path / "my_labels"
    convert = ["data", "convert", "--geojson", str(exports), "--slide", str(slides)]
    assert main([*convert, "--out", str(labels)]) == 0
    assert len(list((labels / "labels").glob("case1_x*_y*.png"))) == 6

    calls = _stub_trainings(monkeypatch)
    out = tmp_path / "out"
    config = str(_tiny_config(tmp_path))
    assert main(["augment", str(labels), "--out", str(out), "--config", config]) == 0
    assert ("f1.00_real+syn_s0", 4) in calls
    assert (out / "segmenter").is_dir() and (out / "segmenter-real-only").is_dir()
    held_out = sorted(p.name for p in (out / "run" / "data" / "val" / "images").iterdir())
    assert len(held_out) == 2 and all(n.startswith("case1_x") for n in held_out)
    assert "real+syn" in (out / "report" / "table.md").read_text()


def test_folds_deal_every_image_once_in_balanced_folds():
    names = [f"img{i}" for i in range(7)]
    folds = fold_of(names, 3)
    assert sorted(folds) == names and sorted(folds.values()).count(1) == 3
    assert {f: list(folds.values()).count(f) for f in (1, 2, 3)} == {1: 3, 2: 2, 3: 2}
    assert fold_of(list(reversed(names)), 3) == folds  # the order given does not matter
    with pytest.raises(ValueError, match="at least 2 folds"):
        fold_of(names, 1)


def test_k_fold_scores_each_image_once_then_trains_on_all(tmp_path, monkeypatch, capsys):
    calls = _stub_trainings(monkeypatch)
    seen = []

    def evaluate(pred, labels):  # each held-out image: the pairs add 0.02 to 0.06 AJI
        names = sorted(p.stem for p in (Path(labels) / "labels").iterdir())
        seen.append((pred.parent.name, tuple(names)))
        paired = "real+syn" in pred.parent.name
        per_image = {
            n: dict.fromkeys(METRICS, 0.5 + (0.02 * (1 + int(n[3:]) % 3) if paired else 0.0))
            for n in names
        }
        return {"mean": per_image[names[0]], "per_image": per_image}

    monkeypatch.setattr(loop, "evaluate_folders", evaluate)
    args = ["--out", str(out := tmp_path / "out"), "--config", str(_tiny_config(tmp_path))]
    few = _dataset(tmp_path / "few", n=4)  # 2 folds of 4 images leave 24 nuclei to train on
    assert main(["augment", str(few), *args, "--folds", "2"]) == 2
    assert "fold1/split/train: holds 24 labeled nuclei" in capsys.readouterr().err
    assert not out.exists()  # nothing left behind
    data = _dataset(tmp_path / "mine", n=6)
    args = ["augment", str(data), *args]
    assert main([*args, "--folds", "2", "--test", str(data)]) == 2
    assert "not with --test" in capsys.readouterr().err
    assert main([*args, "--folds", "7"]) == 2
    assert "--folds 7: needs 2 to 6 folds" in capsys.readouterr().err

    assert main([*args, "--folds", "3"]) == 0
    held = [names for cell, names in seen if cell == "f1.00_real_s0"]
    assert sorted(sum(held[:3], ())) == [f"img{i}" for i in range(6)]  # folds: each image once
    assert len(held) == 4  # three folds, then the final chain (scored, not reported)
    for fold in (1, 2, 3):
        split = out / "folds" / f"fold{fold}" / "split"
        train = {p.name for p in (split / "train" / "labels").iterdir()}
        test = {p.name for p in (split / "test" / "labels").iterdir()}
        assert not train & test and len(train | test) == 6 and len(test) == 2
    answer = read_json(out / "report" / "folds.json")
    assert answer["images"] == 6 and answer["gain"]["aji"]["mean"] == pytest.approx(0.04)
    assert "3-fold: every image held out once (6 images)" in capsys.readouterr().out
    assert (out / "segmenter").is_dir() and (out / "pairs").is_dir()
    assert calls.count("image model") == 4
    calls.clear()
    assert main([*args, "--folds", "3"]) == 0 and calls == []  # resumed: nothing retrained


def test_scratch_trains_the_image_model_from_the_config(tmp_path, monkeypatch):
    calls = _stub_trainings(monkeypatch)
    data, out = _dataset(tmp_path / "mine", n=6), tmp_path / "out"
    args = ["augment", str(data), "--out", str(out), "--config", str(_tiny_config(tmp_path))]
    assert main([*args, "--scratch"]) == 0
    assert "f1.00 image model: trained in this run" in (out / "report" / "table.md").read_text()
    assert calls.image_steps == TINY["image"]["train"]["steps"] != FINE_TUNE["steps"]
    plan = augment_plan(
        Path("configs/augment.yaml"),
        "x",
        1,
        MODELS / "kumar-f0.10",
        ["image.train.steps=40"],
    )
    assert plan.image.train.steps == 40 and plan.image.train.warmup_steps == 50  # --set wins
