"""End to end on tiny models: train both diffusion models a few steps, synthesize, check the
paired dataset, its manifest, determinism and resume."""

import argparse

import numpy as np
import pytest
import torch

from helpers import disk_instance_map
from nudiff.data.dataset import load_folder
from nudiff.diffusion.config import (
    DataConfig,
    DiffusionConfig,
    ModelConfig,
    SampleConfig,
    TrainConfig,
)
from nudiff.diffusion.train import train
from nudiff.quality.filter import FilterConfig
from nudiff.synthesis import SynthesisConfig, synthesize
from nudiff.utils import NudiffError, read_json


def _cfg(kind: str) -> DiffusionConfig:
    return DiffusionConfig(
        model=ModelConfig(kind=kind, channels=(8, 16), attention_levels=(False, True), num_head_channels=8,
                          norm_num_groups=8, spade_channels=8),
        data=DataConfig(patch_size=16, scale=0.5),
        train=TrainConfig(steps=2, batch_size=2, precision="no", checkpoint_every=2, sample_every=0, log_every=1),
        sample=SampleConfig(sampler="ddim", steps=2),
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    inst = np.stack([disk_instance_map((48, 48), ((12, 12), (12, 26), (34, 30)), 6)] * 3)
    images = np.full(inst.shape + (3,), 230, np.uint8)
    images[inst > 0] = (90, 40, 150)
    train(_cfg("structure"), root / "s", None, inst)
    train(_cfg("image"), root / "i", images, inst)
    return root / "s", root / "i"


def _syn_cfg(n=5, **kw) -> SynthesisConfig:
    # an untrained model's structures are noise: accept anything so the plumbing is tested
    kw = {"structure_sample": SampleConfig(steps=2), "image_sample": SampleConfig(steps=2)} | kw
    return SynthesisConfig(n=n, batch_size=2, precision="no",
                           filter=FilterConfig(min_nuclei=0, min_mean_area=None, max_mean_area=None,
                                               max_foreground=1.0), **kw)


def test_synthesize_writes_a_readable_paired_dataset(models, tmp_path):
    s, i = models
    m = synthesize(s, i, tmp_path / "syn", _syn_cfg())
    assert m["n_accepted"] == 5
    pairs = load_folder(tmp_path / "syn", progress=False)
    assert len(pairs) == 5
    # 16-px model windows at scale 0.5 come back at the source resolution
    assert pairs[0].image.shape == (32, 32, 3) and pairs[0].instance_map.shape == (32, 32)
    assert (tmp_path / "syn" / "mosaic.png").exists()
    manifest = read_json(tmp_path / "syn" / "manifest.json")
    assert manifest["config"]["image_sample"]["guidance_scale"] == 2.0 and manifest["structure_model"] == str(s)
    assert len(list((tmp_path / "syn" / "structures").glob("*.npy"))) == 5


def test_deterministic_and_resumable(models, tmp_path):
    s, i = models
    synthesize(s, i, tmp_path / "a", _syn_cfg(n=4))
    synthesize(s, i, tmp_path / "b", _syn_cfg(n=2))  # a shorter run ...
    with pytest.raises(NudiffError, match="different configuration"):
        synthesize(s, i, tmp_path / "b", _syn_cfg(n=4, image_sample=SampleConfig(steps=2, guidance_scale=3.0)))
        # ... cannot silently change its config
    with pytest.raises(NudiffError, match=r"configuration of \['n'\]"):
        synthesize(s, i, tmp_path / "a", _syn_cfg(n=2))  # nor hold more pairs than asked
    a = load_folder(tmp_path / "a", progress=False)
    b = load_folder(tmp_path / "b", progress=False)
    assert len(b) == 2
    for x, y in zip(a[:2], b):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.instance_map, y.instance_map)
    # ... but a larger n extends it to exactly what a fresh run of that n draws
    synthesize(s, i, tmp_path / "b", _syn_cfg(n=4))
    b = load_folder(tmp_path / "b", progress=False)
    assert len(b) == 4
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.instance_map, y.instance_map)
    # rerunning a finished job changes nothing
    before = (tmp_path / "a" / "images" / "syn_00000.png").read_bytes()
    synthesize(s, i, tmp_path / "a", _syn_cfg(n=4))
    assert (tmp_path / "a" / "images" / "syn_00000.png").read_bytes() == before


