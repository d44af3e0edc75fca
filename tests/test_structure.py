import numpy as np
import pytest
import torch
from monai.transforms import ComputeHoVerMaps
from scipy import ndimage as ndi

from nudiff.metrics import instance_metrics
from nudiff.structure import DecodeParams, decode, dihedral, dihedral_image, encode, relabel


def hovernet_reference(ann: np.ndarray) -> np.ndarray:
    """A literal port of HoVer-Net's gen_instance_hv_map (targets.py), without mirror padding."""
    from skimage import morphology

    crop_ann = morphology.remove_small_objects(ann.copy(), max_size=29)
    x_map = np.zeros(ann.shape[:2], dtype=np.float32)
    y_map = np.zeros(ann.shape[:2], dtype=np.float32)
    for inst_id in [i for i in np.unique(crop_ann) if i != 0]:
        inst_map = np.array(ann == inst_id, np.uint8)
        rows, cols = np.any(inst_map, 1), np.any(inst_map, 0)
        rmin, rmax = np.where(rows)[0][[0, -1]]
        cmin, cmax = np.where(cols)[0][[0, -1]]
        box = [rmin - 2, rmax + 1 + 2, cmin - 2, cmax + 1 + 2]
        box[0] = max(box[0], 0)
        box[2] = max(box[2], 0)
        inst_map = inst_map[box[0] : box[1], box[2] : box[3]]
        if inst_map.shape[0] < 2 or inst_map.shape[1] < 2:
            continue
        com = [int(c + 0.5) for c in ndi.center_of_mass(inst_map)]
        x_range = np.arange(1, inst_map.shape[1] + 1) - com[1]
        y_range = np.arange(1, inst_map.shape[0] + 1) - com[0]
        inst_x, inst_y = np.meshgrid(x_range, y_range)
        inst_x = inst_x.astype("float32")
        inst_y = inst_y.astype("float32")
        inst_x[inst_map == 0] = 0
        inst_y[inst_map == 0] = 0
        for a in (inst_x, inst_y):
            if np.min(a) < 0:
                a[a < 0] /= -np.amin(a[a < 0])
            if np.max(a) > 0:
                a[a > 0] /= np.amax(a[a > 0])
        xs = x_map[box[0] : box[1], box[2] : box[3]]
        xs[inst_map > 0] = inst_x[inst_map > 0]
        ys = y_map[box[0] : box[1], box[2] : box[3]]
        ys[inst_map > 0] = inst_y[inst_map > 0]
    return np.stack([x_map, y_map])


