import numpy as np

from nudiff.data.dataset import Sample, load_folder
from nudiff.data.io import read_image, read_instance_map
from nudiff.data.patches import cut_patches, extract_patches, window_origins
from nudiff.utils import read_json


def test_grid_has_flush_last_window():
    assert window_origins(1000, 256, 128) == [0, 128, 256, 384, 512, 640, 744]
    assert window_origins(512, 256, 128) == [0, 128, 256]
    assert window_origins(256, 256, 128) == [0]
    assert window_origins(100, 256, 128) == [0]


def test_1000px_gives_49_patches_as_the_paper():
    image = np.zeros((1000, 1000, 3), np.uint8)
    inst = np.zeros((1000, 1000), np.int32)
    patches = extract_patches(image, inst, 256, 128)
    assert len(patches) == 49
    assert patches[-1].y == 744 and patches[-1].x == 744
    assert all(
        p.image.shape == (256, 256, 3) and p.instance_map.shape == (256, 256) for p in patches
    )


def test_small_image_is_padded_reflect_and_zero():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 120, 3), dtype=np.uint8)
    inst = np.ones((100, 120), np.int32) * 5
    (p,) = extract_patches(image, inst, 128, 64)
    assert p.image.shape == (128, 128, 3) and (p.y, p.x) == (0, 0)
    assert np.array_equal(p.image[100, :120], image[98])  # reflected row
    assert (p.instance_map[100:] == 0).all() and (p.instance_map[:, 120:] == 0).all()
    assert (p.instance_map[:100, :120] == 1).all()


def test_patch_ids_relabelled(toy_instance_map):
    inst = toy_instance_map * 10
    image = np.zeros(inst.shape + (3,), np.uint8)
    (p,) = extract_patches(image, inst, 64, 32)
    assert sorted(np.unique(p.instance_map)) == [0, 1, 2, 3]


def test_cut_patches_manifest_maps_back_to_source(tmp_path, make_folder):
    folder = make_folder(tmp_path / "src", ["a", "b"], shape=(100, 130), n_nuclei=12)
    samples = load_folder(folder, progress=False)
    out = tmp_path / "patches"
    (out / "images").mkdir(parents=True)
    (out / "images" / "stale_y0000_x0000.png").write_bytes(b"old")
    manifest = cut_patches(samples, 64, 32, out, progress=False)
    assert manifest == read_json(out / "manifest.json")
    assert len(manifest["patches"]) == 2 * 3 * 4
    assert not (out / "images" / "stale_y0000_x0000.png").exists()
    by_name = {s.name: s for s in samples}
    for e in manifest["patches"]:
        assert e["name"] == f"{e['image']}_y{e['y']:04d}_x{e['x']:04d}"
        assert e["source"] == str(folder) and e["size"] == 64
        inst = read_instance_map(out / e["label_file"])
        assert read_image(out / e["image_file"]).shape == (64, 64, 3)
        src = by_name[e["image"]].instance_map[e["y"] : e["y"] + 64, e["x"] : e["x"] + 64]
        assert e["n_nuclei"] == inst.max() == len(e["source_ids"])
        for k, sid in enumerate(e["source_ids"], start=1):
            assert np.array_equal(inst == k, src == sid)


def test_cut_patches_rejects_duplicate_names(tmp_path):
    s = Sample("x", np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.int32), "a")
    import pytest

    from nudiff.utils import DataError

    with pytest.raises(DataError, match="duplicate"):
        cut_patches([s, s], 8, 8, tmp_path, progress=False)
