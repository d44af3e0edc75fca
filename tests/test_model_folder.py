"""One model-folder format: written and read by one pair of functions; earlier formats read."""

import pytest
import torch
import yaml
from safetensors.torch import save_file

from helpers import tiny_diffusion_config
from nudiff.checkpoint import state_dict_cpu
from nudiff.config import from_dict, to_dict
from nudiff.diffusion.networks import Denoiser, load_denoiser, save_denoiser
from nudiff.model_folder import (
    FORMAT_VERSION,
    read_info,
    read_model_folder,
    save_model_folder,
)
from nudiff.models import main, upgrade_model_folder
from nudiff.segment.config import SegmentConfig
from nudiff.segment.model import build_segmenter
from nudiff.segment.predict import load_segmenter
from nudiff.utils import DataError, write_json


def _denoiser(kind="structure"):
    torch.manual_seed(0)
    return Denoiser(tiny_diffusion_config(kind, attention=(False, False)))


def _segmenter():
    cfg = from_dict(
        SegmentConfig,
        {"model": {"widths": [8, 16]}, "infer": {"tile": 32}, "post": {"min_marker": 2}},
    )
    torch.manual_seed(0)
    return build_segmenter(cfg), cfg


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_model_folder_holds_weights_and_a_versioned_config(tmp_path):
    model = _denoiser("image")
    save_denoiser(model, tmp_path / "m", info={"step": 3})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.yaml",
        "model.safetensors",
    ]
    header = yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())
    assert header["format_version"] == FORMAT_VERSION and header["kind"] == "image"
    assert header["info"] == {"step": 3} and read_info(tmp_path / "m") == {"step": 3}
    loaded = load_denoiser(tmp_path / "m", "image")
    assert loaded.config == model.config and _same_weights(loaded, model)

    seg, cfg = _segmenter()
    save_model_folder(tmp_path / "run" / "model", seg, cfg, "segmenter", {"step": 1})
    loaded, loaded_cfg = load_segmenter(tmp_path / "run", "cpu")
    assert loaded_cfg == cfg and _same_weights(loaded, seg)
    save_model_folder(tmp_path / "run" / "model", seg, cfg, "segmenter")  # replaced as a whole
    assert read_info(tmp_path / "run" / "model") == {}


def test_folders_of_earlier_versions_load_and_upgrade(tmp_path, capsys):
    model = _denoiser()
    old = tmp_path / "diffusion"  # model.safetensors + config.json
    old.mkdir()
    save_file(state_dict_cpu(model), str(old / "model.safetensors"))
    write_json(old / "config.json", to_dict(model.config))
    assert _same_weights(load_denoiser(old, "structure"), model)

    seg, cfg = _segmenter()
    old_seg = tmp_path / "seg" / "model"  # model.safetensors + a bare config.yaml + info.json
    old_seg.mkdir(parents=True)
    save_file(state_dict_cpu(seg), str(old_seg / "model.safetensors"))
    bare = to_dict(cfg)
    bare["post"] = {k: None for k in bare["post"]} | {"min_marker": 2}  # PostConfig: unset = null
    (old_seg / "config.yaml").write_text(yaml.safe_dump(bare))
    write_json(old_seg / "info.json", {"step": 7})
    loaded, loaded_cfg = load_segmenter(tmp_path / "seg", "cpu")
    assert loaded_cfg == cfg and _same_weights(loaded, seg)
    assert read_model_folder(old_seg, SegmentConfig, ("segmenter",)).format_version == 0

    assert (
        main(["upgrade", str(old), str(old_seg)]) == 0
        and "format_version 1" in capsys.readouterr().out
    )
    assert sorted(p.name for p in old.iterdir()) == ["config.yaml", "model.safetensors"]
    assert sorted(p.name for p in old_seg.iterdir()) == ["config.yaml", "model.safetensors"]
    assert read_model_folder(old_seg, SegmentConfig, ("segmenter",)).info == {"step": 7}
    assert _same_weights(load_denoiser(old), model) and load_segmenter(old_seg, "cpu")[1] == cfg
    upgrade_model_folder(old)  # a current folder: rewritten as it is
    assert load_denoiser(old).config == model.config


def test_a_folder_of_another_kind_or_version_is_one_line_naming_it(tmp_path):
    save_denoiser(_denoiser("image"), tmp_path / "image")
    with pytest.raises(
        DataError, match=r"image.*holds an image diffusion model, not a structure diffusion model"
    ):
        load_denoiser(tmp_path / "image", "structure")
    with pytest.raises(DataError, match="holds an image diffusion model, not a segmenter"):
        load_segmenter(tmp_path / "image")
    seg, cfg = _segmenter()
    save_model_folder(tmp_path / "seg", seg, cfg, "segmenter")
    with pytest.raises(
        DataError, match="holds a segmenter, not a structure diffusion model or an image"
    ):
        load_denoiser(tmp_path / "seg")

    header = yaml.safe_load((tmp_path / "seg" / "config.yaml").read_text())
    (tmp_path / "seg" / "config.yaml").write_text(yaml.safe_dump(header | {"format_version": 99}))
    with pytest.raises(DataError, match="unknown model folder format_version 99"):
        load_segmenter(tmp_path / "seg")
    (tmp_path / "image" / "model.safetensors").unlink()
    with pytest.raises(DataError, match="no model.safetensors here"):
        load_denoiser(tmp_path / "image")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DataError, match="empty: no model.safetensors nor config.yaml here: not a model folder"
    ):
        load_denoiser(tmp_path / "empty")
    with pytest.raises(DataError, match="not found"):
        load_segmenter(tmp_path / "nowhere")
    assert main(["upgrade", str(tmp_path / "empty")]) == 2
