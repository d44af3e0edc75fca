"""QuPath GeoJSON + slide -> paired folder: round trip, hierarchy, types, bad input."""

import argparse
import json

import numpy as np
import pytest

from nudiff.data.cli import register
from nudiff.data.formats import instance_map_to_geojson
from nudiff.data.io import read_image, read_instance_map
from nudiff.data.qupath import ring_self_intersects
from nudiff.data.slide import write_pyramid
from nudiff.metrics import aji
from nudiff.utils import DataError, read_json

SLIDE_SHAPE = (240, 320)
REGION = (40, 24, 200, 160)  # x, y, w, h (level 0)


def nuclei_map(shape, n=30, seed=0) -> np.ndarray:
    """Non-overlapping discs (radius 4-8), some touching: int32 (H, W), ids 1..n."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inst = np.zeros(shape, np.int32)
    k = 0
    for _ in range(200):
        r = rng.uniform(4, 8)
        cy, cx = rng.uniform(r, shape[0] - r), rng.uniform(r, shape[1] - r)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if (inst[disc] > 0).any():
            continue
        k += 1
        inst[disc] = k
        if k == n:
            break
    return inst


def rect(x, y, w, h, **props):
    ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"objectType": "annotation", **props},
    }


def shifted(features, dx, dy):
    for f in features:
        f["geometry"]["coordinates"] = [
            [[x + dx, y + dy] for x, y in ring] for ring in f["geometry"]["coordinates"]
        ]
    return features


@pytest.fixture
def slide(tmp_path):
    rng = np.random.default_rng(3)
    img = rng.integers(100, 230, SLIDE_SHAPE + (3,)).astype(np.uint8)
    return write_pyramid(tmp_path / "case1.tif", img, mpp=0.5, levels=2, tile=64), img


def run(argv):
    parser = argparse.ArgumentParser(prog="nudiff")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    args.func(args)


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_round_trip_labels_geojson_convert(slide, tmp_path):
    """labels -> export-geojson -> convert --geojson gives the same nuclei (AJI >= 0.99)."""
    path, img = slide
    x, y, w, h = REGION
    truth = nuclei_map((h, w))
    nuclei = shifted(instance_map_to_geojson(truth)["features"], x, y)
    geojson = write(
        tmp_path / "case1.geojson",
        {
            "type": "FeatureCollection",
            "features": [rect(x, y, w, h, name="r1")] + nuclei,
        },
    )
    run(
        [
            "data",
            "convert",
            "--geojson",
            str(geojson),
            "--slide",
            str(path),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    name = f"case1_x{x}_y{y}"
    got = read_instance_map(tmp_path / "o" / "labels" / f"{name}.png")
    assert got.shape == (h, w) and got.max() == truth.max()
    assert aji(truth, got) >= 0.99
    assert np.array_equal(
        read_image(tmp_path / "o" / "images" / f"{name}.png"), img[y : y + h, x : x + w]
    )
    types = read_json(tmp_path / "o" / "types.json")
    assert types["classes"] == ["Nucleus"]
    assert types["images"][name]["region_level0"] == [x, y, w, h]
    assert set(types["images"][name]["types"].values()) == {"Nucleus"}


def test_level_1_halves_coordinates(slide, tmp_path):
    path, _ = slide
    x, y, w, h = REGION
    truth = nuclei_map((h, w), n=12, seed=2)
    nuclei = shifted(instance_map_to_geojson(truth)["features"], x, y)
    geojson = write(tmp_path / "a.geojson", [rect(x, y, w, h)] + nuclei)
    run(
        [
            "data",
            "convert",
            "--geojson",
            str(geojson),
            "--slide",
            str(path),
            "--level",
            "1",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    got = read_instance_map(tmp_path / "o" / "labels" / f"case1_x{x}_y{y}.png")
    assert got.shape == (h // 2, w // 2)
    assert aji(truth[::2, ::2], got) > 0.8  # same nuclei, half the resolution


def test_regions_file_cut_nuclei_types_holes_multipolygons(slide, tmp_path):
    path, _ = slide
    ring = [[10, 10], [30, 10], [30, 30], [10, 30], [10, 10]]
    hole = [[15, 15], [15, 25], [25, 25], [25, 15], [15, 15]]
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring, hole]},
            "properties": {
                "objectType": "detection",
                "classification": {"name": "Tumor", "color": [200, 0, 0]},
            },
        },
        {
            "type": "Feature",
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": [
                    [[[40, 10], [50, 10], [50, 20], [40, 20], [40, 10]]],
                    [[[40, 30], [50, 30], [50, 40], [40, 40], [40, 30]]],
                ],
            },
            "properties": {"objectType": "annotation", "classification": "Lymphocyte"},
        },
        # cut by the region's right border (x = 60): kept as cut
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[55, 10], [70, 10], [70, 20], [55, 20], [55, 10]]],
            },
            "properties": {},
        },
    ]
    geojson = write(tmp_path / "n.geojson", {"type": "FeatureCollection", "features": features})
    regions = write(
        tmp_path / "r.geojson", {"type": "FeatureCollection", "features": [rect(0, 0, 60, 50)]}
    )
    run(
        [
            "data",
            "convert",
            "--geojson",
            str(geojson),
            "--regions",
            str(regions),
            "--slide",
            str(path),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    inst = read_instance_map(tmp_path / "o" / "labels" / "case1_x0_y0.png")
    assert inst.shape == (50, 60)
    assert inst[12, 12] == 1 and inst[20, 20] == 0  # the hole is background
    assert inst[15, 45] == inst[35, 45] == 2  # two parts, one nucleus
    assert inst[15, 57] == 3 and (inst == 3).sum() == 5 * 10  # x 55..59 of 55..69
    types = read_json(tmp_path / "o" / "types.json")
    assert types["images"]["case1_x0_y0"]["types"] == {"1": "Tumor", "2": "Lymphocyte"}
    assert types["classes"] == ["Lymphocyte", "Tumor"]


def test_child_objects_of_an_annotation_are_its_nuclei(slide, tmp_path):
    path, _ = slide
    child = rect(20, 20, 10, 10)  # an *annotation* nested as a child: a nucleus
    region = rect(0, 0, 64, 64)
    region["properties"]["childObjects"] = [child]
    geojson = write(tmp_path / "h.geojson", region)
    run(
        [
            "data",
            "convert",
            "--geojson",
            str(geojson),
            "--slide",
            str(path),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    inst = read_instance_map(tmp_path / "o" / "labels" / "case1_x0_y0.png")
    assert inst.max() == 1 and (inst == 1).sum() == 100


def test_folder_form_pairs_by_name(slide, tmp_path):
    path, _ = slide
    gdir = tmp_path / "g"
    gdir.mkdir()
    write(
        gdir / "case1.geojson",
        [
            rect(0, 0, 32, 32),
            rect(100, 100, 32, 32),
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[5, 5], [15, 5], [15, 15], [5, 5]]],
                },
                "properties": {"objectType": "detection"},
            },
        ],
    )
    write(gdir / "orphan.geojson", [rect(0, 0, 8, 8)])
    with pytest.raises(DataError, match="orphan.geojson: no slide named orphan"):
        run(
            [
                "data",
                "convert",
                "--geojson",
                str(gdir),
                "--slide",
                str(path.parent),
                "--out",
                str(tmp_path / "o"),
            ]
        )
    (gdir / "orphan.geojson").unlink()
    run(
        [
            "data",
            "convert",
            "--geojson",
            str(gdir),
            "--slide",
            str(path.parent),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert sorted(p.name for p in (tmp_path / "o" / "labels").iterdir()) == [
        "case1_x0_y0.png",
        "case1_x100_y100.png",
    ]
    assert read_instance_map(tmp_path / "o" / "labels" / "case1_x100_y100.png").max() == 0


def test_bad_input_one_line_per_problem_nothing_written(slide, tmp_path):
    path, _ = slide

    def det(coords, kind="Polygon"):
        return {
            "type": "Feature",
            "geometry": {"type": kind, "coordinates": coords},
            "properties": {"objectType": "detection"},
        }

    features = [
        rect(0, 0, 100, 100),
        det([[[10, 10], [20, 20], [20, 10], [10, 20], [10, 10]]]),  # 2: bow tie
        det([]),  # 3: empty
        det([[[10, 10], [12, 12], [14, 14], [10, 10]]]),  # 4: zero area
        det([[[300, 200], [330, 200], [330, 230], [300, 200]]]),  # 5: outside the slide (320 wide)
        det([[[200, 150], [210, 150], [210, 160], [200, 150]]]),  # 6: outside every region
        det([5, 5], kind="Point"),  # 7: not a polygon
        det([[[30, 30], [40, 30], [40, 40], [30, 30]]]),  # 8: fine
    ]
    geojson = write(tmp_path / "bad.geojson", {"type": "FeatureCollection", "features": features})
    out = tmp_path / "o"
    with pytest.raises(DataError) as e:
        run(
            ["data", "convert", "--geojson", str(geojson), "--slide", str(path), "--out", str(out)]
        )
    lines = str(e.value).splitlines()[1:]
    expected = {
        2: "self-intersecting",
        3: "empty polygon",
        4: "empty polygon",
        5: "outside the slide",
        6: "outside every region",
        7: "geometry Point is not a Polygon",
    }
    assert len(lines) == len(expected)
    for line, (k, what) in zip(
        sorted(lines, key=lambda s: int(s.split("feature ")[1].split()[0].rstrip(":"))),
        sorted(expected.items()),
    ):
        assert "bad.geojson: feature" in line and f"feature {k}" in line and what in line
    assert not out.exists()


def test_not_geojson_and_no_regions(slide, tmp_path):
    path, _ = slide
    for text, message in [
        ("{", "not valid JSON"),
        ('{"type": "Point"}', "not GeoJSON"),
        ("[]", "no regions"),
    ]:
        bad = tmp_path / "x.geojson"
        bad.write_text(text)
        with pytest.raises(DataError, match=message):
            run(
                [
                    "data",
                    "convert",
                    "--geojson",
                    str(bad),
                    "--slide",
                    str(path),
                    "--out",
                    str(tmp_path / "o"),
                ]
            )


def test_convert_needs_a_source(tmp_path):
    from nudiff.utils import NudiffError

    with pytest.raises(NudiffError, match="--xml-dir and --images, or --geojson and --slide"):
        run(["data", "convert", "--out", str(tmp_path)])
    with pytest.raises(NudiffError, match="go together"):
        run(["data", "convert", "--geojson", "a.geojson", "--out", str(tmp_path)])


def test_ring_self_intersection():
    square = np.array([[0, 0], [4, 0], [4, 4], [0, 4]], float)
    bow = np.array([[0, 0], [4, 4], [4, 0], [0, 4]], float)
    touching = np.array(
        [[0, 0], [4, 0], [2, 2], [4, 4], [0, 4], [2, 2]], float
    )  # pinched, no crossing
    assert not ring_self_intersects(square)
    assert ring_self_intersects(bow)
    assert not ring_self_intersects(touching)
    theta = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    circle = np.stack([np.cos(theta), np.sin(theta)], 1)
    assert not ring_self_intersects(circle, block=300)
    assert ring_self_intersects(np.vstack([circle, [[2, 0], [0, 0.5]]]), block=300)
