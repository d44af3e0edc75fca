import numpy as np
import pytest
import tifffile
from PIL import Image

from nudiff.data.dataset import find_pairs, load_folder, load_folders
from nudiff.data.io import write_image, write_instance_map
from nudiff.utils import DataError


def test_pairs_by_name_not_order(tmp_path):
    rng = np.random.default_rng(3)
    names = [f"img{c}" for c in "qwertyuiop"]
    suffixes = [".png", ".tif", ".npy", ".png", ".tif"]
    for k, i in enumerate(rng.permutation(len(names))):  # create in shuffled order
        name = names[i]
        write_image(tmp_path / "images" / f"{name}.png", np.full((8, 8, 3), i, np.uint8))
        write_instance_map(
            tmp_path / "labels" / f"{name}{suffixes[k % 5]}", np.full((8, 8), i + 1)
        )
    pairs = find_pairs(tmp_path)
    assert [p.name for p in pairs] == sorted(names)
    for s in load_folder(tmp_path, progress=False):
        i = names.index(s.name)
        assert s.image[0, 0, 0] == i and s.instance_map[0, 0] == i + 1
        assert s.source == str(tmp_path)


def test_all_problems_listed_in_one_error(tmp_path):
    img, lab = tmp_path / "images", tmp_path / "labels"
    rgb = np.zeros((10, 10, 3), np.uint8)
    write_image(img / "good.png", rgb)
    write_instance_map(lab / "good.png", np.zeros((10, 10), np.int32))
    write_image(img / "nolabel.png", rgb)
    write_instance_map(lab / "noimage.png", np.zeros((10, 10), np.int32))
    write_image(img / "shape.png", rgb)
    write_instance_map(lab / "shape.png", np.zeros((12, 10), np.int32))
    Image.fromarray(rgb[..., 0]).save(img / "gray.png")
    write_instance_map(lab / "gray.png", np.zeros((10, 10), np.int32))
    write_image(img / "empty.png", rgb)
    (lab / "empty.png").write_bytes(b"")
    write_image(img / "float.png", rgb)
    tifffile.imwrite(lab / "float.tif", np.full((10, 10), 0.5, np.float32))
    (img / "notes.txt").write_text("hi")
    (img / ".hidden.png").write_bytes(b"")  # hidden files are ignored
    with pytest.raises(DataError) as info:
        load_folder(tmp_path, progress=False)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{tmp_path}: 7 problems found:"
    expected = [
        img / "nolabel.png", lab / "noimage.png", lab / "shape.png", img / "gray.png",
        lab / "empty.png", lab / "float.tif", img / "notes.txt",
    ]  # fmt: skip
    for path in expected:
        assert sum(str(path) in line for line in lines[1:]) == 1, path


def test_missing_subfolder(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="labels: folder not found"):
        find_pairs(tmp_path)


def test_xml_labels_in_folder(tmp_path):
    write_image(tmp_path / "images" / "a.tif", np.zeros((20, 20, 3), np.uint8))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.xml").write_text(
        '<Annotations><Regions><Region><Vertices><Vertex X="2" Y="2"/><Vertex X="8" Y="2"/>'
        '<Vertex X="8" Y="8"/></Vertices></Region></Regions></Annotations>'
    )
    (sample,) = load_folder(tmp_path, progress=False)
    assert sample.instance_map.shape == (20, 20) and sample.instance_map.max() == 1


def test_duplicate_names_across_folders(tmp_path, make_folder):
    a = make_folder(tmp_path / "a", ["x", "y"], shape=(16, 16), n_nuclei=2)
    b = make_folder(tmp_path / "b", ["y"], shape=(16, 16), n_nuclei=2)
    with pytest.raises(DataError, match="image name y also occurs"):
        load_folders([a, b], progress=False)
    assert len(load_folders([a], progress=False)) == 2


def test_read_one_real_monuseg_image(monuseg):
    folder = monuseg / "train"
    pair = find_pairs(folder)[0]
    from nudiff.data.dataset import load_pair

    s = load_pair(pair)
    assert s.image.shape == (1000, 1000, 3) and s.image.dtype == np.uint8
    assert s.instance_map.dtype == np.int32 and s.instance_map.max() > 50
