"""End to end on tiny models: train both diffusion models a few steps, synthesize, check the
paired dataset, its manifest, determinism and resume."""

import argparse

import numpy as np
import pytest

from helpers import disk_instance_map
from nudiff.data.dataset import load_folder
from nudiff.diffusion.config import DataConfig, SampleConfig
from nudiff.diffusion.train import train
from nudiff.quality.filter import FilterConfig
from nudiff.synthesis import SynthesisConfig, synthesize
from nudiff.utils import NudiffError, read_json


def test_synthesize_writes_a_readable_paired_dataset(models, tmp_path, syn_cfg):
    s, i = models
    m = synthesize(s, i, tmp_path / "syn", syn_cfg())
    assert m["n_accepted"] == 5
    pairs = load_folder(tmp_path / "syn", progress=False)
    assert len(pairs) == 5
    # 16-px model windows at scale 0.5 come back at the source resolution
    assert pairs[0].image.shape == (32, 32, 3) and pairs[0].instance_map.shape == (32, 32)
    assert (tmp_path / "syn" / "mosaic.png").exists()
    manifest = read_json(tmp_path / "syn" / "manifest.json")
    assert manifest["config"]["image_sample"]["guidance_scale"] == 2.0 and manifest[
        "structure_model"
    ] == str(s)
    assert len(list((tmp_path / "syn" / "structures").glob("*.npy"))) == 5


def test_deterministic_and_resumable(models, tmp_path, syn_cfg):
    s, i = models
    synthesize(s, i, tmp_path / "a", syn_cfg(n=4))
    synthesize(s, i, tmp_path / "b", syn_cfg(n=2))  # a shorter run ...
    with pytest.raises(NudiffError, match="different configuration"):
        synthesize(
            s,
            i,
            tmp_path / "b",
            syn_cfg(n=4, image_sample=SampleConfig(steps=2, guidance_scale=3.0)),
        )
        # ... cannot silently change its config
    with pytest.raises(NudiffError, match=r"configuration of \['n'\]"):
        synthesize(s, i, tmp_path / "a", syn_cfg(n=2))  # nor hold more pairs than asked
    a = load_folder(tmp_path / "a", progress=False)
    b = load_folder(tmp_path / "b", progress=False)
    assert len(b) == 2
    for x, y in zip(a[:2], b):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.instance_map, y.instance_map)
    # ... but a larger n extends it to exactly what a fresh run of that n draws
    synthesize(s, i, tmp_path / "b", syn_cfg(n=4))
    b = load_folder(tmp_path / "b", progress=False)
    assert len(b) == 4
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.instance_map, y.instance_map)
    # rerunning a finished job changes nothing
    before = (tmp_path / "a" / "images" / "syn_00000.png").read_bytes()
    synthesize(s, i, tmp_path / "a", syn_cfg(n=4))
    assert (tmp_path / "a" / "images" / "syn_00000.png").read_bytes() == before


def test_filter_counts_rejections(models, tmp_path, syn_cfg):
    s, i = models
    cfg = syn_cfg(n=2, max_attempts_factor=2.0)
    cfg.filter = FilterConfig(min_nuclei=10_000)  # nothing can pass
    m = synthesize(s, i, tmp_path / "none", cfg)
    assert m["n_accepted"] == 0 and m["rejected_by_reason"] == {"too_few_nuclei": 4}


