"""Whole-slide prediction: tiles, stitching across tile borders, resume, tissue, CLI."""

import argparse
import json

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from nudiff.data.slide import open_slide, write_pyramid
from nudiff.metrics import panoptic_quality
from nudiff.model_folder import save_model_folder
from nudiff.segment.cli import register
from nudiff.segment.model import build_segmenter
from nudiff.segment.wsi import (
    WsiSettings,
    keep_core_instances,
    run_tiles,
    stitch_instance_map,
    tile_grid,
)
from nudiff.utils import DataError, read_json

TILE, MARGIN = 64, 32


def threshold_predict(image: np.ndarray) -> np.ndarray:
    """A stand-in segmenter: dark connected blobs are nuclei."""
    return ndi.label(image.mean(axis=-1) < 128)[0]


def disc_slide(shape=(200, 260), seed=0, glass_from=None):
    """Dark discs on pink, several on the 64-px tile borders; white glass right of
    ``glass_from`` (a column) if given. uint8 (H, W, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = np.full(shape + (3,), (225, 170, 205), np.uint8)
    centres = [(64, 64), (64, 128), (128, 30), (30, 128), (100, 190), (150, 100)]
    centres += [tuple(rng.integers(10, s - 10) for s in shape) for _ in range(10)]
    for cy, cx in centres:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 7**2] = (70, 40, 120)
    if glass_from is not None:
        img[:, glass_from:] = 245
    return img


def settings(path, view, region=None, tissue=False, tile=TILE, margin=MARGIN):
    w, h = view.size
    return WsiSettings(
        str(path),
        "stand-in",
        view.level,
        view.scale,
        region or (0, 0, w, h),
        tile,
        margin,
        1,
        tissue,
    )


class Counting:
    def __init__(self, fail_after=None):
        self.calls, self.fail_after = 0, fail_after

    def __call__(self, image):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        return threshold_predict(image)


def test_tile_grid_covers_the_region_once():
    tiles = tile_grid((10, 20, 150, 100), 64, 16)
    assert [(k.row, k.col) for k in tiles][:4] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    cover = np.zeros((100, 150), int)
    for k in tiles:
        x, y, w, h = k.core
        cover[y - 20 : y - 20 + h, x - 10 : x - 10 + w] += 1
        wx, wy, ww, wh = k.window
        assert 10 <= wx <= x and 20 <= wy <= y and wx + ww <= 160 and wy + wh <= 120
    assert (cover == 1).all()
    assert tiles[0].window == (10, 20, 80, 80) and tiles[4].window == (58, 68, 96, 52)


def test_a_nucleus_on_a_border_is_kept_by_one_tile():
    inst = np.zeros((40, 80), np.int32)
    inst[15:25, 35:45] = 7  # centroid (19.5, 39.5): on the border x = 40 between the two cores
    inst[2:6, 2:6] = 3
    left = keep_core_instances(inst, (0, 0, 40, 40))
    right = keep_core_instances(inst, (40, 0, 40, 40))
    assert left.max() == 1 and (left > 0).sum() == 16  # only the small one
    assert right.max() == 1 and (right > 0).sum() == 100  # the border nucleus, whole


class Jitter:
    """A stand-in whose n-th call shifts its nuclei ``shifts[n]`` px along x: two tiles that
    disagree on where a border nucleus lies."""

    def __init__(self, shifts):
        self.shifts, self.calls = shifts, 0

    def __call__(self, image):
        dx = self.shifts[self.calls] if self.calls < len(self.shifts) else 0
        self.calls += 1
        return np.roll(threshold_predict(image), dx, axis=1)


@pytest.mark.parametrize("dx, nuclei", [(2, 1), (5, 2)])
def test_a_border_nucleus_two_tiles_both_claim_is_kept_once(tmp_path, dx, nuclei):
    # disc centred on x = 64, the border of the first two cores; tile 0 sees it 2 px left
    # (centroid in its core), tile 1 sees it 2 px right (centroid in its own): before the
    # overlap check both kept it. At 5 px each way the two outlines share under half their
    # area: two nuclei, as the check must not merge neighbours that merely touch.
    yy, xx = np.mgrid[:64, :192]
    img = np.full((64, 192, 3), (225, 170, 205), np.uint8)
    img[(yy - 32) ** 2 + (xx - 64) ** 2 <= 7**2] = (70, 40, 120)
    path = write_pyramid(tmp_path / "b.tif", img, mpp=0.25, levels=1, tile=32)
    with open_slide(path) as view:
        summary = run_tiles(
            view, settings(path, view), Jitter([-dx, dx]), tmp_path / "o", progress=False
        )
    assert summary["n_nuclei"] == nuclei
    geo = json.loads((tmp_path / "o" / "b.geojson").read_text())
    xs = sorted(f["properties"]["measurements"]["centroid_x"] for f in geo["features"])
    assert len(xs) == nuclei and xs[0] == pytest.approx(
        64.5 - dx, abs=0.01
    )  # the first tile's (pixel centres)


@pytest.mark.parametrize("level", [0, 1])
def test_stitched_slide_equals_one_image(tmp_path, level):
    img = disc_slide()
    path = write_pyramid(tmp_path / "s.tif", img, mpp=0.25, levels=2, tile=32)
    with open_slide(path, level=level) as view:
        summary = run_tiles(
            view, settings(path, view), threshold_predict, tmp_path / "o", progress=False
        )
        whole = threshold_predict(view.read(0, 0, *view.size))
    stitched = stitch_instance_map(tmp_path / "o")
    assert stitched.max() == whole.max() == summary["n_nuclei"]
    pq, dq, sq = panoptic_quality(whole, stitched)
    assert dq == pytest.approx(1.0) and sq == pytest.approx(1.0)  # each nucleus once, whole
    geo = json.loads((tmp_path / "o" / "s.geojson").read_text())
    assert len(geo["features"]) == whole.max()
    m = geo["features"][0]["properties"]["measurements"]
    assert set(m) == {
        "area",
        "centroid_x",
        "centroid_y",
        "eccentricity",
        "area_um2",
        "instance_id",
    }
    scale = 2**level
    xs = [f["properties"]["measurements"]["centroid_x"] for f in geo["features"]]
    assert max(xs) <= 260 and min(xs) >= 0  # level-0 coordinates whatever the level
    border = [
        f
        for f in geo["features"]
        if abs(f["properties"]["measurements"]["centroid_x"] - 128.5) < 1.5
        and abs(f["properties"]["measurements"]["centroid_y"] - 64.5) < 1.5
    ]
    assert len(border) == 1 and border[0]["properties"]["measurements"]["area"] == pytest.approx(
        (whole == whole[64 // scale, 128 // scale]).sum() * scale**2
    )
    assert (tmp_path / "o" / "s_overlay.png").exists()


def test_resume_skips_finished_tiles(tmp_path):
    img = disc_slide()
    path = write_pyramid(tmp_path / "s.tif", img, levels=1)
    out = tmp_path / "o"
    with open_slide(path) as view:
        s = settings(path, view)
        n_tiles = len(tile_grid(s.region, TILE, MARGIN))
        with pytest.raises(KeyboardInterrupt):
            run_tiles(view, s, Counting(fail_after=5), out, progress=False)
        assert len(list((out / "tiles").glob("*.npz"))) == 5
        again = Counting()
        summary = run_tiles(view, s, again, out, progress=False)
        assert again.calls == n_tiles - 5 and summary["n_predicted_now"] == n_tiles - 5
        third = Counting()
        run_tiles(view, s, third, out, progress=False)
        assert third.calls == 0
        (out / "tiles" / "r0001_c0002.npz").unlink()
        run_tiles(view, s, third, out, progress=False)
        assert third.calls == 1
        with pytest.raises(DataError, match="other settings \\(margin\\)"):
            run_tiles(view, settings(path, view, margin=16), Counting(), out, progress=False)
    assert stitch_instance_map(out).max() == threshold_predict(img).max()


def test_tissue_mask_skips_glass(tmp_path):
    img = disc_slide(glass_from=130)
    path = write_pyramid(tmp_path / "s.tif", img, levels=2)
    with open_slide(path) as view:
        counting = Counting()
        summary = run_tiles(
            view, settings(path, view, tissue=True), counting, tmp_path / "o", progress=False
        )
    assert summary["n_tiles"] == 20 and counting.calls == summary["n_tissue_tiles"] == 12
    # an ROI: only its tiles, coordinates still level 0
    with open_slide(path) as view:
        summary = run_tiles(
            view,
            settings(path, view, region=(64, 64, 64, 64)),
            Counting(),
            tmp_path / "roi",
            progress=False,
        )
    assert summary["n_tiles"] == 1
    geo = json.loads((tmp_path / "roi" / "s.geojson").read_text())
    assert all(64 <= f["properties"]["measurements"]["centroid_x"] <= 128 for f in geo["features"])


@pytest.fixture
def run_dir(tmp_path, make_config):
    cfg = make_config()
    torch.manual_seed(0)
    model = build_segmenter(cfg)
    return save_model_folder(
        tmp_path / "run" / "model", model, cfg, "segmenter", {"step": 0}
    ).parent


def _cli(argv):
    parser = argparse.ArgumentParser(prog="nudiff")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    args.func(args)


def test_cli_predict_slide_with_a_tiny_segmenter(tmp_path, run_dir, make_toy):
    toy = make_toy(0, (150, 170), n=20)
    path = write_pyramid(tmp_path / "toy.tif", toy.image, mpp=0.5, levels=2, tile=32)
    argv = [
        "segment",
        "predict",
        "--model",
        str(run_dir),
        "--slide",
        str(path),
        "--out",
        str(tmp_path / "o"),
        "--tile-size",
        "64",
        "--margin",
        "48",
        "--no-tissue-mask",
        "--threads",
        "1",
    ]
    _cli(argv)
    summary = read_json(tmp_path / "o" / "wsi.json")
    assert summary["settings"]["tile"] == 96 and summary["settings"]["margin"] == 48  # stride 48
    assert summary["n_predicted_now"] == summary["n_tiles"] == 4
    geo = json.loads((tmp_path / "o" / "toy.geojson").read_text())
    assert len(geo["features"]) == summary["n_nuclei"] == stitch_instance_map(tmp_path / "o").max()
    _cli(argv)  # resume: nothing left to predict
    assert read_json(tmp_path / "o" / "wsi.json")["n_predicted_now"] == 0
    _cli(argv[:-2] + ["--roi", "20,10,100,80", "--level", "1", "--out", str(tmp_path / "roi")])
    assert read_json(tmp_path / "roi" / "wsi.json")["settings"]["region"] == [10, 5, 50, 40]


def test_cli_slide_errors(tmp_path, run_dir):
    with pytest.raises(DataError, match="slide not found"):
        _cli(
            [
                "segment",
                "predict",
                "--model",
                str(run_dir),
                "--slide",
                str(tmp_path / "x.svs"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
    path = write_pyramid(tmp_path / "s.tif", disc_slide(), levels=1)
    with pytest.raises(DataError, match="outside the slide"):
        _cli(
            [
                "segment",
                "predict",
                "--model",
                str(run_dir),
                "--slide",
                str(path),
                "--roi",
                "500,0,10,10",
                "--out",
                str(tmp_path / "o"),
            ]
        )
    with pytest.raises(SystemExit):
        _cli(
            [
                "segment",
                "predict",
                "--model",
                str(run_dir),
                "--slide",
                str(path),
                "--roi",
                "1,2,3",
                "--out",
                str(tmp_path / "o"),
            ]
        )
