import json

import numpy as np
import pytest

from nudiff.data.formats import (
    instance_map_to_geojson,
    polygon_area,
    read_monuseg_xml,
    write_geojson,
)
from nudiff.utils import DataError

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