def test_pair_filter_keeps_the_top_fraction_and_records_scores(
    models,
    untrained_segmenter,
    tmp_path,
    syn_cfg,
):
    from nudiff.data.io import write_image, write_instance_map

    s, i = models
    real = tmp_path / "real"
    inst = disk_instance_map((48, 48), ((12, 12), (12, 26), (34, 30)), 6)
    for k in range(2):
        write_image(real / "images" / f"r{k}.png", np.full((48, 48, 3), 200, np.uint8))
        write_instance_map(real / "labels" / f"r{k}.png", inst)
    cfg = syn_cfg(n=3)
    cfg.filter.segmenter, cfg.filter.keep_top = str(untrained_segmenter), 0.5
    m = synthesize(s, i, tmp_path / "syn", cfg, real_dir=real)
    assert (
        read_json(tmp_path / "syn" / "unfiltered" / "manifest.json")["n_accepted"] == 6
    )  # n / keep_top sampled
    assert m["n_accepted"] == 3 and m["rejected_by_reason"] == {"not_top_fidelity": 3}
    assert all("fidelity_pq" in v and "count" in v for v in m["samples"].values())
    assert len(load_folder(tmp_path / "syn", progress=False)) == 3
    assert m["config"]["filter"]["keep_top"] == 0.5 and m["structure_model"] == str(s)
    again = synthesize(s, i, tmp_path / "syn", cfg, real_dir=real)  # rerun: same result
    assert again["samples"] == m["samples"]
    cfg.filter.keep_top = 0.25
    with pytest.raises(NudiffError, match="different configuration"):
        synthesize(s, i, tmp_path / "syn", cfg, real_dir=real)
    cfg.filter.keep_top, cfg.n = 0.5, 4  # more pairs: 2 more sampled, the best 4 of 8 kept
    more = synthesize(s, i, tmp_path / "syn", cfg, real_dir=real)
    assert read_json(tmp_path / "syn" / "unfiltered" / "manifest.json")["n_accepted"] == 8
    assert more["n_accepted"] == 4 and len(load_folder(tmp_path / "syn", progress=False)) == 4


def test_pair_filter_by_real_statistics_needs_real_data(models, tmp_path, syn_cfg):
    s, i = models
    cfg = syn_cfg(n=2)
    cfg.filter.real_percentiles = (5.0, 95.0)
    with pytest.raises(NudiffError, match="needs the real data"):
        synthesize(s, i, tmp_path / "syn", cfg)


def test_quality_reads_a_synthesized_folder(models, tmp_path, syn_cfg):
    from nudiff.data.io import write_image, write_instance_map
    from nudiff.quality.assess import assess

    s, i = models
    synthesize(s, i, tmp_path / "syn", syn_cfg(n=4))
    inst = disk_instance_map((48, 48), ((12, 12), (12, 26), (34, 30)), 6)
    for k in range(2):
        write_image(
            tmp_path / "real" / "images" / f"r{k}.png", np.full((48, 48, 3), 200, np.uint8)
        )
        write_instance_map(tmp_path / "real" / "labels" / f"r{k}.png", inst)
    a = assess(tmp_path / "syn", tmp_path / "real", c2st_epochs=1, progress=False)
    assert a.metrics["n_synthetic"] == 4 and a.metrics["window"] == 32
    assert [p["name"] for p in a.pairs] == [f"syn_{j:05d}" for j in range(4)]


def test_stain_normalisation_pulls_synthetic_colour_to_the_real_images(models, tmp_path, syn_cfg):
    from nudiff.data.io import write_image, write_instance_map

    s, i = models
    for k in range(2):  # real reference: pink H&E-like images
        image = np.full((32, 32, 3), (230, 160, 200), np.uint8)
        image[8:16, 8:16] = (120, 60, 160)
        write_image(tmp_path / "real" / "images" / f"r{k}.png", image)
        write_instance_map(
            tmp_path / "real" / "labels" / f"r{k}.png", np.zeros((32, 32), np.int32)
        )
    synthesize(s, i, tmp_path / "plain", syn_cfg(n=2))
    synthesize(s, i, tmp_path / "norm", syn_cfg(n=2, stain="reinhard"), real_dir=tmp_path / "real")
    plain = load_folder(tmp_path / "plain", progress=False)
    norm = load_folder(tmp_path / "norm", progress=False)
    target = np.array([230, 160, 200]) * 0.8 + np.array([120, 60, 160]) * 0.2
    gap = [np.abs(p.image.reshape(-1, 3).mean(0) - target).sum() for p in (plain[0], norm[0])]
    assert gap[1] < gap[0]
    assert all(np.array_equal(a.instance_map, b.instance_map) for a, b in zip(plain, norm))
    with pytest.raises(NudiffError, match="needs real images"):
        synthesize(s, i, tmp_path / "x", syn_cfg(n=2, stain="reinhard"))
    with pytest.raises(NudiffError, match="synthesis.stain"):
        SynthesisConfig(stain="vahadane")


