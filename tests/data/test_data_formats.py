import json

import numpy as np
import pytest

from nudiff.data.formats import (
    PAIR_FORMATS,
    convert_pairs,
    detect_pair_format,
    hovernet_labels,
    instance_map_to_geojson,
    pair_names,
    polygon_area,
    read_monuseg_xml,
    read_pair,
    write_geojson,
    write_pair,
)
from nudiff.utils import DataError, NudiffError, read_json

XML = """<?xml version="1.0" encoding="UTF-8"?>
<Annotations><Annotation Id="1"><Regions>
  <Region Id="1"><Vertices>
    <Vertex X="2" Y="2"/><Vertex X="11" Y="2"/><Vertex X="11" Y="11"/><Vertex X="2" Y="11"/>
  </Vertices></Region>
  <Region Id="hidden"><Vertices>
    <Vertex X="13" Y="13"/><Vertex X="14" Y="13"/><Vertex X="14" Y="14"/><Vertex X="13" Y="14"/>
  </Vertices></Region>
  <Region Id="2"><Vertices>
    <Vertex X="8" Y="8"/><Vertex X="15" Y="8"/><Vertex X="15" Y="15"/><Vertex X="8" Y="15"/>
  </Vertices></Region>
  <Region Id="3"><Vertices>
    <Vertex X="9" Y="9"/><Vertex X="10" Y="9"/><Vertex X="10" Y="10"/><Vertex X="9" Y="10"/>
  </Vertices></Region>
  <Region Id="4"><Vertices>
    <Vertex X="18.5" Y="1.5"/><Vertex X="30" Y="1.5"/>
    <Vertex X="30" Y="6.5"/><Vertex X="18.5" Y="6.5"/>
  </Vertices></Region>
</Regions></Annotation></Annotations>
"""


def test_monuseg_xml_rasterises_in_file_order(tmp_path):
    (path := tmp_path / "a.xml").write_text(XML)
    inst = read_monuseg_xml(path, (20, 24))
    assert inst.dtype == np.int32 and inst.shape == (20, 24)
    assert sorted(np.unique(inst)) == [0, 1, 2, 3, 4]
    # skimage fills boundary pixels: region 1 is rows/cols 2..11; the hidden region is fully
    # overwritten by region 2 (rows/cols 8..15) and vanishes, ids close up in file order;
    # region 3 (9..10) sits on region 2; region 4 is clipped at the right border.
    assert inst[2, 2] == 1 and inst[11, 11] == 2 and inst[10, 10] == 3 and inst[14, 14] == 2
    assert (inst == 1).sum() == 100 - 16
    assert (inst == 2).sum() == 64 - 4
    assert (inst == 3).sum() == 4
    assert inst[2, 23] == 4 and (inst == 4).sum() == 5 * 5 and inst[1, 20] == 0


def test_monuseg_xml_bad_files(tmp_path):
    (bad := tmp_path / "bad.xml").write_text("<Annotations><Region>")
    (none := tmp_path / "none.xml").write_text("<Annotations/>")
    for path in (bad, none, tmp_path / "missing.xml"):
        with pytest.raises(DataError, match=str(path)):
            read_monuseg_xml(path, (10, 10))