def test_filter_counts_rejections(models, tmp_path):
    s, i = models
    cfg = _syn_cfg(n=2, max_attempts_factor=2.0)
    cfg.filter = FilterConfig(min_nuclei=10_000)  # nothing can pass
    m = synthesize(s, i, tmp_path / "none", cfg)
    assert m["n_accepted"] == 0 and m["rejected_by_reason"] == {"too_few_nuclei": 4}


@pytest.fixture(scope="module")
def untrained_segmenter(tmp_path_factory):
    """A segmenter run folder (untrained weights: the filter's plumbing, not its judgement)."""
    from nudiff.config import from_dict
    from nudiff.model_folder import save_model_folder
    from nudiff.segment.config import SegmentConfig
    from nudiff.segment.model import build_segmenter

    cfg = from_dict(SegmentConfig, {"model": {"widths": [8, 16]}, "infer": {"tile": 32}})
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("seg")
    save_model_folder(root / "model", build_segmenter(cfg), cfg, "segmenter", {"step": 0})
    return root


def test_pair_filter_keeps_the_top_fraction_and_records_scores(models, untrained_segmenter, tmp_path):
    from nudiff.data.io import write_image, write_instance_map

    s, i = models
    real = tmp_path / "real"
    inst = disk_instance_map((48, 48), ((12, 12), (12, 26), (34, 30)), 6)
    for k in range(2):
        write_image(real / "images" / f"r{k}.png", np.full((48, 48, 3), 200, np.uint8))
        write_instance_map(real / "labels" / f"r{k}.png", inst)
    cfg = _syn_cfg(n=3)
    cfg.filter.segmenter, cfg.filter.keep_top = str(untrained_segmenter), 0.5
    m = synthesize(s, i, tmp_path / "syn", cfg, real_dir=real)
    assert read_json(tmp_path / "syn" / "unfiltered" / "manifest.json")["n_accepted"] == 6  # n / keep_top sampled
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


def test_pair_filter_by_real_statistics_needs_real_data(models, tmp_path):
    s, i = models
    cfg = _syn_cfg(n=2)
    cfg.filter.real_percentiles = (5.0, 95.0)
    with pytest.raises(NudiffError, match="needs the real data"):
        synthesize(s, i, tmp_path / "syn", cfg)


def test_quality_reads_a_synthesized_folder(models, tmp_path):
    from nudiff.data.io import write_image, write_instance_map
    from nudiff.quality.assess import assess

    s, i = models
    synthesize(s, i, tmp_path / "syn", _syn_cfg(n=4))
    inst = disk_instance_map((48, 48), ((12, 12), (12, 26), (34, 30)), 6)
    for k in range(2):
        write_image(tmp_path / "real" / "images" / f"r{k}.png", np.full((48, 48, 3), 200, np.uint8))
        write_instance_map(tmp_path / "real" / "labels" / f"r{k}.png", inst)
    a = assess(tmp_path / "syn", tmp_path / "real", c2st_epochs=1, progress=False)
    assert a.metrics["n_synthetic"] == 4 and a.metrics["window"] == 32
    assert [p["name"] for p in a.pairs] == [f"syn_{j:05d}" for j in range(4)]


def test_stain_normalisation_pulls_synthetic_colour_to_the_real_images(models, tmp_path):
    from nudiff.data.io import write_image, write_instance_map

    s, i = models
    for k in range(2):  # real reference: pink H&E-like images
        image = np.full((32, 32, 3), (230, 160, 200), np.uint8)
        image[8:16, 8:16] = (120, 60, 160)
        write_image(tmp_path / "real" / "images" / f"r{k}.png", image)
        write_instance_map(tmp_path / "real" / "labels" / f"r{k}.png", np.zeros((32, 32), np.int32))
    synthesize(s, i, tmp_path / "plain", _syn_cfg(n=2))
    synthesize(s, i, tmp_path / "norm", _syn_cfg(n=2, stain="reinhard"), real_dir=tmp_path / "real")
    plain = load_folder(tmp_path / "plain", progress=False)
    norm = load_folder(tmp_path / "norm", progress=False)
    target = np.array([230, 160, 200]) * 0.8 + np.array([120, 60, 160]) * 0.2
    gap = [np.abs(p.image.reshape(-1, 3).mean(0) - target).sum() for p in (plain[0], norm[0])]
    assert gap[1] < gap[0]
    assert all(np.array_equal(a.instance_map, b.instance_map) for a, b in zip(plain, norm))
    with pytest.raises(NudiffError, match="needs real images"):
        synthesize(s, i, tmp_path / "x", _syn_cfg(n=2, stain="reinhard"))
    with pytest.raises(NudiffError, match="synthesis.stain"):
        SynthesisConfig(stain="vahadane")