def test_larger_windows_than_the_models_were_trained_on(models, tmp_path, syn_cfg):
    s, i = models
    synthesize(s, i, tmp_path / "big", syn_cfg(n=2, size=32))  # trained on 16-px windows
    pairs = load_folder(tmp_path / "big", progress=False)
    assert pairs[0].image.shape == (64, 64, 3) and pairs[0].instance_map.shape == (64, 64)


def test_decode_and_label_upsampling_are_configurable(models, tmp_path, syn_cfg):
    from nudiff.data.resize import upsample_instance_map_smooth
    from nudiff.structure import DecodeParams, decode

    s, i = models
    cfg = syn_cfg(n=2, decode=DecodeParams(min_marker=2), label_upsampling="smooth")
    m = synthesize(s, i, tmp_path / "smooth", cfg)
    assert m["config"]["decode"]["min_marker"] == 2 and m["config"]["label_upsampling"] == "smooth"
    for pair in load_folder(tmp_path / "smooth", progress=False):
        structure = np.load(tmp_path / "smooth" / "structures" / f"{pair.name}.npy")
        assert (
            pair.instance_map == upsample_instance_map_smooth(decode(structure, cfg.decode), 2)
        ).all()
    with pytest.raises(NudiffError, match="label_upsampling"):
        SynthesisConfig(label_upsampling="bicubic")


def test_image_model_at_full_resolution_on_half_resolution_structures(
    models,
    tmp_path,
    syn_cfg,
    tiny_diffusion_config,
):
    """Structures sampled at scale 0.5, images at scale 1: the decoded labels are upsampled to
    full size first and the image is sampled there (no upsampled, blurred image)."""
    from nudiff.data.resize import upsample_labels
    from nudiff.structure import decode

    s, i_half = models
    inst = np.stack([disk_instance_map((48, 48), ((12, 12), (12, 26), (34, 30)), 6)] * 3)
    images = np.full(inst.shape + (3,), 230, np.uint8)
    images[inst > 0] = (90, 40, 150)
    cfg = tiny_diffusion_config("image")
    cfg.data = DataConfig(patch_size=32, scale=1.0)
    train(cfg, tmp_path / "i1", images, inst)
    m = synthesize(s, tmp_path / "i1", tmp_path / "syn", syn_cfg(n=2, label_upsampling="smooth"))
    assert m["scale"] == 1.0 and m["structure_scale"] == 0.5
    for pair in load_folder(tmp_path / "syn", progress=False):
        assert pair.image.shape == (32, 32, 3)
        structure = np.load(
            tmp_path / "syn" / "structures" / f"{pair.name}.npy"
        )  # as sampled, 16 px
        assert structure.shape[-1] == 16
        assert (
            pair.instance_map == upsample_labels(decode(structure, m_decode(m)), 2, "smooth")
        ).all()
    from nudiff.diffusion.networks import Denoiser, save_denoiser

    s1 = tiny_diffusion_config("structure")
    s1.data = DataConfig(patch_size=32, scale=1.0)
    save_denoiser(Denoiser(s1), tmp_path / "s1")  # untrained: refused before sampling
    with pytest.raises(NudiffError, match="below the structure model"):
        synthesize(tmp_path / "s1", i_half, tmp_path / "bad", syn_cfg(n=1))
    with pytest.raises(
        NudiffError, match="i1/model: holds an image diffusion model, not a structure"
    ):
        synthesize(tmp_path / "i1", i_half, tmp_path / "bad", syn_cfg(n=1))  # the models swapped


