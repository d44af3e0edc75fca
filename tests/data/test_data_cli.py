import argparse
import json

import numpy as np
import pytest

from nudiff.data.cli import register
from nudiff.data.io import read_instance_map, write_image
from nudiff.utils import DataError, NudiffError, read_json

SUBCOMMANDS = ["prepare", "convert", "patches", "subset", "export-geojson"]


def parse(argv):
    parser = argparse.ArgumentParser(prog="nudiff")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def run(argv):
    args = parse(argv)
    args.func(args)


def test_register_returns_data_subparsers_for_hooks():
    parser = argparse.ArgumentParser(prog="nudiff")
    sub = register(parser.add_subparsers(dest="command"))
    show = sub.add_parser("show")
    show.set_defaults(func=lambda a: None)
    assert parser.parse_args(["data", "show"]).data_command == "show"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help_has_an_example(name, capsys):
    with pytest.raises(SystemExit):
        parse(["data", name, "--help"])
    out = capsys.readouterr().out
    assert "example:" in out and f"nudiff data {name}" in out


def test_prepare_patches_subset_cli(tmp_path, make_folder, capsys):
    a = make_folder(tmp_path / "a", ["a1", "a2"], shape=(80, 80))
    b = make_folder(tmp_path / "b", ["b1"], shape=(80, 80), seed=4)
    (cfg := tmp_path / "c.yaml").write_text(
        "data:\n  val_images: 1\n  patch_size: 64\n  stride: 32\n  fractions: [0.5, 1]\n"
    )
    run(["data", "prepare", str(a), str(b), "--out", str(tmp_path / "out"), "--config", str(cfg),
         "--seed", "3", "--strategy", "random"])  # fmt: skip
    m = read_json(tmp_path / "out/manifest.json")
    assert m["config"]["seed"] == 3 and m["config"]["strategy"] == "random"
    assert m["config"]["fractions"] == [0.5, 1.0] and sorted(m["subsets"]) == [
        "frac0.50_seed3.json", "frac1.00_seed3.json"
    ]  # fmt: skip

    run(
        ["data", "patches", str(b), "--out", str(tmp_path / "p"), "--size", "64", "--stride", "32"]
    )
    assert len(read_json(tmp_path / "p/manifest.json")["patches"]) == 4
    run(["data", "subset", str(tmp_path / "p"), "--fraction", "0.5", "--fraction", "0.8",
         "--seed", "2", "--out", str(tmp_path / "s")])  # fmt: skip
    rec = read_json(tmp_path / "s/frac0.80_seed2.json")
    assert rec["achieved_fraction"] >= 0.8 and rec["strategy"] == "kmeans"
    assert "patches" in capsys.readouterr().out


def test_convert_and_export_geojson(tmp_path):
    write_image(tmp_path / "imgs/a.tif", np.zeros((20, 20, 3), np.uint8))
    write_image(tmp_path / "imgs/b.tif", np.zeros((20, 20, 3), np.uint8))
    (tmp_path / "xml").mkdir()
    (tmp_path / "xml/a.xml").write_text(
        '<Annotations><Regions><Region><Vertices><Vertex X="2" Y="2"/><Vertex X="8" Y="2"/>'
        '<Vertex X="8" Y="8"/><Vertex X="2" Y="8"/></Vertices></Region></Regions></Annotations>'
    )
    xml, imgs, out = (str(tmp_path / d) for d in ("xml", "imgs", "out"))
    argv = ["data", "convert", "--xml-dir", xml, "--images", imgs, "--out", out]
    with pytest.raises(DataError, match="b.xml: file not found"):
        run(argv)
    (tmp_path / "xml/b.xml").write_text((tmp_path / "xml/a.xml").read_text())
    run(argv)
    label = tmp_path / "out/labels/a.png"
    assert (read_instance_map(label) == 1).sum() == 49
    assert (tmp_path / "out/images/a.png").is_file()

    run(["data", "export-geojson", str(label), "--out", str(tmp_path / "gj")])
    data = json.loads((tmp_path / "gj/a.geojson").read_text())
    assert len(data["features"]) == 1


def test_convert_a_paired_folder_to_another_format(tmp_path, make_folder, capsys):
    import scipy.io

    from nudiff.structure import relabel

    src = make_folder(tmp_path / "png", ["a", "b"], shape=(40, 40), n_nuclei=4)
    run(["data", "convert", str(src), "--to", "hovernet", "--out", str(tmp_path / "hv")])
    assert "2 pairs" in capsys.readouterr().out
    mat = scipy.io.loadmat(tmp_path / "hv/Labels/a.mat")
    # ids renumbered 1..N (the fixture's discs may hide one), so that inst_centroid row k is id k +
    # 1
    assert (mat["inst_map"] == relabel(read_instance_map(src / "labels/a.png"))).all()
    assert read_json(tmp_path / "hv/manifest.json")["format"] == "hovernet"
    # the old modes are untouched, and the two do not mix
    with pytest.raises(NudiffError, match="FOLDER --to FORMAT --out DIR, not --images"):
        run(
            [
                "data",
                "convert",
                str(src),
                "--to",
                "npy",
                "--images",
                str(src),
                "--out",
                str(tmp_path / "x"),
            ]
        )
    with pytest.raises(NudiffError, match="FOLDER --to FORMAT"):
        run(["data", "convert", str(src), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        parse(["data", "convert", str(src), "--to", "tiff", "--out", str(tmp_path / "x")])


def test_convert_bad_pair_is_one_line_and_writes_nothing(tmp_path, make_folder):
    import scipy.io

    src = make_folder(tmp_path / "png", ["a"], shape=(40, 40), n_nuclei=4)
    run(["data", "convert", str(src), "--to", "hovernet", "--out", str(tmp_path / "hv")])
    scipy.io.savemat(tmp_path / "hv/Labels/a.mat", {"type_map": np.zeros((40, 40), np.int32)})
    with pytest.raises(
        DataError
    ) as e:  # the CLI prints a NudiffError as "nudiff: error: <message>"
        run(
            [
                "data",
                "convert",
                str(tmp_path / "hv"),
                "--to",
                "npy",
                "--out",
                str(tmp_path / "npy"),
            ]
        )
    assert "\n" not in str(e.value) and str(e.value).startswith(str(tmp_path / "hv/Labels/a.mat"))
    assert "no 'inst_map' in .mat file" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hv", "png"]