def test_larger_windows_than_the_models_were_trained_on(models, tmp_path):
    s, i = models
    synthesize(s, i, tmp_path / "big", _syn_cfg(n=2, size=32))  # trained on 16-px windows
    pairs = load_folder(tmp_path / "big", progress=False)
    assert pairs[0].image.shape == (64, 64, 3) and pairs[0].instance_map.shape == (64, 64)


def test_decode_and_label_upsampling_are_configurable(models, tmp_path):
    from nudiff.data.resize import upsample_instance_map_smooth
    from nudiff.structure import DecodeParams, decode

    s, i = models
    cfg = _syn_cfg(n=2, decode=DecodeParams(min_marker=2), label_upsampling="smooth")
    m = synthesize(s, i, tmp_path / "smooth", cfg)
    assert m["config"]["decode"]["min_marker"] == 2 and m["config"]["label_upsampling"] == "smooth"
    for pair in load_folder(tmp_path / "smooth", progress=False):
        structure = np.load(tmp_path / "smooth" / "structures" / f"{pair.name}.npy")
        assert (pair.instance_map == upsample_instance_map_smooth(decode(structure, cfg.decode), 2)).all()
    with pytest.raises(NudiffError, match="label_upsampling"):
        SynthesisConfig(label_upsampling="bicubic")


def test_cli_sets_decode_and_label_upsampling(models, tmp_path):
    from nudiff.cli import main

    s, i = models
    argv = ["synthesize", "--structure-model", str(s), "--image-model", str(i), "-n", "1", "--steps", "2",
            "--out", str(tmp_path / "cli"), "--min-marker", "2", "--label-upsampling", "smooth"]
    assert main(argv) == 0
    config = read_json(tmp_path / "cli" / "manifest.json")["config"]
    assert config["decode"]["min_marker"] == 2 and config["label_upsampling"] == "smooth"


def test_subset_window_is_a_relabelled_flip_or_rotation_of_a_crop():
    from nudiff.synthesis import subset_window

    label = np.zeros((40, 50), np.int32)
    label[2:6, 3:9], label[20:30, 10:12], label[35:40, 40:50] = 7, 3, 12
    for seed in range(6):
        w = subset_window([label], 24, np.random.default_rng(seed))
        assert w.shape == (24, 24) and w.dtype == np.int32
        assert set(np.unique(w)) == set(range(int(w.max()) + 1))  # ids 1..n, no gaps
        found = any(
            np.array_equal(w > 0, np.rot90(label[y:y + 24, x:x + 24], k)[:, ::f] > 0)
            for y in range(17) for x in range(27) for k in range(4) for f in (1, -1))
        assert found