def m_decode(manifest):
    from nudiff.structure import DecodeParams

    return DecodeParams(**manifest["config"]["decode"])


def test_synthesize_writes_each_format_with_the_same_pairs(models, tmp_path, syn_cfg):
    import scipy.io

    from nudiff.data.formats import read_pair
    from nudiff.structure import relabel

    s, i = models
    png = synthesize(s, i, tmp_path / "png", syn_cfg(n=2))
    hv = synthesize(s, i, tmp_path / "hv", syn_cfg(n=2), pair_format="hovernet")
    npy = synthesize(s, i, tmp_path / "npy", syn_cfg(n=2), pair_format="npy")
    assert (png["format"], hv["format"], npy["format"]) == ("png", "hovernet", "npy")
    assert hv["samples"] == png["samples"] == npy["samples"]
    for sample in png["samples"].values():
        name = sample["name"]
        image, inst, _ = read_pair(tmp_path / "png", name, "png")
        mat = scipy.io.loadmat(tmp_path / "hv" / "Labels" / f"{name}.mat")
        assert mat["inst_map"].dtype == np.int32 and (mat["inst_map"] == relabel(inst)).all()
        assert mat["inst_centroid"].shape == (relabel(inst).max(), 2) and "type_map" not in mat
        assert read_pair(tmp_path / "hv", name, "hovernet")[0].tolist() == image.tolist()
        assert (np.load(tmp_path / "npy" / "images" / f"{name}.npy") == image).all()
        assert (np.load(tmp_path / "npy" / "labels" / f"{name}.npy") == inst).all()
    for out in ("hv", "npy"):
        assert (tmp_path / out / "mosaic.png").exists() and not (
            tmp_path / out / "labels" / "syn_00000.png"
        ).exists()


def test_synthesize_format_refusals_write_nothing(models, tmp_path, syn_cfg):
    from nudiff.synthesis import register

    s, i = models
    synthesize(s, i, tmp_path / "hv", syn_cfg(n=1), pair_format="hovernet")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "hv").rglob("*"))
    with pytest.raises(NudiffError, match="manifest.json: pairs written as hovernet, not npy"):
        synthesize(
            s, i, tmp_path / "hv", syn_cfg(n=2), pair_format="npy"
        )  # resume in another format
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "hv").rglob("*")) == before
    filtered = syn_cfg(n=1)
    filtered.filter.real_percentiles = (5, 95)
    with pytest.raises(NudiffError, match="pair filter reads and writes png pairs, not hovernet"):
        synthesize(s, i, tmp_path / "f", filtered, real_dir=tmp_path, pair_format="hovernet")
    with pytest.raises(NudiffError, match="unknown format 'tif'"):
        synthesize(s, i, tmp_path / "g", syn_cfg(n=1), pair_format="tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hv"]

    parser = argparse.ArgumentParser(prog="nudiff")
    register(parser.add_subparsers())
    argv = [
        "synthesize",
        "--structure-model",
        str(s),
        "--image-model",
        str(i),
        "--out",
        str(tmp_path / "c"),
    ]
    assert parser.parse_args(argv).pair_format == "png"
    assert parser.parse_args(argv + ["--format", "npy"]).pair_format == "npy"
    with pytest.raises(SystemExit):
        parser.parse_args(argv + ["--format", "tif"])
    args = parser.parse_args(
        [
            "synthesize",
            "--filter-only",
            str(tmp_path / "hv"),
            "--out",
            str(tmp_path / "c"),
            "--format",
            "npy",
        ]
    )
    with pytest.raises(NudiffError, match="pair filter reads and writes png pairs, not npy"):
        args.func(args)
    assert not (tmp_path / "c").exists()
