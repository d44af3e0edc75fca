import numpy as np
import pytest

from nudiff.data.stain import fit_stain_normalizer, normalize_folder, normalize_stain
from nudiff.utils import NudiffError


def _he(seed: int, tint=(0, 0, 0)) -> np.ndarray:
    """Pink background with purple blobs, optionally tinted."""
    rng = np.random.default_rng(seed)
    image = np.empty((64, 64, 3), np.float64)
    image[:] = (230, 170, 200)
    yy, xx = np.mgrid[:64, :64]
    for cy, cx in rng.integers(8, 56, (6, 2)):
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < 30] = (110, 60, 150)
    image += rng.normal(0, 6, image.shape) + np.array(tint)
    return np.clip(image, 0, 255).astype(np.uint8)


def test_reinhard_pulls_a_colour_cast_back():
    reference = [_he(s) for s in range(4)]
    cast = _he(9, tint=(-40, 30, -10))  # greenish
    norm = normalize_stain(cast, fit_stain_normalizer(reference, "reinhard"))
    ref_mean = np.mean([r.reshape(-1, 3).mean(0) for r in reference], 0)
    before = np.abs(cast.reshape(-1, 3).mean(0) - ref_mean).sum()
    after = np.abs(norm.reshape(-1, 3).mean(0) - ref_mean).sum()
    assert norm.dtype == np.uint8 and norm.shape == cast.shape and after < 0.5 * before


def test_macenko_runs_and_leaves_an_unestimable_image_alone():
    normalizer = fit_stain_normalizer([_he(s) for s in range(4)], "macenko")
    norm = normalize_stain(_he(9, tint=(-40, 30, -10)), normalizer)
    assert norm.dtype == np.uint8 and norm.shape == (64, 64, 3)
    blank = np.full((64, 64, 3), 250, np.uint8)  # no tissue: no stain vectors to estimate
    assert normalize_stain(blank, normalizer) is blank


def test_none_and_bad_method():
    image = _he(0)
    assert normalize_stain(image, fit_stain_normalizer([image], "none")) is image
    with pytest.raises(NudiffError, match="choose from"):
        fit_stain_normalizer([image], "vahadane")


def test_normalize_folder_keeps_labels(tmp_path):
    from nudiff.data.dataset import load_folder
    from nudiff.data.io import write_image, write_instance_map

    labels = {}
    for s in range(3):
        write_image(tmp_path / "syn" / "images" / f"s{s}.png", _he(s, tint=(-30, 20, 0)))
        labels[f"s{s}"] = (np.arange(64 * 64).reshape(64, 64) % 7).astype(np.int32)
        write_instance_map(tmp_path / "syn" / "labels" / f"s{s}.png", labels[f"s{s}"])
    m = normalize_folder(tmp_path / "syn", [_he(10), _he(11)], tmp_path / "out", "reinhard")
    assert m["n"] == 3 and m["stain_method"] == "reinhard"
    for s in load_folder(tmp_path / "out", progress=False):
        assert np.array_equal(s.instance_map, labels[s.name])


def test_reinhard_each_keeps_the_spread_of_real_colours():
    """Global Reinhard gives every image the same Lab statistics; reinhard-each gives each the
    statistics of one real image (picked by content: deterministic, order-free)."""
    from skimage.color import rgb2lab

    reference = [_he(s, tint=t) for s, t in enumerate([(-30, 0, 0), (0, 0, 0), (25, -10, 20)])]
    ref_means = np.array([rgb2lab(r).reshape(-1, 3).mean(0) for r in reference])
    synthetic = [_he(20 + s, tint=(-40, 30, -10)) for s in range(12)]
    each = fit_stain_normalizer(reference, "reinhard-each")
    glob = fit_stain_normalizer(reference, "reinhard")
    out_each = [normalize_stain(im, each) for im in synthetic]
    out_glob = [normalize_stain(im, glob) for im in synthetic]
    for im, out in zip(synthetic, out_each):
        lab = rgb2lab(out).reshape(-1, 3).mean(0)
        assert np.abs(lab - ref_means[each.pick(im)]).max() < 2.0  # took its reference's colour
    assert len({each.pick(im) for im in synthetic}) == 3
    spread = lambda outs: np.std([rgb2lab(o).reshape(-1, 3).mean(0)[1] for o in outs])  # noqa: E731
    assert spread(out_each) > 3 * spread(out_glob)
    assert all((normalize_stain(im, each) == o).all() for im, o in zip(synthetic, out_each))