def test_structures_from_the_subset_keep_its_labels_exactly(models, tmp_path):
    from nudiff.data.io import write_image, write_instance_map
    from nudiff.structure import encode

    _, i = models
    real = disk_instance_map((32, 32), ((8, 8), (8, 22), (24, 16)), 5)  # 16-px windows at scale 0.5
    write_image(tmp_path / "real" / "images" / "r0.png", np.full((32, 32, 3), 200, np.uint8))
    write_instance_map(tmp_path / "real" / "labels" / "r0.png", real)
    m = synthesize(None, i, tmp_path / "syn", _syn_cfg(n=4, structures="subset"), real_dir=tmp_path / "real")
    assert m["n_accepted"] == 4 and m["structure_model"] is None
    transforms = [np.rot90(real, k)[:, ::f] for k in range(4) for f in (1, -1)]
    for pair in load_folder(tmp_path / "syn", progress=False):
        assert pair.image.shape == (32, 32, 3)
        # the label is the real map under one of the 8 flips/rotations, ids and all
        assert any(np.array_equal(pair.instance_map > 0, t > 0) and pair.instance_map.max() == 3
                   for t in transforms)
        condition = np.load(tmp_path / "syn" / "structures" / f"{pair.name}.npy")
        small = pair.instance_map[1::2, 1::2]  # nearest halving, pixel-centre aligned
        assert np.allclose(condition, encode(small, min_area=round(30 * 0.25)))
    with pytest.raises(NudiffError, match="needs the labeled subset"):
        synthesize(None, i, tmp_path / "x", _syn_cfg(n=1, structures="subset"))
    with pytest.raises(NudiffError, match="at least 64 px"):
        synthesize(None, i, tmp_path / "y", _syn_cfg(n=1, structures="subset", size=32), real_dir=tmp_path / "real")
    with pytest.raises(NudiffError, match="synthesis.structures"):
        SynthesisConfig(structures="model")


def test_cli_structures_subset_needs_no_structure_model(models, tmp_path):
    from nudiff.cli import main
    from nudiff.data.io import write_image, write_instance_map

    _, i = models
    write_image(tmp_path / "real" / "images" / "r0.png", np.full((32, 32, 3), 200, np.uint8))
    write_instance_map(tmp_path / "real" / "labels" / "r0.png", disk_instance_map((32, 32), ((16, 16),), 6))
    argv = ["synthesize", "--image-model", str(i), "--structures", "subset", "--real", str(tmp_path / "real"),
            "-n", "1", "--steps", "2", "--out", str(tmp_path / "cli")]
    assert main(argv) == 0
    assert read_json(tmp_path / "cli" / "manifest.json")["config"]["structures"] == "subset"
    # the method's default needs a structure model: a one-line error, a failing exit code
    assert main(["synthesize", "--image-model", str(i), "-n", "1", "--out", str(tmp_path / "z")]) != 0


def test_image_model_at_full_resolution_on_half_resolution_structures(models, tmp_path):
    """Structures sampled at scale 0.5, images at scale 1: the decoded labels are upsampled to
    full size first and the image is sampled there (no upsampled, blurred image)."""
    from nudiff.data.resize import upsample_labels
    from nudiff.structure import decode

    s, i_half = models
    inst = np.stack([disk_instance_map((48, 48), ((12, 12), (12, 26), (34, 30)), 6)] * 3)
    images = np.full(inst.shape + (3,), 230, np.uint8)
    images[inst > 0] = (90, 40, 150)
    cfg = _cfg("image")
    cfg.data = DataConfig(patch_size=32, scale=1.0)
    train(cfg, tmp_path / "i1", images, inst)
    m = synthesize(s, tmp_path / "i1", tmp_path / "syn", _syn_cfg(n=2, label_upsampling="smooth"))
    assert m["scale"] == 1.0 and m["structure_scale"] == 0.5
    for pair in load_folder(tmp_path / "syn", progress=False):
        assert pair.image.shape == (32, 32, 3)
        structure = np.load(tmp_path / "syn" / "structures" / f"{pair.name}.npy")  # as sampled, 16 px
        assert structure.shape[-1] == 16
        assert (pair.instance_map == upsample_labels(decode(structure, m_decode(m)), 2, "smooth")).all()
    from nudiff.diffusion.networks import Denoiser, save_denoiser

    s1 = _cfg("structure")
    s1.data = DataConfig(patch_size=32, scale=1.0)
    save_denoiser(Denoiser(s1), tmp_path / "s1")  # untrained: refused before sampling
    with pytest.raises(NudiffError, match="below the structure model"):
        synthesize(tmp_path / "s1", i_half, tmp_path / "bad", _syn_cfg(n=1))
    with pytest.raises(NudiffError, match="i1/model: holds an image diffusion model, not a structure"):
        synthesize(tmp_path / "i1", i_half, tmp_path / "bad", _syn_cfg(n=1))  # the models swapped