def random_instance_map(seed: int, shape=(96, 96), n=25, occlude=True) -> np.ndarray:
    """Random ellipses; with ``occlude=False`` they may touch but barely overlap (like nuclei)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inst = np.zeros(shape, np.int32)
    for i in range(1, n + 1):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        ry, rx = rng.uniform(3, 10, size=2)
        disc = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        if not occlude:
            if (inst[disc] > 0).mean() > 0.1:
                continue
            disc &= inst == 0
        inst[disc] = i
    return relabel(inst)


@pytest.mark.parametrize("seed", range(3))
def test_encode_matches_hovernet_reference(seed):
    inst = random_instance_map(seed)
    s = encode(inst)
    assert s.shape == (3,) + inst.shape and s.dtype == np.float32
    np.testing.assert_array_equal(s[0], (inst > 0).astype(np.float32))
    np.testing.assert_allclose(s[1:], hovernet_reference(inst), atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_exact_convention_matches_monai_compute_hover_maps(seed):
    inst = random_instance_map(seed)
    ours = encode(inst, convention="exact")
    monai = np.asarray(ComputeHoVerMaps()(torch.from_numpy(inst[None])))
    np.testing.assert_allclose(ours[1:], monai, atol=1e-5)


def test_ranges_and_small_nuclei(toy_instance_map):
    inst = toy_instance_map.copy()
    inst[2:5, 2:5] = 9  # 9 px nucleus: semantic 1, h = v = 0 (HoVer-Net's < 30 px rule)
    s = encode(inst)
    assert s[1:].min() >= -1 and s[1:].max() <= 1
    assert s[0][3, 3] == 1 and s[1][3, 3] == 0 and s[2][3, 3] == 0
    # each large nucleus spans the full [-1, 1] range on both axes
    for i in (1, 2, 3):
        assert s[1][inst == i].min() == -1 and s[1][inst == i].max() == 1


@pytest.mark.parametrize("k,flip", [(k, f) for k in range(4) for f in (False, True)])
def test_dihedral_is_equivariant(k, flip):
    inst = random_instance_map(7)
    expected = encode(dihedral_image(inst, k, flip, channel_axis=None), convention="exact")
    got = dihedral(encode(inst, convention="exact"), k, flip)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_dihedral_image_layouts():
    img = np.arange(2 * 3 * 4 * 3).reshape(3, 4, 6)
    a = dihedral_image(img, 1, True, channel_axis=-1)
    b = dihedral_image(np.moveaxis(img, -1, 0), 1, True, channel_axis=0)
    np.testing.assert_array_equal(np.moveaxis(a, -1, 0), b)


def test_decode_separates_touching_nuclei(toy_instance_map):
    pred = decode(encode(toy_instance_map))
    m = instance_metrics(toy_instance_map, pred)
    assert pred.max() == 3
    assert m["pq"] > 0.95 and m["aji"] > 0.95


@pytest.mark.parametrize("seed", range(3))
def test_roundtrip_random_maps_clean_and_noisy(seed):
    inst = random_instance_map(seed, n=40, occlude=False)
    s = encode(inst)
    rng = np.random.default_rng(seed)
    for x in (s, s + rng.normal(0, 0.05, s.shape).astype(np.float32)):
        m = instance_metrics(inst, decode(x))
        assert m["aji"] > 0.85 and m["pq"] > 0.85, m


def test_decode_semantic_in_minus_one_one(toy_instance_map):
    s = encode(toy_instance_map)
    s[0] = s[0] * 2 - 1
    pred = decode(s, DecodeParams(fg_threshold=0.0))
    assert instance_metrics(toy_instance_map, pred)["pq"] > 0.95


def test_decode_empty_and_bad_shape():
    assert decode(np.zeros((3, 16, 16), np.float32)).max() == 0
    with pytest.raises(ValueError):
        decode(np.zeros((16, 16)))
    with pytest.raises(ValueError):
        encode(np.zeros((2, 3, 4), np.int32))


def test_relabel_is_contiguous():
    x = np.array([[0, 5, 5], [9, 0, 2]])
    r = relabel(x)
    assert set(np.unique(r)) == {0, 1, 2, 3}
    assert (r > 0).sum() == (x > 0).sum()


def test_hovernet_method_decodes_clean_maps(toy_instance_map):
    pred = decode(encode(toy_instance_map), DecodeParams(method="hovernet"))
    m = instance_metrics(toy_instance_map, pred)
    assert pred.dtype == np.int32 and pred.max() == 3
    assert m["pq"] > 0.9, m
    with pytest.raises(ValueError, match="decode method"):
        DecodeParams(method="otsu")


def test_semantic_sigma_smooths_a_ragged_outline_and_keeps_a_clean_one():
    from skimage.measure import regionprops

    from nudiff.structure import DecodeParams, decode, encode

    yy, xx = np.mgrid[:40, :40]
    disc = (((yy - 20) ** 2 + (xx - 20) ** 2) <= 64).astype(np.int32)
    s = encode(disc, convention="exact")
    clean = decode(s, DecodeParams(semantic_sigma=1.5))
    assert clean.max() == 1 and abs(int((clean > 0).sum()) - int(disc.sum())) <= 0.1 * disc.sum()
    ragged = s.copy()
    rim = np.abs(np.hypot(yy - 20, xx - 20) - 8) < 1.5
    ragged[0][rim] = np.random.default_rng(0).random(rim.sum()) > 0.5  # pixel noise on the outline
    plain = decode(ragged, DecodeParams(min_marker=2))
    smooth = decode(ragged, DecodeParams(min_marker=2, semantic_sigma=1.5))
    solidity = {
        k: max(r.solidity for r in regionprops(m))
        for k, m in (("plain", plain), ("smooth", smooth))
    }
    assert solidity["smooth"] > solidity["plain"]