def test_geojson_one_closed_polygon_per_nucleus(toy_instance_map):
    inst = toy_instance_map.copy()
    inst[0, 0] = 9  # a one-pixel nucleus and a non-contiguous id
    gj = instance_map_to_geojson(inst, classification="Tumor", color=(1, 2, 3))
    assert gj["type"] == "FeatureCollection"
    feats = gj["features"]
    assert len(feats) == len(np.unique(inst)) - 1
    for f in feats:
        assert f["geometry"]["type"] == "Polygon"
        ring = f["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) >= 4
        props = f["properties"]
        assert props["objectType"] == "detection"
        assert props["classification"] == {"name": "Tumor", "color": [1, 2, 3]}
        area = props["measurements"]["area"]
        label = props["measurements"]["instance_id"]
        assert area == (inst == label).sum()
        assert polygon_area(ring) == pytest.approx(area, rel=0.1, abs=0.6)
    ids = [f["id"] for f in feats]
    assert len(set(ids)) == len(ids)


def test_geojson_pixel_edge_coordinates():
    inst = np.zeros((6, 6), np.int32)
    inst[1:4, 2:5] = 1  # rows 1..3, cols 2..4
    ring = np.array(instance_map_to_geojson(inst)["features"][0]["geometry"]["coordinates"][0])
    assert ring[:, 0].min() == 2 and ring[:, 0].max() == 5
    assert ring[:, 1].min() == 1 and ring[:, 1].max() == 4


def test_write_geojson(tmp_path, toy_instance_map):
    path = write_geojson(tmp_path / "x.geojson", toy_instance_map)
    data = json.loads(path.read_text())
    assert len(data["features"]) == 3


# --- paired folders in the formats other trainers read -----------------------------------------


def _pair(seed=0):
    """A hand-made pair: two rectangles (ids 1, 2) and a disc (id 3) on a random RGB image."""
    inst = np.zeros((24, 30), np.int32)
    inst[2:6, 3:11] = 1  # rows 2..5, cols 3..10: centroid (x, y) = (6.5, 3.5)
    inst[10:13, 20:29] = 2  # centroid (24, 11)
    yy, xx = np.mgrid[:24, :30]
    inst[(yy - 18) ** 2 + (xx - 8) ** 2 <= 9] = 3  # symmetric disc: centroid (8, 18)
    image = np.random.default_rng(seed).integers(0, 256, (24, 30, 3), dtype=np.uint8)
    return image, inst


CENTROIDS = np.array([[6.5, 3.5], [24.0, 11.0], [8.0, 18.0]])


@pytest.mark.parametrize("pair_format", PAIR_FORMATS)
def test_write_pair_reads_back_exactly_with_scipy_and_numpy(tmp_path, pair_format):
    import scipy.io
    from PIL import Image

    image, inst = _pair()
    written = write_pair(tmp_path, "a", image, inst, pair_format)
    if pair_format == "hovernet":
        assert written == [tmp_path / "Images/a.png", tmp_path / "Labels/a.mat"]
        mat = scipy.io.loadmat(tmp_path / "Labels/a.mat")
        assert sorted(k for k in mat if not k.startswith("__")) == ["inst_centroid", "inst_map"]
        assert mat["inst_map"].dtype == np.int32 and (mat["inst_map"] == inst).all()
        assert mat["inst_centroid"].dtype == np.float64 and np.array_equal(
            mat["inst_centroid"], CENTROIDS
        )
        assert (np.asarray(Image.open(tmp_path / "Images/a.png")) == image).all()
    elif pair_format == "npy":
        assert written == [tmp_path / "images/a.npy", tmp_path / "labels/a.npy"]
        read_image, read_inst = np.load(written[0]), np.load(written[1])
        assert read_image.dtype == np.uint8 and (read_image == image).all()
        assert read_inst.dtype == np.int32 and (read_inst == inst).all()
    else:
        assert written == [tmp_path / "images/a.png", tmp_path / "labels/a.png"]
        assert (np.asarray(Image.open(written[0])) == image).all()
        assert (np.asarray(Image.open(written[1])) == inst).all()
    assert detect_pair_format(tmp_path) == pair_format and pair_names(tmp_path, pair_format) == [
        "a"
    ]
    back_image, back_inst, types = read_pair(tmp_path, "a", pair_format)
    assert (
        (back_image == image).all() and (back_inst == inst).all() and back_inst.dtype == np.int32
    )
    assert types is None
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left


def test_hovernet_labels_renumber_ids_and_take_each_nucleus_majority_type():
    _, inst = _pair()
    gapped = np.where(inst > 0, inst * 10 + 5, 0)  # ids 15, 25, 35
    types = np.zeros_like(inst)
    types[inst == 1] = 2
    types[inst == 2] = 1
    types[10, 20:23] = 4  # 3 of nucleus 2's 27 pixels: its majority stays 1
    types[inst == 3] = 3
    labels = hovernet_labels(gapped, types)
    assert (labels["inst_map"] == inst).all() and np.array_equal(
        labels["inst_centroid"], CENTROIDS
    )
    assert labels["inst_type"].dtype == np.int32 and labels["inst_type"].tolist() == [
        [2],
        [1],
        [3],
    ]
    assert (labels["type_map"] == types).all()
    empty = hovernet_labels(np.zeros((4, 4), np.int32), np.zeros((4, 4), np.int32))
    assert empty["inst_centroid"].shape == (0, 2) and empty["inst_type"].shape == (0, 1)


def test_hovernet_mat_carries_a_type_map_when_the_data_has_one(tmp_path):
    import scipy.io

    image, inst = _pair()
    types = np.where(inst > 0, inst % 2 + 1, 0).astype(np.int32)
    write_pair(tmp_path / "hv", "a", image, inst, "hovernet", type_map=types)
    mat = scipy.io.loadmat(tmp_path / "hv/Labels/a.mat")
    assert (mat["type_map"] == types).all() and mat["inst_type"].tolist() == [[2], [1], [2]]
    # and through the other formats and back
    convert_pairs(tmp_path / "hv", tmp_path / "npy", "npy", progress=False)
    assert (np.load(tmp_path / "npy/types/a.npy") == types).all()
    convert_pairs(tmp_path / "npy", tmp_path / "hv2", "hovernet", progress=False)
    assert (scipy.io.loadmat(tmp_path / "hv2/Labels/a.mat")["type_map"] == types).all()


def test_convert_png_to_hovernet_to_npy_round_trip_is_exact(tmp_path):
    from nudiff.utils import write_json

    src = tmp_path / "png"
    pairs = {name: _pair(seed) for seed, name in enumerate(["syn_00000", "syn_00001"])}
    for name, (image, inst) in pairs.items():
        write_pair(src, name, image, inst, "png")
    (src / "structures").mkdir()
    np.save(src / "structures/syn_00000.npy", np.zeros((3, 4, 4), np.float32))
    write_json(
        src / "manifest.json",
        {"n_accepted": 2, "format": "png", "samples": {"0": {"name": "syn_00000"}}},
    )

    hv = convert_pairs(src, tmp_path / "hv", "hovernet", progress=False)
    npy = convert_pairs(tmp_path / "hv", tmp_path / "npy", "npy", progress=False)
    assert hv["format"] == "hovernet" and npy["format"] == "npy" and npy["n_pairs"] == 2
    assert read_json(tmp_path / "npy/manifest.json") == npy and npy["samples"] == {
        "0": {"name": "syn_00000"}
    }
    assert npy["converted_from"] == str(tmp_path / "hv")
    assert (tmp_path / "npy/structures/syn_00000.npy").is_file()
    for name, (image, inst) in pairs.items():
        assert (np.load(tmp_path / f"npy/images/{name}.npy") == image).all()
        assert (np.load(tmp_path / f"npy/labels/{name}.npy") == inst).all()
    convert_pairs(tmp_path / "npy", tmp_path / "back", "png", progress=False)
    for name in pairs:
        for sub in ("images", "labels"):  # PNG is lossless: byte for byte what synthesis wrote
            assert (tmp_path / f"back/{sub}/{name}.png").read_bytes() == (
                src / sub / f"{name}.png"
            ).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back", "hv", "npy", "png"]


def _bad_hovernet(tmp_path):
    import scipy.io

    src = tmp_path / "hv"
    for seed, name in enumerate("abc"):
        write_pair(src, name, *_pair(seed), "hovernet")
    scipy.io.savemat(src / "Labels/b.mat", {"instance_map": np.zeros((24, 30), np.int32)})
    return src


def test_convert_bad_input_names_the_file_and_writes_nothing(tmp_path):
    import scipy.io

    src = _bad_hovernet(tmp_path)
    out = tmp_path / "out"

    def refused(match, source=src, to="npy"):
        with pytest.raises(DataError, match=match) as e:
            convert_pairs(source, out, to, progress=False)
        assert "\n" not in str(e.value)  # one line
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)

    kept = ["hv"]
    refused(r"Labels/b\.mat: no 'inst_map' in \.mat file")
    scipy.io.savemat(src / "Labels/b.mat", {"inst_map": np.zeros((20, 30), np.int32)})
    refused(r"Labels/b\.mat: label shape \(20, 30\) differs from image b\.png")
    (src / "Labels/b.mat").write_bytes(b"not a mat file")
    refused(r"Labels/b\.mat: corrupt or unreadable \.mat file")
    (src / "Labels/b.mat").unlink()
    refused(r"Images/b\.png: no label b\.mat in")
    with pytest.raises(NudiffError, match="unknown pair format 'tiff'"):
        convert_pairs(src, out, "tiff", progress=False)
    (tmp_path / "npy").mkdir()
    (tmp_path / "npy/images").mkdir()
    (tmp_path / "npy/labels").mkdir()
    np.save(tmp_path / "npy/images/a.npy", np.zeros((4, 4), np.float32))
    np.save(tmp_path / "npy/labels/a.npy", np.zeros((4, 4), np.int32))
    kept = ["hv", "npy"]
    refused(r"npy/images/a\.npy: expected a uint8 \(H, W, 3\) RGB image", tmp_path / "npy", "png")
    (out / "x").mkdir(parents=True)
    with pytest.raises(DataError, match="out: already exists and is not empty"):
        convert_pairs(tmp_path / "npy", out, "png", progress=False)
    with pytest.raises(DataError, match="not a paired folder"):
        detect_pair_format(tmp_path / "out")