def m_decode(manifest):
    from nudiff.structure import DecodeParams

    return DecodeParams(**manifest["config"]["decode"])


def test_pasted_window_keeps_the_window_and_adds_whole_real_nuclei():
    from scipy import ndimage as ndi

    from nudiff.synthesis import _label_donors, pasted_window, subset_window

    label = disk_instance_map((60, 60), ((12, 12), (40, 44)), 5)
    donors, cfg = _label_donors([label], nuclei=4)
    shapes = {d.mask.sum() for d in donors}
    grew = 0
    for seed in range(6):
        window = subset_window([label], 40, np.random.default_rng(seed))
        pasted = pasted_window([label], donors, 40, np.random.default_rng(seed), cfg)
        assert pasted.dtype == np.int32 and pasted.shape == (40, 40)
        np.testing.assert_array_equal(pasted[window > 0], window[window > 0])  # the window's labels untouched
        new = [i for i in np.unique(pasted) if i > window.max()]
        assert new == list(range(window.max() + 1, window.max() + 1 + len(new)))  # fresh ids, no gaps
        for i in new:  # each a whole donor nucleus, never touching another
            assert ndi.label(pasted == i)[1] == 1 and (pasted == i).sum() in shapes
            ring = ndi.binary_dilation(pasted == i, iterations=2) & (pasted != i)
            assert not (pasted[ring] > 0).any()
        grew += len(new)
    assert grew > 0


def test_structures_copypaste_synthesizes_on_pasted_real_labels(models, tmp_path):
    from nudiff.data.io import write_image, write_instance_map

    _, i = models
    real = disk_instance_map((32, 32), ((8, 8),), 4)  # one nucleus: room to paste copies of it
    write_image(tmp_path / "real" / "images" / "r0.png", np.full((32, 32, 3), 200, np.uint8))
    write_instance_map(tmp_path / "real" / "labels" / "r0.png", real)
    cfg = _syn_cfg(n=4, structures="copypaste", pasted_nuclei=3)
    m = synthesize(None, i, tmp_path / "syn", cfg, real_dir=tmp_path / "real")
    assert m["n_accepted"] == 4 and m["structure_model"] is None
    pairs = load_folder(tmp_path / "syn", progress=False)
    nucleus = (real == 1).sum()
    for pair in pairs:  # every nucleus is the real one, turned, whole
        areas = np.bincount(pair.instance_map.ravel())[1:]
        assert pair.image.shape == (32, 32, 3) and set(areas) == {nucleus}
    assert max(p.instance_map.max() for p in pairs) > 1  # nuclei were pasted
    with pytest.raises(NudiffError, match="'copypaste' needs the labeled subset"):
        synthesize(None, i, tmp_path / "x", _syn_cfg(n=1, structures="copypaste"))
    from nudiff.cli import main

    # the CLI's --pasted-nuclei reaches the config: 0 pasted leaves the window's one nucleus
    argv = ["synthesize", "--image-model", str(i), "--structures", "copypaste", "--pasted-nuclei", "0",
            "--real", str(tmp_path / "real"), "-n", "2", "--out", str(tmp_path / "cli")]
    assert main(argv) == 0
    assert read_json(tmp_path / "cli" / "manifest.json")["config"]["pasted_nuclei"] == 0
    assert max(p.instance_map.max() for p in load_folder(tmp_path / "cli", progress=False)) == 1
    # a structure model the labels would not come from is an error, not silently ignored
    assert main([*argv[:-1], str(tmp_path / "cli2"), "--structure-model", str(i)]) == 2


def test_synthesize_writes_each_format_with_the_same_pairs(models, tmp_path):
    import scipy.io

    from nudiff.data.formats import read_pair
    from nudiff.structure import relabel

    s, i = models
    png = synthesize(s, i, tmp_path / "png", _syn_cfg(n=2))
    hv = synthesize(s, i, tmp_path / "hv", _syn_cfg(n=2), pair_format="hovernet")
    npy = synthesize(s, i, tmp_path / "npy", _syn_cfg(n=2), pair_format="npy")
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
        assert (tmp_path / out / "mosaic.png").exists() and not (tmp_path / out / "labels" / "syn_00000.png").exists()


