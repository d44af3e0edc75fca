import numpy as np
import pytest
import scipy.io
import tifffile
from PIL import Image

from nudiff.data.io import (
    read_image,
    read_instance_map,
    read_type_map,
    write_image,
    write_instance_map,
)
from nudiff.utils import DataError


def test_instance_map_16bit_png_round_trip(tmp_path):
    inst = np.zeros((20, 30), np.int32)
    inst[2:5, 3:9] = 65535
    inst[10:12, 1:4] = 7
    path = write_instance_map(tmp_path / "a.png", inst)
    assert path == tmp_path / "a.png"
    assert Image.open(path).mode.startswith("I;16")
    out = read_instance_map(path)
    assert out.dtype == np.int32 and np.array_equal(out, inst)


def test_instance_map_above_65535_falls_back_to_32bit_tiff(tmp_path):
    inst = np.zeros((8, 8), np.int64)
    inst[1:3, 1:3] = 70000
    inst[5:7, 5:7] = 2**31 - 1
    path = write_instance_map(tmp_path / "big.png", inst)
    assert path == tmp_path / "big.tif" and not (tmp_path / "big.png").exists()
    assert tifffile.imread(path).dtype == np.uint32
    assert np.array_equal(read_instance_map(path), inst)


@pytest.mark.parametrize("suffix", [".tif", ".npy"])
def test_instance_map_other_formats_round_trip(tmp_path, suffix, toy_instance_map):
    path = write_instance_map(tmp_path / f"m{suffix}", toy_instance_map)
    assert np.array_equal(read_instance_map(path), toy_instance_map)


def test_mat_inst_map_and_type_map(tmp_path, toy_instance_map):
    path = tmp_path / "x.mat"
    types = (toy_instance_map > 0).astype(np.int32) * 2
    scipy.io.savemat(path, {"inst_map": toy_instance_map.astype(np.float64), "type_map": types})
    assert np.array_equal(read_instance_map(path), toy_instance_map)
    assert np.array_equal(read_type_map(path), types)
    scipy.io.savemat(tmp_path / "y.mat", {"inst_map": toy_instance_map})
    assert read_type_map(tmp_path / "y.mat") is None
    assert read_type_map(tmp_path / "z.png") is None


def test_image_round_trip_and_rgba(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (12, 9, 3), dtype=np.uint8)
    for suffix in (".png", ".tif"):
        path = write_image(tmp_path / f"i{suffix}", rgb)
        out = read_image(path)
        assert out.dtype == np.uint8 and np.array_equal(out, rgb)
    rgba = np.concatenate([rgb, np.full((12, 9, 1), 7, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgb)
    Image.fromarray(rgb).save(tmp_path / "i.jpg", quality=95)
    assert read_image(tmp_path / "i.jpg").shape == (12, 9, 3)


def _png_bytes(arr) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _make_bad(tmp_path, case):
    """Write one broken file; return (path, reader)."""
    rgb = np.full((10, 10, 3), 100, np.uint8)
    if case == "empty":
        (path := tmp_path / "empty.png").write_bytes(b"")
        return path, read_image
    if case == "truncated":
        noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        data = _png_bytes(noise)
        (path := tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
        return path, read_image
    if case == "garbage":
        (path := tmp_path / "garbage.tif").write_bytes(b"this is not a tiff" * 10)
        return path, read_image
    if case == "grayscale":
        Image.fromarray(rgb[..., 0]).save(path := tmp_path / "gray.png")
        return path, read_image
    if case == "missing":
        return tmp_path / "nope.png", read_image
    if case == "bad_suffix":
        (path := tmp_path / "img.bmpx").write_bytes(b"x")
        return path, read_image
    if case == "rgb_label":
        Image.fromarray(rgb).save(path := tmp_path / "rgblabel.png")
        return path, read_instance_map
    if case == "float_label":
        tifffile.imwrite(path := tmp_path / "float.tif", np.full((4, 4), 1.5, np.float32))
        return path, read_instance_map
    if case == "negative_label":
        np.save(path := tmp_path / "neg.npy", -np.ones((4, 4), np.int32))
        return path, read_instance_map
    if case == "pickled_npy":
        np.save(
            path := tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True
        )
        return path, read_instance_map
    if case == "truncated_npy":
        np.save(path := tmp_path / "cut.npy", np.ones((50, 50), np.int32))
        path.write_bytes(path.read_bytes()[:200])
        return path, read_instance_map
    if case == "mat_no_key":
        scipy.io.savemat(path := tmp_path / "nokey.mat", {"other": np.ones((3, 3))})
        return path, read_instance_map
    if case == "corrupt_mat":
        (path := tmp_path / "bad.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 20)
        return path, read_instance_map
    if case == "empty_label":
        (path := tmp_path / "empty_label.tif").write_bytes(b"")
        return path, read_instance_map
    raise AssertionError(case)


BAD_CASES = [
    "empty", "truncated", "garbage", "grayscale", "missing", "bad_suffix", "rgb_label",
    "float_label", "negative_label", "pickled_npy", "truncated_npy", "mat_no_key",
    "corrupt_mat", "empty_label",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_raises_one_line_data_error_naming_file(tmp_path, case):
    path, reader = _make_bad(tmp_path, case)
    with pytest.raises(DataError) as info:
        reader(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message


def test_float_label_with_whole_numbers_is_accepted(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.array([[0, 1], [2, 2]], np.float32))
    assert read_instance_map(tmp_path / "f.tif").tolist() == [[0, 1], [2, 2]]


def test_writers_reject_bad_arrays(tmp_path):
    with pytest.raises(ValueError):
        write_image(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        write_instance_map(tmp_path / "a.png", np.full((4, 4), -1))
    with pytest.raises(ValueError):
        write_instance_map(tmp_path / "a.png", np.zeros((4, 4), np.float32))


def test_palette_label_png_gives_indices(tmp_path):
    idx = np.array([[0, 1], [2, 2]], np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    im.save(tmp_path / "p.png")
    assert read_instance_map(tmp_path / "p.png").tolist() == idx.tolist()
