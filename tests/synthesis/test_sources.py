"""Label sources: windows of the labeled subset, pasted nuclei, and synthesis on real labels."""

import numpy as np
import pytest

from helpers import disk_instance_map
from nudiff.data.dataset import load_folder
from nudiff.synthesis import SynthesisConfig, synthesize
from nudiff.utils import NudiffError, read_json


def test_subset_window_is_a_relabelled_flip_or_rotation_of_a_crop():
    from nudiff.synthesis import subset_window

    label = np.zeros((40, 50), np.int32)
    label[2:6, 3:9], label[20:30, 10:12], label[35:40, 40:50] = 7, 3, 12
    for seed in range(6):
        w = subset_window([label], 24, np.random.default_rng(seed))
        assert w.shape == (24, 24) and w.dtype == np.int32
        assert set(np.unique(w)) == set(range(int(w.max()) + 1))  # ids 1..n, no gaps
        found = any(
            np.array_equal(w > 0, np.rot90(label[y : y + 24, x : x + 24], k)[:, ::f] > 0)
            for y in range(17)
            for x in range(27)
            for k in range(4)
            for f in (1, -1)
        )
        assert found


def test_pasted_window_keeps_the_window_and_adds_whole_real_nuclei():
    from scipy import ndimage as ndi

    from nudiff.synthesis.sources import label_donors, pasted_window, subset_window

    label = disk_instance_map((60, 60), ((12, 12), (40, 44)), 5)
    donors, cfg = label_donors([label], nuclei=4)
    shapes = {d.mask.sum() for d in donors}
    grew = 0
    for seed in range(6):
        window = subset_window([label], 40, np.random.default_rng(seed))
        pasted = pasted_window([label], donors, 40, np.random.default_rng(seed), cfg)
        assert pasted.dtype == np.int32 and pasted.shape == (40, 40)
        np.testing.assert_array_equal(
            pasted[window > 0], window[window > 0]
        )  # the window's labels untouched
        new = [i for i in np.unique(pasted) if i > window.max()]
        assert new == list(
            range(window.max() + 1, window.max() + 1 + len(new))
        )  # fresh ids, no gaps
        for i in new:  # each a whole donor nucleus, never touching another
            assert ndi.label(pasted == i)[1] == 1 and (pasted == i).sum() in shapes
            ring = ndi.binary_dilation(pasted == i, iterations=2) & (pasted != i)
            assert not (pasted[ring] > 0).any()
        grew += len(new)
    assert grew > 0


def test_structures_from_the_subset_keep_its_labels_exactly(models, tmp_path, syn_cfg):
    from nudiff.data.io import write_image, write_instance_map
    from nudiff.structure import encode

    _, i = models
    real = disk_instance_map(
        (32, 32), ((8, 8), (8, 22), (24, 16)), 5
    )  # 16-px windows at scale 0.5
    write_image(tmp_path / "real" / "images" / "r0.png", np.full((32, 32, 3), 200, np.uint8))
    write_instance_map(tmp_path / "real" / "labels" / "r0.png", real)
    m = synthesize(
        None, i, tmp_path / "syn", syn_cfg(n=4, structures="subset"), real_dir=tmp_path / "real"
    )
    assert m["n_accepted"] == 4 and m["structure_model"] is None
    transforms = [np.rot90(real, k)[:, ::f] for k in range(4) for f in (1, -1)]
    for pair in load_folder(tmp_path / "syn", progress=False):
        assert pair.image.shape == (32, 32, 3)
        # the label is the real map under one of the 8 flips/rotations, ids and all
        assert any(
            np.array_equal(pair.instance_map > 0, t > 0) and pair.instance_map.max() == 3
            for t in transforms
        )
        condition = np.load(tmp_path / "syn" / "structures" / f"{pair.name}.npy")
        small = pair.instance_map[1::2, 1::2]  # nearest halving, pixel-centre aligned
        assert np.allclose(condition, encode(small, min_area=round(30 * 0.25)))
    with pytest.raises(NudiffError, match="needs the labeled subset"):
        synthesize(None, i, tmp_path / "x", syn_cfg(n=1, structures="subset"))
    with pytest.raises(NudiffError, match="at least 64 px"):
        synthesize(
            None,
            i,
            tmp_path / "y",
            syn_cfg(n=1, structures="subset", size=32),
            real_dir=tmp_path / "real",
        )
    with pytest.raises(NudiffError, match="synthesis.structures"):
        SynthesisConfig(structures="model")


def test_structures_copypaste_synthesizes_on_pasted_real_labels(models, tmp_path, syn_cfg):
    from nudiff.data.io import write_image, write_instance_map

    _, i = models
    real = disk_instance_map((32, 32), ((8, 8),), 4)  # one nucleus: room to paste copies of it
    write_image(tmp_path / "real" / "images" / "r0.png", np.full((32, 32, 3), 200, np.uint8))
    write_instance_map(tmp_path / "real" / "labels" / "r0.png", real)
    cfg = syn_cfg(n=4, structures="copypaste", pasted_nuclei=3)
    m = synthesize(None, i, tmp_path / "syn", cfg, real_dir=tmp_path / "real")
    assert m["n_accepted"] == 4 and m["structure_model"] is None
    pairs = load_folder(tmp_path / "syn", progress=False)
    nucleus = (real == 1).sum()
    for pair in pairs:  # every nucleus is the real one, turned, whole
        areas = np.bincount(pair.instance_map.ravel())[1:]
        assert pair.image.shape == (32, 32, 3) and set(areas) == {nucleus}
    assert max(p.instance_map.max() for p in pairs) > 1  # nuclei were pasted
    with pytest.raises(NudiffError, match="'copypaste' needs the labeled subset"):
        synthesize(None, i, tmp_path / "x", syn_cfg(n=1, structures="copypaste"))
    from nudiff.cli import main

    # the CLI's --pasted-nuclei reaches the config: 0 pasted leaves the window's one nucleus
    argv = [
        "synthesize",
        "--image-model",
        str(i),
        "--structures",
        "copypaste",
        "--pasted-nuclei",
        "0",
        "--real",
        str(tmp_path / "real"),
        "-n",
        "2",
        "--out",
        str(tmp_path / "cli"),
    ]
    assert main(argv) == 0
    assert read_json(tmp_path / "cli" / "manifest.json")["config"]["pasted_nuclei"] == 0
    assert max(p.instance_map.max() for p in load_folder(tmp_path / "cli", progress=False)) == 1
    # a structure model the labels would not come from is an error, not silently ignored
    assert main([*argv[:-1], str(tmp_path / "cli2"), "--structure-model", str(i)]) == 2