def test_synthesize_format_refusals_write_nothing(models, tmp_path):
    from nudiff.synthesis import register

    s, i = models
    synthesize(s, i, tmp_path / "hv", _syn_cfg(n=1), pair_format="hovernet")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "hv").rglob("*"))
    with pytest.raises(NudiffError, match="manifest.json: pairs written as hovernet, not npy"):
        synthesize(s, i, tmp_path / "hv", _syn_cfg(n=2), pair_format="npy")  # resume in another format
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "hv").rglob("*")) == before
    filtered = _syn_cfg(n=1)
    filtered.filter.real_percentiles = (5, 95)
    with pytest.raises(NudiffError, match="pair filter reads and writes png pairs, not hovernet"):
        synthesize(s, i, tmp_path / "f", filtered, real_dir=tmp_path, pair_format="hovernet")
    with pytest.raises(NudiffError, match="unknown format 'tif'"):
        synthesize(s, i, tmp_path / "g", _syn_cfg(n=1), pair_format="tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hv"]

    parser = argparse.ArgumentParser(prog="nudiff")
    register(parser.add_subparsers())
    argv = ["synthesize", "--structure-model", str(s), "--image-model", str(i), "--out", str(tmp_path / "c")]
    assert parser.parse_args(argv).pair_format == "png"
    assert parser.parse_args(argv + ["--format", "npy"]).pair_format == "npy"
    with pytest.raises(SystemExit):
        parser.parse_args(argv + ["--format", "tif"])
    args = parser.parse_args(["synthesize", "--filter-only", str(tmp_path / "hv"), "--out", str(tmp_path / "c"),
                              "--format", "npy"])
    with pytest.raises(NudiffError, match="pair filter reads and writes png pairs, not npy"):
        args.func(args)
    assert not (tmp_path / "c").exists()


def test_each_model_is_sampled_with_its_own_settings_unless_synthesis_says_otherwise(models, tmp_path):
    s, i = models  # both trained with sample: {sampler: ddim, steps: 2}
    m = synthesize(s, i, tmp_path / "own", _syn_cfg(n=2, structure_sample=None, image_sample=None))
    assert m["config"]["structure_sample"]["steps"] == 2 and m["config"]["image_sample"]["steps"] == 2
    same = synthesize(s, i, tmp_path / "explicit", _syn_cfg(n=2))  # the same settings written out
    for a, b in zip(load_folder(tmp_path / "own", progress=False), load_folder(tmp_path / "explicit", progress=False)):
        np.testing.assert_array_equal(a.image, b.image)
    assert same["config"] == m["config"]
    # the manifest records what was resolved: a rerun with the settings written out is the same set
    synthesize(s, i, tmp_path / "own", _syn_cfg(n=2))


def test_flat_sampler_keys_of_earlier_versions_are_read_with_a_warning(tmp_path, capsys):
    from nudiff.config import from_dict

    cfg = from_dict(SynthesisConfig, {"structure_steps": 20, "image_sampler": "dpmsolver++", "guidance_scale": 1.5},
                    "old.yaml")
    assert cfg.structure_sample == SampleConfig(sampler="ddim", steps=20)
    assert cfg.image_sample == SampleConfig(sampler="dpmsolver++", steps=50, guidance_scale=1.5)
    assert "old.yaml: synthesis keys structure_steps, image_sampler, guidance_scale are deprecated" in capsys.readouterr().err
    assert from_dict(SynthesisConfig, {}).image_sample is None
    with pytest.raises(NudiffError, match="image_steps and image_sample both given"):
        from_dict(SynthesisConfig, {"image_steps": 5, "image_sample": {"steps": 5}}, "both.yaml")


def test_one_min_area_rule_for_training_windows_and_conditions():
    from nudiff.diffusion.data import PatchSampler

    assert DataConfig(scale=0.5).hv_min_area == 8 and DataConfig(scale=1).hv_min_area == 30
    assert DataConfig(scale=0.5, min_area=3).hv_min_area == 3
    inst = np.stack([disk_instance_map((32, 32), ((10, 10),), 4)])
    assert PatchSampler(DataConfig(patch_size=16, scale=0.5), inst).min_area == 8
