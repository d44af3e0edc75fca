"""The shipped model collection (models/): every shipped model loads, has its card and samples;
shipping writes a loadable folder; bad folders get one line."""

import shutil

import numpy as np
import pytest
import torch

from helpers import tiny_diffusion_config
from nudiff.diffusion.config import DiffusionConfig
from nudiff.diffusion.networks import Denoiser, save_denoiser
from nudiff.diffusion.sample import load_model, sample_images, sample_structures
from nudiff.model_folder import read_info
from nudiff.models import CARD_KEYS, MODELS_DIR, check_card, ship, shipped
from nudiff.utils import DataError

SHIPPED = shipped()
CARD = {
    "dataset": "toy",
    "fraction": 0.1,
    "subset_seed": 0,
    "subset_sha256": "0" * 64,
    "minutes": 0.1,
    "quality": {"foreground_fraction": 0.3},
    "quality_source": "none",
    "command": "made in a test",
}


def test_the_collection_is_there():
    assert SHIPPED, f"no shipped models under {MODELS_DIR}"
    assert (MODELS_DIR / "README.md").is_file()


@pytest.mark.parametrize("folder", SHIPPED, ids=[f"{p.parent.name}/{p.name}" for p in SHIPPED])
def test_each_shipped_model_loads_has_its_card_and_samples(folder):
    torch.set_num_threads(1)
    card = read_info(folder)["card"]
    check_card(card, folder)
    assert (folder / "README.md").is_file()
    assert (folder / "model.safetensors").stat().st_size < 20e6  # the collection stays small
    model, cfg = load_model(folder, device="cpu")
    assert cfg.model.kind == card["kind"] == folder.name
    structures = (
        sample_structures(
            load_model(folder.parent / "structure", device="cpu")[0],
            1,
            seed=0,
            sampler="ddim",
            steps=2,
            size=32,
            progress=False,
        )
        if (folder.parent / "structure").is_dir()
        else np.zeros((1, 3, 32, 32), np.float32)
    )
    if cfg.model.kind == "structure":
        assert structures.shape == (1, 3, 32, 32) and np.isfinite(structures).all()
    else:
        image = sample_images(model, structures, seed=0, sampler="ddim", steps=2, progress=False)
        assert image.shape == (1, 32, 32, 3) and image.dtype == np.uint8


@pytest.mark.parametrize("folder", [p for p in SHIPPED if p.name == "image"])
def test_a_shipped_image_model_fits_its_structure_model(folder):
    structure = folder.parent / "structure"
    if not structure.is_dir():
        pytest.skip("no structure model beside it")
    assert (
        load_model(folder, device="cpu")[1].data.scale
        >= load_model(structure, device="cpu")[1].data.scale
    )


def _tiny_run(tmp_path, kind="structure"):
    cfg = tiny_diffusion_config(kind, attention=(False, False), prediction_type="v_prediction")
    torch.manual_seed(0)
    save_denoiser(Denoiser(cfg), tmp_path / "run" / "model", info={"step": 7})
    return tmp_path / "run"


def test_ship_writes_a_loadable_folder_with_its_card(tmp_path):
    out = ship(_tiny_run(tmp_path), tmp_path / "models" / "toy-f0.10" / "structure", CARD)
    card = read_info(out)["card"]
    assert set(CARD_KEYS) <= set(card) and card["steps"] == 7 and card["kind"] == "structure"
    assert "10% of the labels" in (out / "README.md").read_text()
    model, cfg = load_model(out, device="cpu", kind="structure")
    assert cfg.prediction_type == "v_prediction"
    assert shipped(tmp_path / "models") == [out]


def test_a_card_without_its_keys_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "models" / "toy-f0.10" / "structure"
    with pytest.raises(DataError, match="model card lacks quality, quality_source"):
        ship(
            _tiny_run(tmp_path),
            out,
            {k: v for k, v in CARD.items() if not k.startswith("quality")},
        )
    assert not out.exists()


def test_a_shipped_folder_missing_its_weights_or_of_the_wrong_kind_is_one_line(tmp_path):
    out = ship(_tiny_run(tmp_path), tmp_path / "m" / "structure", CARD)
    with pytest.raises(DataError, match="holds a structure diffusion model, not an image"):
        load_model(out, device="cpu", kind="image")
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(DataError, match=r"broken.*no model\.safetensors") as e:
        load_model(broken, device="cpu")
    assert "\n" not in str(e.value)


def test_find_shipped_matches_config_and_subset_only(tmp_path):
    from dataclasses import replace

    from nudiff.data.subsets import subset_filename
    from nudiff.models import find_shipped, subset_sha256
    from nudiff.utils import write_json

    data = tmp_path / "data"
    write_json(data / "subsets" / subset_filename(0.1, 0), {"patches": ["b", "a"]})
    card = CARD | {"subset_sha256": subset_sha256(data, 0.1)}
    out = ship(_tiny_run(tmp_path), tmp_path / "models" / "toy-f0.10" / "structure", card)
    cfg = load_model(out, device="cpu")[1]
    root = tmp_path / "models"
    assert find_shipped("structure", cfg, data, 0.1, root=root) == out
    # bookkeeping and sampler settings do not decide the weights
    same = replace(
        cfg,
        train=replace(cfg.train, checkpoint_every=7, sample_every=0),
        sample=replace(cfg.sample, steps=3),
    )
    assert find_shipped("structure", same, data, 0.1, root=root) == out
    assert (
        find_shipped(
            "structure", replace(cfg, train=replace(cfg.train, steps=5)), data, 0.1, root=root
        )
        is None
    )
    assert find_shipped("image", cfg, data, 0.1, root=root) is None
    write_json(
        data / "subsets" / subset_filename(0.1, 0), {"patches": ["a", "c"]}
    )  # another subset
    assert find_shipped("structure", cfg, data, 0.1, root=root) is None
    assert find_shipped("structure", cfg, tmp_path / "nowhere", 0.1, root=root) is None


def test_the_kumar_grid_config_takes_the_shipped_structure_model():
    """configs/kumar-grid.yaml trains exactly the shipped Kumar 10 % structure model, so its runs
    take it instead of training (the subset is checked at run time by its sha256)."""
    from pathlib import Path

    from nudiff.config import differences, load_config

    shipped_cfg = load_model(MODELS_DIR / "kumar-f0.10" / "structure", device="cpu")[1]
    grid = load_config(
        DiffusionConfig,
        Path(__file__).parents[1] / "configs" / "kumar-grid.yaml",
        section="structure",
    )
    diff = [d for d in differences(shipped_cfg, grid) if not d.startswith("sample.")]
    assert diff == []


@pytest.mark.parametrize("kind", ["structure", "image"])
def test_the_main_job_takes_the_shipped_models(kind):
    """configs/demo.yaml (make run) samples and paints with exactly the shipped Kumar 10 %
    structure and image models."""
    from pathlib import Path

    from nudiff.config import differences
    from nudiff.experiment import load_plan

    shipped_cfg = load_model(MODELS_DIR / "kumar-f0.10" / kind, device="cpu")[1]
    demo = getattr(load_plan(Path(__file__).parents[1] / "configs" / "demo.yaml"), kind)
    diff = [d for d in differences(shipped_cfg, demo) if not d.startswith("sample.")]
    assert diff == []
